"""A mount: one token, one `RepoMount` per repo, and the `MesaFileSystem` over them.

A `RepoMount` pumps one change's log from the transport into its engine
`Replica` and wakes whoever waits for a sequence to be folded. A write is
published only after the replica accepted it, returns only once the entry is
durable in the transport and folded locally (read-your-writes), and is retried
with the same op id when the transport fails, so the log holds it at most once.
Events are dispatched after the fold that produced them, so a handler always sees
the new state.

Failures leave as the SDK's public errors, never as transport exceptions: a server
that stays unreachable is `MesaConnectionError` once the retries are spent (at most
`APPEND_ATTEMPTS` attempts, none started later than `APPEND_RETRY_S` after the
first), also for blob reads and writes. An entry the server's ``max_payload`` cannot
carry never reaches it: inline bytes move to the blob store (a server may allow less
than the inline threshold), and what is still too large (names, symlink targets) is
``OSError(ENAMETOOLONG)``.

A `RepoMount` can **switch** to another change (``fs.changes.new/edit/checkpoint``, or
the bookmark it follows moved): it folds the new change (newest snapshot or base, then
the tail) beside the current one, then swaps replica, log and subscription at once,
so a reader sees the old tree or the new one, never a mix, and subscribers get one
recursive event for the repo root. Writes are held while a switch (or any operation
under `RepoMount.exclusive`) runs; a write waiting then goes to the new change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import heapq
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from engine.codec import encode_entry
from engine.content import BlobRef, Content, Inline
from engine.errors import FsError
from engine.fold import ChangeState
from engine.ids import ROOT_CHANGE_ID
from engine.ops import Append, Entry, Op, Write
from engine.replica import CorruptEntryError, Folded, Replica
from mesa import _changes, _snapshots
from mesa._blobs import BlobCache
from mesa._bookmarks import BookmarkFollower
from mesa._records import (
    BookmarkRecord,
    ChangeRecord,
    RepoRecord,
    bookmark_key,
    change_key,
    repo_key,
)
from mesa._translate import api_error, fs_error, fs_transport_error, os_error
from mesa._types import DiskCacheConfig, RepoConfig
from mesa.errors import (
    AuthenticationError,
    InvalidOptionsError,
    LogCorruptError,
    MesaError,
    NotFoundError,
)
from transports.auth import READ_ONLY, READ_WRITE, Claims
from transports.base import (
    Appended,
    LogId,
    PayloadTooLargeError,
    Subscription,
    TransportError,
    UnavailableError,
)

if TYPE_CHECKING:
    from mesa._client import Mesa
    from mesa._fs import MesaFileSystem

log = logging.getLogger("mesa")

DEFAULT_TTL_S = 3600
MAX_TTL_S = 86_400
APPEND_ATTEMPTS = 5
APPEND_BACKOFF_S = 0.05
#: No append attempt starts later than this after the first (bounds a failing write).
APPEND_RETRY_S = 10.0

FoldListener = Callable[["RepoMount", list[Folded]], None]
SwitchListener = Callable[["RepoMount"], None]


class RepoMount:
    """One repo of a mount: its change, replica, pump, waiters, and the bookmark it follows."""

    def __init__(
        self,
        client: Mesa,
        name: str,
        change_id: str,
        *,
        token: str,
        claims: Claims,
        read_only: bool,
        mount_id: str,
        repo: RepoRecord,
        disk_cache: DiskCacheConfig | None,
        listener: FoldListener,
        bookmark: str | None = None,
    ) -> None:
        self.client = client
        self.org = client.org
        self.name = name
        self.change_id = change_id
        self.read_only = read_only
        self.log = LogId(client.org, name, change_id)
        self.token = token
        self.claims = claims
        self.mount_id = mount_id
        self.scope = _changes.Scope(client, token, repo)
        self.window_ms = repo.race_window_ms
        self.replica = Replica(mount_id, ChangeState(window_ms=self.window_ms))
        #: The bookmark this mount follows (it switches when the bookmark moves), or None.
        self.bookmark = bookmark
        #: Entries of this change's log folded so far (snapshot + tail).
        self.entries = 0
        self._background: set[asyncio.Task[None]] = set()
        self.blobs: BlobCache = _MountBlobs(client.transport, client.org, name, token, disk_cache)
        self._listener = listener
        self._fold_listeners: list[FoldListener] = []
        self._switch_listeners: list[SwitchListener] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = 0
        self._sub: Subscription | None = None
        self._pump: asyncio.Task[None] | None = None
        self._follower: BookmarkFollower | None = None
        self._closed = False
        self.broken: MesaError | None = None
        # Exclusivity: one structural operation at a time; writes wait while it runs.
        self._lock = asyncio.Lock()
        self._gate = asyncio.Event()
        self._gate.set()
        self._writers = 0
        self._drained = asyncio.Event()
        self._drained.set()
        #: The newest sequence this mount appended to its change (folded or not yet).
        self._appended = 0

    @property
    def prefix(self) -> str:
        """The absolute path of this repo's root: ``/<org>/<repo>``."""
        return f"/{self.org}/{self.name}"

    def add_fold_listener(self, listener: FoldListener) -> None:
        """Call ``listener`` after each fold, before the mount's own (events) listener."""
        self._fold_listeners.append(listener)

    def add_switch_listener(self, listener: SwitchListener) -> None:
        """Call ``listener`` after each switch to another change (the new tree is visible)."""
        self._switch_listeners.append(listener)

    async def start(self) -> None:
        """Fold the change's log as it is now, keep folding it live, follow the bookmark."""
        self._install(await self._open(self.change_id))
        if self.bookmark is not None:
            await self._follow(self.bookmark)

    async def _open(self, change_id: str) -> _changes.Live:
        """Fold ``change_id`` to the end of its log, subscribed (`mesa._changes.open_live`)."""
        return await _changes.open_live(self.scope, change_id, self.mount_id)

    def _install(self, opened: _changes.Live) -> None:
        """Make ``opened`` this mount's change and start pumping its log."""
        self.change_id = opened.change_id
        self.log = LogId(self.org, self.name, opened.change_id)
        # Op ids are message ids, deduplicated across the repo's stream: the counter of
        # this mount must keep growing across changes.
        opened.replica.counter = max(opened.replica.counter, self.replica.counter)
        self.replica = opened.replica
        self._appended = 0
        self.entries = opened.entries
        self.broken = None
        self._sub = opened.sub
        self._pump = asyncio.create_task(
            self._run_pump(opened.sub, opened.change_id), name=f"mesa-pump-{self.name}"
        )

    async def _stop_pump(self) -> None:
        if self._sub is not None:
            await self._sub.aclose()
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        self._sub = self._pump = None

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the repo still: one holder at a time, no write starts or is in flight."""
        async with self._lock:
            self._gate.clear()
            try:
                await self._drained.wait()
                # Writes appended without waiting for their fold are part of this change.
                if self._appended > self.replica.seq and self.broken is None:
                    await self.wait_folded(self._appended)
                yield
            finally:
                self._gate.set()

    async def switch(self, change_id: str, *, follow: str | None) -> bool:
        """Switch to ``change_id`` and follow ``follow`` (see `switch_locked`)."""
        async with self.exclusive():
            return await self.switch_locked(change_id, follow=follow)

    async def switch_locked(self, change_id: str, *, follow: str | None) -> bool:
        """Move to ``change_id`` (caller holds `exclusive`); return whether the change changed.

        The new change is folded first: if that fails, nothing changed. Then the mount
        follows ``follow`` (a bookmark name, or None to follow nothing).
        """
        if self._closed:
            raise self._closed_error()
        moved = change_id != self.change_id or self.broken is not None
        if moved:
            opened = await self._open(change_id)
            if self._closed:  # closed while the new change was folded
                await opened.sub.aclose()
                raise self._closed_error()
            await self._stop_pump()
            # Waiters of the old change wait for nothing any more.
            self._wake(2**63)
            self._install(opened)
        following = self._follower.name if self._follower is not None else None
        self.bookmark = follow
        if follow != following:
            await self._unfollow()
            if follow is not None:
                await self._follow(follow)
        if moved:
            for listener in list(self._switch_listeners):
                listener(self)
        return moved

    async def _follow(self, name: str) -> None:
        self._follower = BookmarkFollower(self.scope, name, self._bookmark_moved)
        await self._follower.start()

    async def _unfollow(self) -> None:
        follower, self._follower = self._follower, None
        if follower is not None:
            await follower.stop()

    async def _bookmark_moved(self, name: str, change_id: str | None) -> None:
        """The followed bookmark ``name`` now points at ``change_id`` (None: deleted)."""
        if self._closed or self.bookmark != name:
            return
        if change_id is None:
            log.warning(
                "bookmark %r of %s was deleted; the mount stays on its change", name, self.name
            )
            self.bookmark = None
            return
        if change_id in (self.change_id, ROOT_CHANGE_ID):
            return
        async with self.exclusive():
            if self.bookmark == name and not self._closed:
                await self.switch_locked(change_id, follow=name)

    async def close(self) -> None:
        """Stop the pump and the subscription; fail any waiter left, and any later one."""
        self._closed = True
        await self._unfollow()
        await self._stop_pump()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._fail_waiters(self._closed_error())

    def _closed_error(self) -> OSError:
        return os_error(errno.EBADF, self.prefix, "the mount is closed")

    def check_alive(self) -> None:
        """Raise if the mount is closed, the token expired or the log is broken."""
        if self._closed:
            raise self._closed_error()
        if self.client.clock.now_ms() >= self.claims.exp * 1000:
            raise AuthenticationError("the mount's token expired (mounts do not refresh tokens)")
        if self.broken is not None:
            raise self.broken

    async def wait_folded(self, seq: int) -> None:
        """Wait until the replica has folded ``seq``."""
        if self.replica.seq >= seq:
            return
        if self.broken is not None:
            raise self.broken
        if self._closed:
            # Nothing folds any more: waiting would never end.
            raise self._closed_error()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiter_ids += 1
        heapq.heappush(self._waiters, (seq, self._waiter_ids, future))
        await future

    async def wait_synced(self) -> None:
        """Wait until everything the log holds now is folded."""
        self.check_alive()
        try:
            last = await self.client.transport.last_seq(self.token, self.log)
        except TransportError as exc:
            raise api_error(exc) from exc
        await self.wait_folded(last)

    async def submit(self, op: Op, path: str, *, seen: int | None = None) -> int | None:
        """Check, publish and fold ``op``; return once it is durable and visible here.

        ``seen``: the sequence whose state the op was derived from, if earlier than
        the folded one (`engine.replica.Replica.issue`). Returns the entry's sequence,
        or None when the op changed nothing and was not published.
        """
        seq = await self.publish([op], path, seen=seen)
        if seq is not None:
            await self.wait_folded(seq)
        return seq

    async def publish(
        self, ops: Sequence[Op], path: str, *, seen: int | None = None, checked: bool = True
    ) -> int | None:
        """Issue and append ``ops`` in order; return once they are durable, not folded.

        Each op is appended once the one before it was acknowledged, so they land in
        the log in this order. With ``checked`` false the ops are not checked against
        the folded tree (see `engine.replica.Replica.issue`): the caller validated
        them against a view that includes ops it has not seen folded yet. Returns the
        last entry's sequence, or None when nothing was appended (every op a no-op).
        """
        self.check_alive()
        if self.read_only:
            raise os_error(errno.EROFS, path)
        while not self._gate.is_set():
            await self._gate.wait()
            self.check_alive()
        self._writers += 1
        self._drained.clear()
        try:
            last: int | None = None
            for op in ops:
                try:
                    entry = self.replica.issue(op, seen=seen, checked=checked)
                except FsError as exc:
                    raise fs_error(exc, _abs(self.prefix, exc.path)) from None
                if entry is not None:
                    last = (await self._append(entry, path)).seq
                    self._appended = max(self._appended, last)
            return last
        finally:
            self._writers -= 1
            if not self._writers:
                self._drained.set()

    async def _append(self, entry: Entry, path: str) -> Appended:
        """Append ``entry``, retrying while the transport is unavailable (module docstring)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + APPEND_RETRY_S
        payload = encode_entry(entry)
        attempt = 0
        while True:
            try:
                return await self.client.transport.append(
                    self.token, self.log, payload, msg_id=entry.op_id
                )
            except PayloadTooLargeError as exc:
                # Refused before anything was sent: the same op id may go again.
                smaller = await self._spill_inline(entry)
                if smaller is None:
                    raise os_error(
                        errno.ENAMETOOLONG,
                        path,
                        f"names too long for one log entry ({exc})",
                    ) from exc
                entry, payload = smaller, encode_entry(smaller)
            except UnavailableError as exc:
                # A retry with the same op id is applied once (transport dedupe,
                # and the fold skips an op id it has folded).
                attempt += 1
                if attempt >= APPEND_ATTEMPTS or loop.time() >= give_up_at:
                    raise api_error(exc) from exc
                await asyncio.sleep(APPEND_BACKOFF_S * 2 ** (attempt - 1))
            except TransportError as exc:
                raise fs_transport_error(exc, path) from exc

    async def _spill_inline(self, entry: Entry) -> Entry | None:
        """Return ``entry`` with its inline bytes moved to blobs, or None if it has none.

        The content keeps its identity (an inline segment and a blob of the same bytes
        have the same digest), so the fold and the tree hash are unchanged.
        """
        op = entry.op
        if not isinstance(op, Write | Append):
            return None
        if not any(isinstance(seg, Inline) for seg in op.content.segments):
            return None
        segments: list[Inline | BlobRef] = [
            await self.blobs.put(seg.data) if isinstance(seg, Inline) else seg
            for seg in op.content.segments
        ]
        content = Content.from_segments(segments)
        return dataclasses.replace(entry, op=dataclasses.replace(op, content=content))

    async def _run_pump(self, sub: Subscription, change_id: str) -> None:
        try:
            async for delivery in sub:
                try:
                    folded = self.replica.receive(
                        delivery.seq, delivery.prev_seq, delivery.time_ms, delivery.payload
                    )
                except CorruptEntryError as exc:
                    self._stop_at(change_id, exc)
                    return
                if folded:
                    self._wake(self.replica.seq)
                    self._maybe_snapshot(change_id, folded)
                    for listener in self._fold_listeners:
                        listener(self, folded)
                    self._listener(self, folded)
                if self.replica.broken is not None:
                    # The entries before the corrupt one were folded and announced.
                    self._stop_at(change_id, self.replica.broken)
                    return
        except TransportError as exc:
            self.broken = api_error(exc)
            self._fail_waiters(self.broken)

    def _stop_at(self, change_id: str, exc: CorruptEntryError) -> None:
        """Mark the log broken at the corrupt entry: every later call raises."""
        self.broken = LogCorruptError(change_id, exc.seq, str(exc))
        log.error("%s", self.broken)
        self._fail_waiters(self.broken)

    def _maybe_snapshot(self, change_id: str, folded: list[Folded]) -> None:
        """Store a snapshot when one of this mount's own entries crossed a multiple of N.

        Exactly one mount (the author of the crossing entry) writes each snapshot. The
        state is encoded here, before the next fold, and uploaded in the background.
        """
        every = self.client.snapshot_every
        crossed = False
        for f in folded:
            self.entries += 1
            if every and self.entries % every == 0 and f.entry.author == self.mount_id:
                crossed = True
        if not crossed or self.read_only:
            return
        data = _snapshots.encode(self.replica.state)
        task = asyncio.create_task(
            self._store_snapshot(change_id, data, self.replica.seq, self.entries),
            name="mesa-snapshot",
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _store_snapshot(self, change_id: str, data: bytes, seq: int, entries: int) -> None:
        try:
            await _snapshots.store(
                self.client.transport,
                self.token,
                self.org,
                self.name,
                change_id,
                data=data,
                seq=seq,
                entries=entries,
                now_ms=self.client.clock.now_ms(),
            )
        except (TransportError, OSError) as exc:
            log.warning("storing a snapshot of %s@%s failed: %s", self.name, change_id, exc)

    def _wake(self, seq: int) -> None:
        while self._waiters and self._waiters[0][0] <= seq:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)

    def _fail_waiters(self, exc: Exception) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_exception(exc)


