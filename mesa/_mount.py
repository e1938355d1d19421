"""`RepoMount`: one repo of a mount, its change's replica, pump, writes and switches.

A `RepoMount` pumps one change's log from the transport into its engine
`Replica` and wakes whoever waits for a sequence to be folded. A write is
published only after the replica accepted it, returns only once the entry is
durable in the transport and folded locally (read-your-writes), and is retried
with the same op id when the transport fails, so the log holds it at most once.
Events are dispatched after the fold that produced them, so a handler always sees
the new state.

The decisions around the replica are `engine.driver`'s, shared with the simulator:
a server that stays unreachable is `MesaConnectionError` once `RetryPolicy` gives up
(bounded attempts and time), every attempt under the entry's op id as message id; an
entry the server's ``max_payload`` cannot carry never reaches it: its inline bytes
move to the blob store and the same op id goes again, and what is still too large
(names, symlink targets) is ``OSError(ENAMETOOLONG)``; `SnapshotCadence` decides
when this mount stores a snapshot; a switch carries the op counter over. Failures
arrive as the SDK's public errors (`mesa._gateway`); a write the token grants
read-only is ``OSError(EROFS)``.

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
from collections.abc import AsyncIterator, Callable, Sequence

from engine import driver
from engine.codec import encode_entry
from engine.content import Content
from engine.errors import FsError
from engine.fold import ChangeState
from engine.ids import ROOT_CHANGE_ID
from engine.ops import Entry, Mv, Op, Write
from engine.paths import RelPath
from engine.replica import CorruptEntryError, Folded, Replica
from engine.tree import FileNode
from mesa import _changes, _snapshots
from mesa._blobs import BlobCache
from mesa._bookmarks import BookmarkFollower
from mesa._context import Context
from mesa._errormap import fs_error, os_error, write_refused
from mesa._gateway import GatewaySubscription
from mesa._records import RepoRecord
from mesa._store import RepoStore
from mesa._types import DiskCacheConfig
from mesa.errors import (
    AuthenticationError,
    FoldError,
    MesaConnectionError,
    MesaError,
    PayloadTooLargeError,
)
from transports.auth import Claims
from transports.base import Appended, LogId

log = logging.getLogger("mesa")

#: How many paths `RepoMount` remembers its last write of (for renames over a file).
WRITTEN_PATHS_KEPT = 4096

FoldListener = Callable[["RepoMount", list[Folded]], None]
SwitchListener = Callable[["RepoMount"], None]


class RepoMount:
    """One repo of a mount: its change, replica, pump, waiters, and the bookmark it follows."""

    def __init__(
        self,
        ctx: Context,
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
        self.ctx = ctx
        self.org = ctx.org
        self.name = name
        self.change_id = change_id
        self.read_only = read_only
        self.log = LogId(ctx.org, name, change_id)
        self.token = token
        self.claims = claims
        self.mount_id = mount_id
        self.store = RepoStore(ctx, token, repo)
        self.window_ms = repo.race_window_ms
        self.replica = Replica(mount_id, ChangeState(window_ms=self.window_ms))
        #: The bookmark this mount follows (it switches when the bookmark moves), or None.
        self.bookmark = bookmark
        #: Counts the entries folded (snapshot + tail) and decides when to store a snapshot.
        self.cadence = driver.SnapshotCadence(ctx.snapshot_every)
        self._background: set[asyncio.Task[None]] = set()
        self.blobs = BlobCache(ctx.gateway, ctx.org, name, token, disk_cache)
        self._listener = listener
        self._fold_listeners: list[FoldListener] = []
        self._switch_listeners: list[SwitchListener] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = 0
        self._sub: GatewaySubscription | None = None
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
        #: path -> (sequence, seen) of the last Write this mount appended there: what a
        #: rename of that file over another carries as its seen (`engine.driver`).
        self._written: dict[RelPath, tuple[int, int]] = {}

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
        return await _changes.open_live(self.store, change_id, self.mount_id)

    def _install(self, opened: _changes.Live) -> None:
        """Make ``opened`` this mount's change and start pumping its log."""
        self.change_id = opened.change_id
        self.log = LogId(self.org, self.name, opened.change_id)
        self.replica = driver.carry_counter(self.replica, opened.replica)
        self._appended = 0
        self.cadence = driver.SnapshotCadence(self.ctx.snapshot_every, opened.entries)
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
        self._follower = BookmarkFollower(self.store, name, self._bookmark_moved)
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

    def check_open(self) -> None:
        """Raise if the mount is closed or its log is broken (not for an expired token)."""
        if self._closed:
            raise self._closed_error()
        if self.broken is not None:
            raise self.broken

    def check_alive(self) -> None:
        """Raise if the mount is closed, the token expired or the log is broken."""
        if self._closed:
            raise self._closed_error()
        if self.ctx.clock.now_ms() >= self.claims.exp * 1000:
            raise AuthenticationError("the mount's token expired (mounts do not refresh tokens)")
        if self.broken is not None:
            raise self.broken

    def _token_expired(self) -> bool:
        return self.ctx.clock.now_ms() >= self.claims.exp * 1000

    def _expire(self) -> None:
        """Stop at the token's expiry: waiters and every later call get the reason."""
        self.broken = AuthenticationError(
            f"the mount's token expired at {self.claims.exp} (mounts do not refresh "
            f"tokens); {self.prefix} stopped delivering entries and events"
        )
        log.warning("%s", self.broken)
        self._fail_waiters(self.broken)

    def caught_up(self) -> bool:
        """Whether every entry this mount appended to its change is folded.

        Until then the folded tree lags this mount's own writes: a value equal to the
        tree's is not a no-op, since an entry in flight may still change it.
        """
        return self._appended <= self.replica.seq

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
        last = await self.ctx.gateway.last_seq(self.token, self.log)
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
        self,
        ops: Sequence[Op],
        path: str,
        *,
        seen: int | None = None,
        checked: bool = True,
        unreachable: Callable[[MesaError], None] | None = None,
    ) -> int | None:
        """Issue and append ``ops`` in order; return once they are durable, not folded.

        Each op is appended once the one before it was acknowledged, so they land in
        the log in this order. With ``checked`` false the ops are not checked against
        the folded tree (see `engine.replica.Replica.issue`): the caller validated
        them against a view that includes ops it has not seen folded yet. Returns the
        last entry's sequence, or None when nothing was appended (every op a no-op).

        With ``unreachable``, the append never gives up on an unreachable server while
        the mount lives: each failed attempt calls ``unreachable(error)`` and the same
        entry goes again, under the same message id (`engine.driver`, a persistent
        writer); it stops only when the mount closes or breaks.
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
                op_seen = self._rename_seen(op, seen) if isinstance(op, Mv) else seen
                if isinstance(op, Write) and not op.terms:
                    # The terms are parsed against the view at ``view``: the entry says
                    # it saw that much (not what folds during the blob reads), so a
                    # write that lands meanwhile races it instead of being replaced.
                    view = self.replica.seq if op_seen is None else op_seen
                    written = await self._written_back(op, view)
                    if written.terms:
                        op, op_seen = written, view
                try:
                    entry = self.replica.issue(op, seen=op_seen, checked=checked)
                except FsError as exc:
                    raise fs_error(exc, _abs(self.prefix, exc.path)) from None
                if entry is not None:
                    last = (await self._append(entry, path, unreachable)).seq
                    self._appended = max(self._appended, last)
                    if isinstance(op, Write):
                        self._remember_write(op.path, last, entry.seen)
            return last
        finally:
            self._writers -= 1
            if not self._writers:
                self._drained.set()

    async def _written_back(self, op: Write, seen: int) -> Write:
        """Return ``op`` with the conflict's terms if it writes the conflict back (rule 6).

        The fold never reads blobs, so the mount parses the block against the conflict
        the writer saw (at ``seen``) and logs its terms (`engine.driver.writeback`);
        a new term too large to travel inline goes to the blob store first. The view is
        read before the first await.
        """
        node = self.replica.state.tree.lookup(op.path)
        if not isinstance(node, FileNode):
            return op
        value = node.value_at(seen)
        if value is None or value.is_resolved():
            return op
        blobs = self.blobs
        data = await blobs.content_bytes(op.content)
        if not driver.may_be_block(data):
            return op
        seen_bytes = [b"" if v is None else await blobs.content_bytes(v) for v in value.terms()]
        op = driver.writeback(op, value, seen_bytes, data)
        placed: list[Content] = []
        for term in op.terms:
            term_bytes = term.inline_bytes()
            if term_bytes is not None and not driver.goes_inline(len(term_bytes)):
                term = Content.from_segments([await blobs.put(term_bytes)])
            placed.append(term)
        return dataclasses.replace(op, terms=tuple(placed))

    def _remember_write(self, path: RelPath, seq: int, seen: int) -> None:
        self._written.pop(path, None)
        self._written[path] = (seq, seen)
        if len(self._written) > WRITTEN_PATHS_KEPT:
            del self._written[next(iter(self._written))]

    def _rename_seen(self, op: Mv, seen: int | None) -> int | None:
        """The seen of a rename: a rename over a file races what its bytes had not seen."""
        written = self._written.pop(op.src, None)
        tree = self.replica.state.tree
        if written is None or not isinstance(tree.lookup(op.dst), FileNode):
            return seen
        landed, bytes_seen = written
        node = tree.lookup(op.src)
        if not isinstance(node, FileNode) or not node.versions or node.versions[-1].seq != landed:
            return seen  # the file no longer holds the bytes this mount wrote
        return driver.rename_seen(self.replica.seq if seen is None else seen, bytes_seen)

    async def _append(
        self, entry: Entry, path: str, unreachable: Callable[[MesaError], None] | None = None
    ) -> Appended:
        """Append ``entry``, retrying as `engine.driver.RetryPolicy` says (module docstring)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        payload = encode_entry(entry)
        failed = 0
        while True:
            try:
                return await self.ctx.gateway.append(
                    self.token, self.log, payload, msg_id=driver.msg_id(entry)
                )
            except PayloadTooLargeError as exc:
                # Refused before anything was sent: the same op id may go again.
                inline = driver.inline_segments(entry)
                if not inline:
                    raise os_error(
                        errno.ENAMETOOLONG,
                        path,
                        f"names too long for one log entry ({exc})",
                    ) from exc
                refs = [await self.blobs.put(seg.data) for seg in inline]
                entry = driver.spilled(entry, refs)
                payload = encode_entry(entry)
            except MesaConnectionError as exc:
                # A retry with the same op id is applied once (transport dedupe,
                # and the fold skips an op id it has folded).
                failed += 1
                if unreachable is not None:
                    unreachable(exc)
                    await asyncio.sleep(driver.DEFAULT_RETRY.persistent_delay_ms(failed) / 1000)
                    self.check_open()
                    continue
                elapsed_ms = int((loop.time() - started) * 1000)
                delay_ms = driver.DEFAULT_RETRY.delay_ms(failed, elapsed_ms)
                if delay_ms is None:
                    raise
                await asyncio.sleep(delay_ms / 1000)
            except MesaError as exc:
                raise write_refused(exc, path) from exc

    async def _run_pump(self, sub: GatewaySubscription, change_id: str) -> None:
        """Fold the log's deliveries as they come and wake whoever waits for them.

        It never dies silently: an entry that does not decode or does not fold, a
        failing subscription, or any unexpected failure here breaks the mount
        (`_stop_at`), so every pending and later call raises instead of waiting.
        """
        try:
            async for delivery in sub:
                if self._token_expired():
                    # The token is what grants these entries: once it expired, nothing
                    # more is folded or announced, and every later call says why (the
                    # server also closes the connection once it enforces expiry).
                    self._expire()
                    return
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
        except MesaError as exc:
            self.broken = exc
            self._fail_waiters(self.broken)
        except Exception as exc:
            # A bug (in a listener, a snapshot, the subscription) must not end the pump
            # unnoticed: writes and waiters would wait for folds that never come.
            self._stop_at(change_id, exc)

    def _stop_at(self, change_id: str, exc: Exception) -> None:
        """Break the mount at ``exc``: every pending and later call raises the public error.

        An entry that does not decode is `LogCorruptError`; an entry whose fold raised
        is `FoldError` at its sequence (the replica's state is the one before it); any
        other failure of the pump is `FoldError` at the last sequence folded.
        """
        broken: MesaError
        if isinstance(exc, CorruptEntryError):
            broken = _changes.stopped_at(change_id, exc)
        else:
            reason = f"the mount's pump failed: {type(exc).__name__}: {exc}"
            broken = FoldError(change_id, self.replica.seq, reason)
            broken.__cause__ = exc
        self.broken = broken
        log.error("%s", broken)
        self._fail_waiters(broken)

    @property
    def entries(self) -> int:
        """Entries of this change's log folded so far (snapshot + tail)."""
        return self.cadence.entries

    def _maybe_snapshot(self, change_id: str, folded: list[Folded]) -> None:
        """Store a snapshot when `engine.driver.SnapshotCadence` says this mount should.

        Exactly one mount (the author of the crossing entry) writes each snapshot. The
        state is encoded here, before the next fold, and uploaded in the background.
        """
        if not self.cadence.observe(folded, self.mount_id, writable=not self.read_only):
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
                self.ctx.gateway,
                self.token,
                self.org,
                self.name,
                change_id,
                data=data,
                seq=seq,
                entries=entries,
                now_ms=self.ctx.clock.now_ms(),
            )
        except (MesaError, OSError) as exc:
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


def _abs(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if rel else prefix
