// The page of `mesa web` (docs/web.md): a file tree, a CodeMirror 6 editor co-edited
// through Yjs (one room per open text file, served by the backend with pycrdt), and a
// history panel. The tree and read-only views refresh from the SSE stream
// (/api/events); an editable file's text arrives through its Yjs room, where the
// backend merges writes from other mounts as text diffs.
import { basicSetup } from "codemirror";
import { EditorState, RangeSetBuilder } from "@codemirror/state";
import { Decoration, EditorView, ViewPlugin } from "@codemirror/view";
import * as Y from "yjs";
import { yCollab } from "y-codemirror.next";
import { WebsocketProvider } from "y-websocket";

const $ = (id) => document.getElementById(id);
const state = { repo: null, root: null, path: null, view: null, provider: null, doc: null };

async function api(url, options) {
  const response = await fetch(url, options);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${await response.text()}`);
  return response;
}

// Lines of a jj conflict block: the markers and the side they open.
const MARKER = /^(<{7,}|>{7,}|\+{7,}|-{7,}|%{7,}|\\{7,})( |$)/;
const markerLine = Decoration.line({ class: "mesa-conflict-marker" });
const conflictMarkers = ViewPlugin.fromClass(
  class {
    constructor(view) {
      this.decorations = this.build(view);
    }
    update(update) {
      if (update.docChanged || update.viewportChanged) this.decorations = this.build(update.view);
    }
    build(view) {
      const builder = new RangeSetBuilder();
      for (const { from, to } of view.visibleRanges) {
        for (let pos = from; pos <= to; ) {
          const line = view.state.doc.lineAt(pos);
          if (MARKER.test(line.text)) builder.add(line.from, line.from, markerLine);
          pos = line.to + 1;
        }
      }
      return builder.finish();
    }
  },
  { decorations: (v) => v.decorations },
);

function closeEditor() {
  if (state.view) state.view.destroy();
  if (state.provider) state.provider.destroy();
  if (state.doc) state.doc.destroy();
  state.view = state.provider = state.doc = null;
  $("editor").replaceChildren();
}

function showStatus(file) {
  const status = $("status");
  status.dataset.conflict = file.conflict ? "true" : "false";
  if (file.binary) status.textContent = `binary file, ${file.size} bytes (read-only)`;
  else if (!file.editable) status.textContent = `${file.size} bytes: too large to co-edit (read-only)`;
  else if (file.conflict) status.textContent = "conflict: both sides are kept below; edit to resolve";
  else status.textContent = "live: edits are saved as you type";
}

function readOnlyView(text) {
  state.view = new EditorView({
    parent: $("editor"),
    state: EditorState.create({
      doc: text,
      extensions: [basicSetup, conflictMarkers, EditorState.readOnly.of(true)],
    }),
  });
}

async function openFile(path) {
  closeEditor();
  state.path = path;
  $("path").textContent = path;
  for (const el of document.querySelectorAll("#tree li")) {
    el.classList.toggle("open", el.dataset.path === path);
  }
  const file = await (await api(`/api/file?path=${encodeURIComponent(path)}`)).json();
  if (state.path !== path) return;
  showStatus(file);
  if (file.binary) {
    $("editor").innerHTML = `<p class="binary">binary file, ${file.size} bytes</p>`;
  } else if (!file.editable) {
    readOnlyView(file.text);
  } else {
    const doc = new Y.Doc();
    const text = doc.getText("text");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const room = path.slice(1).split("/").map(encodeURIComponent).join("/");
    const provider = new WebsocketProvider(`${scheme}://${location.host}/yjs`, room, doc);
    state.doc = doc;
    state.provider = provider;
    provider.on("status", ({ status }) => {
      $("editor").dataset.status = status;
      // The server's room is gone (it restarted): start over from the file, with a
      // fresh document, rather than merging old items into a new history.
      if (status === "disconnected" && state.provider === provider) reopenLater(path, provider);
    });
    provider.on("sync", (synced) => {
      $("editor").dataset.synced = synced ? "true" : "false";
    });
    state.view = new EditorView({
      parent: $("editor"),
      state: EditorState.create({
        doc: text.toString(),
        extensions: [basicSetup, conflictMarkers, yCollab(text, provider.awareness)],
      }),
    });
  }
  loadHistory(path).catch(() => {});
}

// Reopen the file a second from now, and again until the server answers.
function reopenLater(path, provider) {
  setTimeout(() => {
    if (state.path !== path || state.provider !== provider) return;
    openFile(path).catch(() => {
      state.provider = provider; // still ours to retry
      reopenLater(path, provider);
    });
  }, 1000);
}

