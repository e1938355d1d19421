"""Co-editing rooms of ``mesa web``: one Y document per open text file, kept in step with the file.

A `FileRoom` holds the room's Y document (``doc``, shared with every browser through
pycrdt-websocket) and a **shadow** replica of it that stands for what the file holds.
Both start from one update (the file's text inserted once), so they share history:

- Pushing (debounced, after browsers edit): pull first (an event may lag the fold), take
  the document's text and the update that brings the shadow up to it in one step (no
  await between), write the text through the application mount (an ordinary mesafs
  write the agent sees) with ``seen`` = the sequence of the file version last pulled,
  then apply that update to the shadow. The shadow's text is then exactly the text
  written, and a write that landed after the pull races ours (a jj conflict keeps both
  sides) rather than being replaced by text that never contained it.
- Pulling (after a ``file-change`` event for the path): read the file; if it equals the
  shadow's text it is our own write coming back (or no change) and nothing happens.
  Otherwise apply the text diff from the shadow's text to the new bytes *to the shadow*
  (whose text the diff was computed against, so it is exact), then merge the shadow's
  new items into the document. The CRDT merge keeps what browsers typed meanwhile, and
  the agent's edit; when the merged text differs from the file it is pushed back.

One task per room does both, so pushes and pulls never interleave. Invariant: after every
step, ``str(shadow text)`` is the text of some version of the file this room read or wrote.
A file in conflict reads as its jj block; that block is pulled like any text, and is only
written back once somebody edits it (which resolves the conflict).

Nothing typed is dropped silently. A write or read that fails because the server is
unreachable is retried after a pause, for as long as it takes, and the room reports
``retrying`` with the reason; any other failure (the token expired, the repo is
read-only, ...) cannot succeed by retrying: the room reports ``failed`` with the reason,
keeps the browsers' text, and tries again only at the next edit or file event. Once a
write succeeds after either, it reports ``saved``. `RepoView` turns the reports into
``save`` events on the page's event stream, which shows them beside the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
from collections.abc import Awaitable, Callable

from pycrdt import Doc, Text, TransactionEvent

from mesa.errors import MesaConnectionError

log = logging.getLogger("mesa.web")

#: How long a room waits after the last browser edit before writing the file.
PUSH_DEBOUNCE_S = 0.15
#: How long a room waits before retrying a failed read or write of its file.
RETRY_PAUSE_S = 1.0
#: The name of the document's text (the browser binds ``ydoc.getText(TEXT_NAME)``).
TEXT_NAME = "text"

#: Read a file: its bytes (None when it is gone) and the sequence they are the state of.
ReadFile = Callable[[str], Awaitable[tuple[bytes | None, int]]]
#: Write a file's bytes derived from its state at a sequence (``seen``).
WriteFile = Callable[[str, bytes, int], Awaitable[None]]
#: Report how saving a file goes: (path, "saved" | "retrying" | "failed", reason).
SaveStatus = Callable[[str, str, str], Awaitable[None]]


#: Past this many characters of differing middle, diff by lines (character diffs are quadratic).
CHAR_DIFF_MAX = 20_000


def _edits(old: str, new: str) -> list[tuple[int, int, str]]:
    """(start, end, replacement) character edits turning ``old`` into ``new``, in order."""
    prefix = 0
    limit = min(len(old), len(new))
    while prefix < limit and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    a, b = old[prefix : len(old) - suffix], new[prefix : len(new) - suffix]
    if len(a) + len(b) <= CHAR_DIFF_MAX:
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        return [
            (prefix + i1, prefix + i2, b[j1:j2])
            for tag, i1, i2, j1, j2 in matcher.get_opcodes()
            if tag != "equal"
        ]
    a_lines, b_lines = a.splitlines(keepends=True), b.splitlines(keepends=True)
    a_at = [0]
    for line in a_lines:
        a_at.append(a_at[-1] + len(line))
    matcher = difflib.SequenceMatcher(None, a_lines, b_lines, autojunk=False)
    return [
        (prefix + a_at[i1], prefix + a_at[i2], "".join(b_lines[j1:j2]))
        for tag, i1, i2, j1, j2 in matcher.get_opcodes()
        if tag != "equal"
    ]


def apply_text_diff(text: Text, old: str, new: str) -> None:
    """Edit ``text`` (whose value is ``old``) into ``new`` with few, small edits.

    pycrdt indexes text by UTF-8 byte offsets, so character positions are converted;
    edits go from the end backwards, so an offset before them still holds.
    """
    for start, end, replacement in reversed(_edits(old, new)):
        at = len(old[:start].encode())
        if end > start:
            del text[at : at + len(old[start:end].encode())]
        if replacement:
            text.insert(at, replacement)


class FileRoom:
    """The Y document of one file and the task that keeps it and the file in step."""

    def __init__(
        self,
        path: str,
        content: str,
        seen: int,
        read: ReadFile,
        write: WriteFile,
        on_status: SaveStatus | None = None,
    ) -> None:
        self.path = path
        self._on_status = on_status
        #: The last failure reported ("retrying" or "failed") and not followed by a save.
        self.failure: tuple[str, str] | None = None
        self._seen = seen
        self._read = read
        self._write = write
        self.shadow: Doc[Text] = Doc()
        self.shadow[TEXT_NAME] = Text(content)
        self.doc: Doc[Text] = Doc()
        self.doc.apply_update(self.shadow.get_update())
        self._wake = asyncio.Event()
        self._dirty = False
        self._edited_at = 0.0
        self._pulling = False
        self._external = False
        self._closing = False
        self._subscription = self.doc.observe(self._on_doc_change)
        self._task: asyncio.Task[None] | None = None

    @property
    def text(self) -> str:
        """The document's current text."""
        return str(self.doc.get(TEXT_NAME, type=Text))

    @property
    def file_text(self) -> str:
        """The text of the file as this room last read or wrote it."""
        return str(self.shadow.get(TEXT_NAME, type=Text))

    def start(self) -> None:
        """Start the room's task (on the running loop)."""
        self._task = asyncio.create_task(self._run(), name=f"room {self.path}")

    def _on_doc_change(self, _event: TransactionEvent) -> None:
        if self._pulling:
            return  # the file's own change, merged by `_pull` (which decides on a push)
        self._dirty = True
        self._edited_at = asyncio.get_running_loop().time()
        self._wake.set()

    def file_changed(self) -> None:
        """Note that the file may have changed in the log (a ``file-change`` event)."""
        self._external = True
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            # While an edit waits out its debounce, an event still pulls at once.
            if self._dirty:
                remaining = self._edited_at + PUSH_DEBOUNCE_S - loop.time()
                if remaining > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), remaining)
            else:
                await self._wake.wait()
            self._wake.clear()
            try:
                if self._external:
                    self._external = False
                    await self._pull()
                due = self._edited_at + PUSH_DEBOUNCE_S <= loop.time()
                if self._dirty and due and not self._closing:
                    self._dirty = False
                    await self._push()
            except asyncio.CancelledError:
                raise
            except MesaConnectionError as exc:
                # The server is away: browsers keep their text; retried after a pause.
                log.warning("room %s: saving waits for the server: %s", self.path, exc)
                self._dirty = True
                self._edited_at = loop.time() + RETRY_PAUSE_S
                await self._report("retrying", f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                # Retrying cannot help (token expired, read-only, ...): say so, keep the
                # text, and try again at the next edit or event only.
                log.warning("room %s: saving failed: %s", self.path, exc)
                self._dirty = False
                await self._report("failed", f"{type(exc).__name__}: {exc}")
            else:
                if self.failure is not None and self.text == self.file_text:
                    await self._report("saved", "")  # everything typed is in the file

    async def _report(self, status: str, reason: str) -> None:
        """Report a change of status (a retry failing the same way again is no news)."""
        failure = None if status == "saved" else (status, reason)
        if failure is not None and failure == self.failure:
            return
        self.failure = failure
        if self._on_status is not None:
            try:
                await self._on_status(self.path, status, reason)
            except Exception:
                log.exception("room %s: reporting %r failed", self.path, status)

    async def _pull(self) -> None:
        """Merge the file's current bytes into the document (a no-op when unchanged)."""
        data, seq = await self._read(self.path)
        if data is None:
            return  # removed: keep the text (a later edit writes it back)
        self._seen = seq
        new = data.decode("utf-8", "replace")
        old = self.file_text
        if new == old:
            return
        shadow_text = self.shadow.get(TEXT_NAME, type=Text)
        before = self.doc.get_state()
        with self.shadow.transaction():
            apply_text_diff(shadow_text, old, new)
        self._pulling = True
        try:
            self.doc.apply_update(self.shadow.get_update(before))
        finally:
            self._pulling = False
        if self.text != self.file_text and not self._dirty:
            # Browsers typed meanwhile: the merged text goes back to the file.
            self._dirty = True
            self._edited_at = asyncio.get_running_loop().time()

    async def _push(self) -> None:
        """Write the document's text, derived from the file as last pulled."""
        # What folded since the last pull goes in first: an event may still be on its way.
        await self._pull()
        text = self.text
        if text == self.file_text:
            return
        catch_up = self.doc.get_update(self.shadow.get_state())
        # ``seen``: a write that lands after our pull races this one (a conflict keeps
        # both) instead of being replaced by text that never contained it.
        await self._write(self.path, text.encode(), self._seen)
        self.shadow.apply_update(catch_up)
        # Anything that folded around our write is merged by the next pull.
        self._external = True
        self._wake.set()

    async def aclose(self) -> None:
        """Write what browsers typed and is not written yet, then stop."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self._push()
        except Exception as exc:
            # The server is shutting the room down: nobody is left to tell but its log.
            log.error("room %s: text typed in the browser was not saved: %s", self.path, exc)
        self.doc.unobserve(self._subscription)
