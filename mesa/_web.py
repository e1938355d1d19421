"""``mesa web``: a browser editor on live changes (docs/web.md).

One Starlette app serves a page (file tree, CodeMirror editor, history) and its API for
the repos given on the command line. Invariants:

- **One application mount per change and credential**, shared by every browser that
  presents that credential: the log is folded once, not once per viewer. On loopback
  (the default bind) the server uses its own key; on any other bind every request must
  present a token (``Authorization: Bearer``, the ``mesa_token`` cookie, or ``?token=``
  once, which sets the cookie), and the server mounts *with that token*: the NATS
  server enforces what it grants, so a token for repo A cannot open repo B here either.
- **Events come from the log**: each mount's ``fs.subscribe`` handler appends
  ``file-change`` events to a numbered ring (`EventRing`) and wakes SSE streams
  (``GET /api/events``). A stream that reconnects with ``Last-Event-ID`` gets every
  event after it; if the ring no longer holds them it gets a ``snapshot`` event (reload
  everything), so nothing is lost either way.
- **Co-editing**: ``/yjs/<path>`` is a Yjs room (pycrdt-websocket) per open text file
  and credential, kept in step with the file by `mesa._web_rooms.FileRoom`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jwt
from pycrdt.websocket import WebsocketServer, YRoom
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from mesa._client import Mesa
from mesa._fs import MesaFileSystem
from mesa._types import RepoConfig, WatchEvent
from mesa._web_rooms import FileRoom
from mesa.errors import AuthenticationError, AuthorizationError, MesaError

log = logging.getLogger("mesa.web")

#: Events a mount keeps for reconnecting streams (older ones: the stream gets a snapshot).
EVENT_RING_SIZE = 10_000
#: A file larger than this opens read-only, without a Yjs room.
EDIT_MAX_BYTES = 2 * 1024 * 1024
TOKEN_COOKIE = "mesa_token"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only."""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


#: Where a ring entry other than a ``file-change`` keeps its SSE event name.
EVENT_KEY = "_event"


@dataclass
class EventRing:
    """The numbered ``file-change`` events of one mount, newest last, and their waiters."""

    size: int = EVENT_RING_SIZE
    events: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    last_id: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    #: Names this ring in SSE ids (``<epoch>-<n>``): an id from another ring (the server
    #: restarted, the mount was remade) is a gap, not a position in this one.
    epoch: str = field(default_factory=lambda: secrets.token_hex(4))

    def sse_id(self, event_id: int) -> str:
        return f"{self.epoch}-{event_id}"

    def parse_sse_id(self, raw: str) -> int | None:
        """The position an SSE id names in this ring, or None when it is not of this ring."""
        epoch, _, number = raw.rpartition("-")
        if epoch != self.epoch or not number.isdigit() or int(number) > self.last_id:
            return None
        return int(number)

    async def add(self, data: dict[str, Any], *, event: str = "file-change") -> None:
        """Number and keep one event (``event``: its SSE event name)."""
        self.last_id += 1
        self.events.append(
            (self.last_id, data if event == "file-change" else {**data, EVENT_KEY: event})
        )
        while len(self.events) > self.size:
            self.events.popleft()
        async with self.changed:
            self.changed.notify_all()

    def after(self, event_id: int) -> list[tuple[int, dict[str, Any]]] | None:
        """The events after ``event_id``, or None when some of them were dropped."""
        oldest = self.events[0][0] if self.events else self.last_id + 1
        if event_id + 1 < oldest and event_id < self.last_id:
            return None
        return [(i, d) for i, d in self.events if i > event_id]