async function refreshStatus(path) {
  const file = await (await api(`/api/file?path=${encodeURIComponent(path)}`)).json();
  if (state.path !== path) return;
  showStatus(file);
  if (!file.editable && !file.binary && state.view) {
    state.view.dispatch({
      changes: { from: 0, to: state.view.state.doc.length, insert: file.text },
    });
  }
}

async function loadTree() {
  const tree = await (await api(`/api/tree?repo=${encodeURIComponent(state.repo)}`)).json();
  const list = $("tree");
  list.replaceChildren();
  for (const entry of tree.entries) {
    const li = document.createElement("li");
    const rel = entry.path.slice(tree.root.length + 1);
    li.textContent = rel.split("/").pop() + (entry.type === "dir" ? "/" : "");
    li.style.paddingLeft = `${(rel.split("/").length - 1) * 14 + 6}px`;
    li.dataset.path = entry.path;
    li.dataset.type = entry.type;
    li.classList.toggle("open", entry.path === state.path);
    if (entry.type === "file") li.onclick = () => openFile(entry.path);
    list.appendChild(li);
  }
}

let treeTimer = null;
function refreshTreeSoon() {
  clearTimeout(treeTimer);
  treeTimer = setTimeout(() => loadTree().catch(() => {}), 50);
}

function listen() {
  const events = new EventSource(`/api/events?repo=${encodeURIComponent(state.repo)}`);
  events.addEventListener("connected", () => ($("live").textContent = "● live"));
  events.addEventListener("file-change", (message) => {
    const { path, recursive } = JSON.parse(message.data);
    refreshTreeSoon();
    const open = state.path;
    if (open && (open === path || (recursive && open.startsWith(path.replace(/\/?$/, "/"))))) {
      refreshStatus(open).catch(() => {});
      loadHistory(open).catch(() => {});
    }
  });
  events.addEventListener("snapshot", () => {
    refreshTreeSoon();
    if (state.path) refreshStatus(state.path).catch(() => {});
  });
  events.onerror = () => ($("live").textContent = "○ reconnecting");
}

async function loadHistory(path) {
  const history = await (await api(`/api/history?path=${encodeURIComponent(path)}`)).json();
  if (state.path !== path) return;
  const list = $("history");
  list.replaceChildren();
  for (const entry of history.entries.slice().reverse()) {
    const li = document.createElement("li");
    const when = new Date(entry.time_ms).toLocaleTimeString();
    li.innerHTML = `<label><input type="checkbox" value="${entry.seq}"> #${entry.seq} ${entry.op}</label> <small>${when} ${entry.author.slice(0, 8)}</small>`;
    list.appendChild(li);
  }
}

// Two picked versions: the diff between them; one: what that entry did; none: the
// file's diff against the change's base (sequence 0).
async function showDiff() {
  const picked = [...document.querySelectorAll("#history input:checked")].map((i) => Number(i.value));
  picked.sort((a, b) => a - b);
  let range = "a=0";
  if (picked.length >= 2) range = `a=${picked[0]}&b=${picked[picked.length - 1]}`;
  else if (picked.length === 1) range = `a=${picked[0] - 1}&b=${picked[0]}`;
  const url = `/api/diff?path=${encodeURIComponent(state.path)}&${range}`;
  $("diff").textContent = (await (await api(url)).text()) || "(no difference)";
}

async function showChangeDiff() {
  const url = `/api/change-diff?repo=${encodeURIComponent(state.repo)}`;
  $("diff").textContent = (await (await api(url)).text()) || "(the change is empty)";
}

async function main() {
  const info = await (await api("/api/repos")).json();
  const select = $("repo");
  for (const repo of info.repos) {
    const option = document.createElement("option");
    option.value = repo.name;
    option.textContent = `${info.org}/${repo.name} @ ${repo.change_id.slice(0, 12)}`;
    select.appendChild(option);
  }
  if (!info.repos.length) {
    $("status").textContent = "this token opens none of the repos served here";
    return;
  }
  const start = (name) => {
    state.repo = name;
    state.root = `/${info.org}/${name}`;
    closeEditor();
    loadTree();
  };
  select.onchange = () => start(select.value);
  $("diff-button").onclick = () => state.path && showDiff();
  $("change-diff-button").onclick = () => showChangeDiff();
  start(info.repos[0].name);
  listen();
  const wanted = new URLSearchParams(location.search).get("open");
  if (wanted) openFile(wanted);
}

window.mesaWeb = { openFile, state };
main().catch((error) => ($("status").textContent = String(error)));