class _MountBlobs(BlobCache):
    """The mount's blob cache: transport failures leave as the SDK's public errors."""

    async def put(self, data: bytes) -> BlobRef:
        """See `BlobCache.put`."""
        try:
            return await super().put(data)
        except TransportError as exc:
            raise api_error(exc) from exc

    async def get(self, ref: BlobRef) -> bytes:
        """See `BlobCache.get`."""
        try:
            return await super().get(ref)
        except TransportError as exc:
            raise api_error(exc) from exc


def _abs(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if rel else prefix


class Mount:
    """The async context manager ``mesa.fs.mount(...)`` returns."""

    def __init__(
        self,
        client: Mesa,
        repos: Sequence[str | RepoConfig],
        *,
        ttl: int | None,
        disk_cache: DiskCacheConfig | None,
        mode: str,
    ) -> None:
        self._client = client
        self._configs = _parse_repos(client.org, repos)
        if mode not in (READ_WRITE, READ_ONLY):
            raise InvalidOptionsError(f"mode must be 'rw' or 'ro', not {mode!r}")
        if mode == READ_ONLY:
            self._configs = [
                RepoConfig(c.name, c.bookmark, c.change_id, read_only=True) for c in self._configs
            ]
        ttl = DEFAULT_TTL_S if ttl is None else ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= MAX_TTL_S:
            raise InvalidOptionsError(f"ttl must be an int in 1..{MAX_TTL_S}, not {ttl!r}")
        if disk_cache is not None and not isinstance(disk_cache, DiskCacheConfig):
            raise InvalidOptionsError("disk_cache must be a DiskCacheConfig")
        self._ttl = ttl
        self._disk_cache = disk_cache
        self._fs: MesaFileSystem | None = None

    async def __aenter__(self) -> MesaFileSystem:
        from mesa._fs import MesaFileSystem

        client = self._client
        mount_id = "m" + secrets.token_hex(8)
        grants = {c.name: READ_ONLY if c.read_only else READ_WRITE for c in self._configs}
        token, claims = client.sign_token(grants, self._ttl, mount_id)
        fs = MesaFileSystem(client, mount_id)
        try:
            for config in self._configs:
                change_id, record, bookmark = await _resolve_change(client, token, config)
                repo = RepoMount(
                    client,
                    config.name,
                    change_id,
                    token=token,
                    claims=claims,
                    read_only=config.read_only,
                    repo=record,
                    mount_id=mount_id,
                    disk_cache=self._disk_cache,
                    listener=fs.on_folded,
                    bookmark=bookmark,
                )
                fs.add_repo(repo)
                await repo.start()
        except BaseException:
            await fs.aclose()
            raise
        self._fs = fs
        return fs

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fs is not None:
            await self._fs.aclose()
            self._fs = None


def _parse_repos(org: str, repos: Sequence[str | RepoConfig]) -> list[RepoConfig]:
    if isinstance(repos, str | bytes) or not isinstance(repos, Sequence) or not repos:
        raise InvalidOptionsError("repos must be a non-empty sequence of names or RepoConfig")
    configs: list[RepoConfig] = []
    for item in repos:
        if isinstance(item, str):
            name = item
            if "/" in item:
                prefix, _, name = item.partition("/")
                if prefix != org:
                    raise InvalidOptionsError(
                        f"repo {item!r} belongs to org {prefix!r}; cross-org mounts are rejected"
                    )
            config = RepoConfig(name)
        elif isinstance(item, RepoConfig):
            config = item
        else:
            raise InvalidOptionsError(f"a repo is a name or a RepoConfig, not {item!r}")
        if "/" in config.name:
            raise InvalidOptionsError(f"invalid repo name {config.name!r}")
        if any(c.name == config.name for c in configs):
            raise InvalidOptionsError(f"repo {config.name!r} is listed twice")
        configs.append(config)
    return configs


async def _resolve_change(
    client: Mesa, token: str, config: RepoConfig
) -> tuple[str, RepoRecord, str | None]:
    """Return the change a repo config names, the repo, and the bookmark to follow.

    A mount pinned to a bookmark (``RepoConfig(bookmark=...)``) follows it; a pinned
    change id, or the repo's default bookmark when none is named, follows nothing (the
    mount stays on the change it resolved, as the spec's realtime rooms do).
    """
    t = client.transport
    org, name = client.org, config.name
    try:
        repo_entry = await t.kv_get(token, repo_key(org, name))
        if repo_entry is None:
            raise NotFoundError(f"repo {org}/{name} not found")
        repo = RepoRecord.decode(repo_entry.value)
        if config.change_id is not None:
            change = await t.kv_get(token, change_key(org, name, config.change_id))
            if change is None:
                raise NotFoundError(f"change {config.change_id} not found in {org}/{name}")
            return ChangeRecord.decode(change.value).change_id, repo, None
        bookmark = config.bookmark or repo.default_bookmark
        entry = await t.kv_get(token, bookmark_key(org, name, bookmark))
    except TransportError as exc:
        raise api_error(exc) from exc
    if entry is None:
        raise NotFoundError(f"bookmark {bookmark!r} not found in {org}/{name}")
    return BookmarkRecord.decode(entry.value).change_id, repo, config.bookmark