class RepoView:
    """One application mount of one repo's change, its events and its co-editing rooms."""

    def __init__(
        self, repo: str, fs: MesaFileSystem, stack: AsyncExitStack, *, events_kept: int
    ) -> None:
        self.repo = repo
        self.fs = fs
        self.stack = stack
        self.ring = EventRing(events_kept)
        self.rooms: dict[str, FileRoom] = {}
        self._subscription = fs.subscribe(self._on_event)

    async def _on_event(self, event: WatchEvent) -> None:
        await self.ring.add({"path": event.path, "recursive": event.recursive})
        prefix = event.path.rstrip("/") + "/"
        for path, room in self.rooms.items():
            if path == event.path or (event.recursive and path.startswith(prefix)):
                room.file_changed()

    async def save_status(self, path: str, status: str, reason: str) -> None:
        """A room's report on saving ``path`` (`FileRoom`): a ``save`` event for the page."""
        await self.ring.add({"path": path, "status": status, "reason": reason}, event="save")

    async def read_versioned(self, path: str) -> tuple[bytes | None, int]:
        """A file's bytes (None when gone) and the sequence they are the state of."""
        try:
            return await self.fs._read_versioned(path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None, 0

    async def write_derived(self, path: str, data: bytes, seen: int) -> None:
        """Write bytes derived from the file as it was at sequence ``seen``."""
        await self.fs._write_derived(path, data, seen=seen)

    async def aclose(self) -> None:
        for room in list(self.rooms.values()):
            await room.aclose()
        await self._subscription.unsubscribe()
        await self.stack.aclose()


class Session:
    """A credential's client and its mounts (None: the server's own key, loopback only)."""

    def __init__(self, app: WebApp, token: str | None) -> None:
        self.app = app
        self.client = Mesa(org=app.org, api_key=token)
        self.views: dict[str, RepoView] = {}
        self.refused: dict[str, str] = {}
        self._lock = asyncio.Lock()

    async def view(self, repo: str) -> RepoView | None:
        """The mount of ``repo`` (mounted on first use), or None when the credential is refused."""
        async with self._lock:
            if repo in self.views:
                return self.views[repo]
            if repo in self.refused:
                return None
            config = self.app.configs[repo]
            stack = AsyncExitStack()
            try:
                fs = await stack.enter_async_context(self.client.fs.mount(repos=[config]))
            except (AuthorizationError, AuthenticationError) as exc:
                await stack.aclose()
                self.refused[repo] = str(exc)
                return None
            except BaseException:
                await stack.aclose()
                raise
            self.views[repo] = RepoView(repo, fs, stack, events_kept=self.app.events_kept)
            return self.views[repo]

    async def aclose(self) -> None:
        for view in self.views.values():
            await view.aclose()
        await self.client.transport.aclose()


class _Channel:
    """A Starlette websocket as the channel pycrdt-websocket serves."""

    def __init__(self, websocket: WebSocket, path: str) -> None:
        self._ws = websocket
        self._path = path

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> _Channel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except WebSocketDisconnect:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self._ws.send_bytes(message)

    async def recv(self) -> bytes:
        return await self._ws.receive_bytes()


class _Rooms(WebsocketServer):
    """pycrdt-websocket's server whose rooms are `FileRoom` documents (kept while served)."""

    def __init__(self) -> None:
        super().__init__(auto_clean_rooms=False, log=log)
        self.pending: dict[str, FileRoom] = {}

    async def get_room(self, name: str) -> YRoom:
        if name not in self.rooms:
            file_room = self.pending.pop(name)
            self.rooms[name] = YRoom(ydoc=file_room.doc, log=log)
        room = self.rooms[name]
        await self.start_room(room)
        return room


class WebApp:
    """The state behind one ``mesa web`` server (see module docstring)."""

    def __init__(
        self,
        org: str,
        configs: list[RepoConfig],
        *,
        require_token: bool,
        events_kept: int = EVENT_RING_SIZE,
    ) -> None:
        self.org = org
        self.configs = {c.name: c for c in configs}
        self.require_token = require_token
        self.events_kept = events_kept
        self.sessions: dict[str, Session] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.rooms = _Rooms()
        self.started_at_ms = int(time.time() * 1000)

    def session_for(self, conn: HTTPConnection) -> Session | None:
        """The caller's session, or None when it must present a token and did not.

        An expired token has no session: its mount (which could still answer reads
        from what it had folded) is closed, and the caller gets 401 like one without.
        """
        token = _token_of(conn)
        if not self.require_token:
            token = None
        elif not token:
            return None
        key = "" if token is None else hashlib.sha256(token.encode()).hexdigest()
        if token is not None and _expired(token):
            stale = self.sessions.pop(key, None)
            if stale is not None:
                self._closing.add(asyncio.create_task(stale.aclose()))
            return None
        if key not in self.sessions:
            self.sessions[key] = Session(self, token)
        return self.sessions[key]

    async def aclose(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)
        for session in list(self.sessions.values()):
            await session.aclose()
        self.sessions.clear()


class LoopbackHostOnly:
    """Refuse requests whose ``Host`` is not a loopback name (on a loopback bind).

    Against DNS rebinding: a site whose name a resolver points at 127.0.0.1 would
    otherwise be this page's own origin to the browser, and no token guards loopback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = Headers(scope=scope).get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]") not in LOOPBACK_HOSTS and not name.startswith("127."):
                response = PlainTextResponse("this server answers loopback names only", 421)
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 4421})
                    return
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def same_origin(conn: HTTPConnection) -> bool:
    """Whether a browser's request comes from this server's own page.

    Websockets are not subject to CORS, and on loopback no token guards the server: any
    web page the user visits could otherwise open a room (or write) on 127.0.0.1. A
    request without ``Origin`` is not a browser's cross-site one (curl, the SDK).
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    host = conn.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _expires_at(conn: HTTPConnection) -> float | None:
    """When the caller's token expires (seconds since the epoch), or None: no expiry.

    Only a server that requires tokens counts it (on loopback the server's own key
    serves every caller, whatever it sends).
    """
    app: WebApp = conn.app.state.web
    token = _token_of(conn)
    if not app.require_token or not token:
        return None
    return _token_exp(token)


def _until(expires: float | None) -> float | None:
    """Seconds left before ``expires`` (None: no limit), at least 0."""
    return None if expires is None else max(0.0, expires - time.time())


def _token_exp(token: str) -> float | None:
    """A token's ``exp`` in seconds since the epoch, or None when it has none.

    An API key, which is no JWT, does not expire by time. Read without verifying: the
    NATS server verified the token when its mount connected; this only stops serving it
    from the mount's folded state once it is over.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    return float(exp) if isinstance(exp, int | float) else None


def _expired(token: str) -> bool:
    """Whether a token's ``exp`` has passed."""
    exp = _token_exp(token)
    return exp is not None and exp <= time.time()


def _token_of(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return conn.query_params.get("token") or conn.cookies.get(TOKEN_COOKIE) or None


def _unauthorized() -> Response:
    return JSONResponse(
        {"error": "this server is not on loopback: present a token (?token=, cookie or Bearer)"},
        status_code=401,
    )


async def _view_of(request: Request, repo: str) -> RepoView | Response:
    app: WebApp = request.app.state.web
    session = app.session_for(request)
    if session is None:
        return _unauthorized()
    if repo not in app.configs:
        return JSONResponse({"error": f"repo {repo!r} is not served here"}, status_code=404)
    view = await session.view(repo)
    if view is None:
        return JSONResponse(
            {"error": f"this credential cannot open {app.org}/{repo}"}, status_code=403
        )
    return view


def _repo_of_path(app: WebApp, path: str) -> str:
    parts = path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == app.org else ""


async def _path_view(request: Request) -> tuple[str, RepoView] | Response:
    path = request.query_params.get("path", "")
    app: WebApp = request.app.state.web
    view = await _view_of(request, _repo_of_path(app, path))
    if isinstance(view, Response):
        return view
    return path, view


def _is_text(data: bytes) -> bool:
    if b"\x00" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def index(request: Request) -> Response:
    """The page; ``?token=`` is moved into a cookie (and out of the address bar)."""
    token = request.query_params.get("token")
    if token:
        response: Response = RedirectResponse(request.url.remove_query_params("token"), 303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response
    html = resources.files("mesa").joinpath("_web_static/index.html").read_text()
    return Response(html, media_type="text/html")


async def static_js(request: Request) -> Response:
    """The bundled browser code (built by web/build.sh, shipped in the wheel)."""
    data = resources.files("mesa").joinpath("_web_static/app.js").read_bytes()
    return Response(data, media_type="text/javascript")


async def api_repos(request: Request) -> Response:
    """The served repos this credential can open, with the change each mount works on."""
    app: WebApp = request.app.state.web
    session = app.session_for(request)
    if session is None:
        return _unauthorized()
    repos = []
    for name in app.configs:
        view = await session.view(name)
        if view is None:
            continue
        change = await view.fs.changes.current(name)
        repos.append({"name": name, "root": f"/{app.org}/{name}", "change_id": change.change_id})
    return JSONResponse({"org": app.org, "repos": repos})


async def api_tree(request: Request) -> Response:
    """Every entry under the repo's root, depth first, sorted by path."""
    repo = request.query_params.get("repo", "")
    view = await _view_of(request, repo)
    if isinstance(view, Response):
        return view
    app: WebApp = request.app.state.web
    root = f"/{app.org}/{repo}"
    entries: list[dict[str, Any]] = []

    async def walk(directory: str) -> None:
        try:
            names = sorted(await view.fs.readdir(directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        for name in names:
            path = f"{directory}/{name}"
            try:
                st = await view.fs.lstat(path)
            except FileNotFoundError:
                continue
            kind = "dir" if st.is_directory else "symlink" if st.is_symbolic_link else "file"
            entries.append({"path": path, "type": kind, "size": st.size})
            if kind == "dir":
                await walk(path)

    await walk(root)
    return JSONResponse({"root": root, "entries": entries})


async def api_file(request: Request) -> Response:
    """GET: a file as JSON (text or binary, conflicted or not); PUT: write the body."""
    found = await _path_view(request)
    if isinstance(found, Response):
        return found
    path, view = found
    try:
        if request.method == "PUT":
            if not same_origin(request):
                return JSONResponse({"error": "cross-origin write refused"}, status_code=403)
            await view.fs.write(path, await request.body())
            return JSONResponse({"path": path, "written": True})
        data = await view.fs.read(path)
    except FileNotFoundError:
        return JSONResponse({"error": f"no such file: {path}"}, status_code=404)
    except IsADirectoryError:
        return JSONResponse({"error": f"a directory: {path}"}, status_code=400)
    except OSError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    text = data.decode("utf-8") if _is_text(data) else None
    return JSONResponse(
        {
            "path": path,
            "size": len(data),
            "binary": text is None,
            "text": text,
            "conflict": text is not None and "\n<<<<<<< conflict " in "\n" + text,
            "editable": text is not None and len(data) <= EDIT_MAX_BYTES,
        }
    )


async def api_events(request: Request) -> Response:
    """Server-Sent Events: ``connected``, then ``file-change`` (or ``snapshot`` on a gap)."""
    view = await _view_of(request, request.query_params.get("repo", ""))
    if isinstance(view, Response):
        return view
    raw_last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    ring = view.ring
    # No id: start from now. An id of this ring: replay after it. Any other id (the
    # server restarted, the ring was remade): a gap, so a snapshot first.
    last = ring.last_id if not raw_last else ring.parse_sse_id(raw_last)
    expires = _expires_at(request)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        nonlocal last
        hello = {"repo": view.repo, "last_event_id": ring.sse_id(ring.last_id)}
        # With an id, a browser that reconnects before any file-change still says where
        # it was (EventSource resends the last id it saw): nothing in between is lost.
        where = None if last is None else ring.sse_id(last)
        yield ServerSentEvent(json.dumps(hello), event="connected", id=where)
        while True:
            pending = None if last is None else ring.after(last)
            if pending is None:
                last = ring.last_id
                gap = json.dumps({"last_event_id": ring.sse_id(last)})
                yield ServerSentEvent(gap, event="snapshot", id=ring.sse_id(last))
                continue
            for event_id, data in pending:
                last = event_id
                payload = {k: v for k, v in data.items() if k != EVENT_KEY}
                yield ServerSentEvent(
                    json.dumps(payload),
                    event=data.get(EVENT_KEY, "file-change"),
                    id=ring.sse_id(event_id),
                )
            async with ring.changed:
                if ring.last_id == last:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ring.changed.wait(), _until(expires))
            if expires is not None and time.time() >= expires:
                # The token ran out: the stream ends here, and reconnecting gets 401.
                yield ServerSentEvent(json.dumps({"reason": "token expired"}), event="expired")
                return

    return EventSourceResponse(stream(), ping=15)


async def api_history(request: Request) -> Response:
    """The entries of the mounted change that touched ``path`` (oldest first)."""
    found = await _path_view(request)
    if isinstance(found, Response):
        return found
    path, view = found
    entries = await view.fs.changes.history(path)
    return JSONResponse(
        {
            "path": path,
            "entries": [
                {"seq": e.seq, "time_ms": e.time_ms, "author": e.author, "op": e.op}
                for e in entries
            ],
        }
    )


async def _text_at(view: RepoView, path: str, at: int | None) -> str:
    """The file's text once the change had folded sequence ``at`` (None: now; "" if absent)."""
    try:
        data = await view.fs.read(path) if at is None else await view.fs.read(path, at=at)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return ""
    return data.decode("utf-8", "replace")


async def api_diff(request: Request) -> Response:
    """A unified diff of ``path`` from sequence ``a`` to ``b``.

    ``a`` defaults to 0, the change's base (its parent's tree); ``b`` to now. A version
    is the file as the change stood once it had folded that sequence.
    """
    found = await _path_view(request)
    if isinstance(found, Response):
        return found
    path, view = found
    try:
        a = int(request.query_params.get("a", "0"))
        b = int(request.query_params["b"]) if "b" in request.query_params else None
    except ValueError:
        return JSONResponse({"error": "a and b are sequence numbers"}, status_code=400)
    if a < 0 or (b is not None and b < 0):
        return JSONResponse({"error": "a and b are sequence numbers"}, status_code=400)
    old = await _text_at(view, path, a)
    new = await _text_at(view, path, b)
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        f"{path}@{a}",
        f"{path}@{b if b is not None else 'now'}",
    )
    return PlainTextResponse("".join(lines))


async def api_change_diff(request: Request) -> Response:
    """The mounted change's diff against its parent (a unified patch)."""
    repo = request.query_params.get("repo", "")
    view = await _view_of(request, repo)
    if isinstance(view, Response):
        return view
    app: WebApp = request.app.state.web
    session = app.session_for(request)
    assert session is not None
    change = await view.fs.changes.current(repo)
    diff = await session.client.diffs.get(repo, head_change_id=change.change_id)
    return PlainTextResponse(diff.patch)


async def yjs_room(websocket: WebSocket) -> None:
    """The Yjs room of one text file (created on first open, kept while the server runs)."""
    app: WebApp = websocket.app.state.web
    if not same_origin(websocket):
        await websocket.close(code=4403)
        return
    session = app.session_for(websocket)
    expires = _expires_at(websocket)
    path = "/" + websocket.path_params["path"]
    view = await session.view(_repo_of_path(app, path)) if session is not None else None
    if view is None:
        await websocket.close(code=4403)
        return
    room = view.rooms.get(path)
    name = f"{id(session)}:{path}"
    if room is None:
        try:
            data, seen = await view.fs._read_versioned(path)
        except OSError:
            await websocket.close(code=4404)
            return
        if path not in view.rooms:  # another browser may have opened it meanwhile
            if not _is_text(data) or len(data) > EDIT_MAX_BYTES:
                await websocket.close(code=4415)
                return
            room = FileRoom(
                path,
                data.decode(),
                seen,
                view.read_versioned,
                view.write_derived,
                view.save_status,
            )
            room.start()
            view.rooms[path] = room
            app.rooms.pending[name] = room
    await websocket.accept()
    try:
        await asyncio.wait_for(app.rooms.serve(_Channel(websocket, name)), _until(expires))
    except TimeoutError:
        # The token ran out: the browser's copy of the text stays; nothing more is
        # taken from it (4401 tells the page to ask for a new token).
        with contextlib.suppress(RuntimeError):
            await websocket.close(code=4401)


async def _mesa_error(request: Request, exc: Exception) -> Response:
    """An SDK error as JSON: 401 for a credential refused (an expired token), else 503."""
    status = 401 if isinstance(exc, AuthenticationError | AuthorizationError) else 503
    return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=status)


def create_app(
    org: str,
    configs: list[RepoConfig],
    *,
    require_token: bool,
    events_kept: int = EVENT_RING_SIZE,
) -> Starlette:
    """The Starlette app of ``mesa web`` (see module docstring)."""
    web = WebApp(org, configs, require_token=require_token, events_kept=events_kept)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with web.rooms:
            try:
                yield
            finally:
                await web.aclose()

    routes = [
        Route("/", index),
        Route("/static/app.js", static_js),
        Route("/api/repos", api_repos),
        Route("/api/tree", api_tree),
        Route("/api/file", api_file, methods=["GET", "PUT"]),
        Route("/api/events", api_events),
        Route("/api/history", api_history),
        Route("/api/diff", api_diff),
        Route("/api/change-diff", api_change_diff),
        WebSocketRoute("/yjs/{path:path}", yjs_room),
    ]
    middleware = [] if require_token else [Middleware(LoopbackHostOnly)]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={MesaError: _mesa_error},
    )
    app.state.web = web
    return app


async def serve(
    org: str,
    configs: list[RepoConfig],
    *,
    host: str,
    port: int,
    events_kept: int = EVENT_RING_SIZE,
) -> int:
    """Run ``mesa web`` until interrupted (uvicorn); return the exit code."""
    import uvicorn

    app = create_app(org, configs, require_token=not is_loopback(host), events_kept=events_kept)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    mode = "loopback, the server's own key" if is_loopback(host) else "tokens required"
    task = asyncio.create_task(server.serve())
    # uvicorn has no started event to await; it sets a flag.
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if server.started:
        bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
        print(f"mesa web: serving http://{shown}:{bound}/ ({mode})", flush=True)  # noqa: T201
    await task
    return 0
