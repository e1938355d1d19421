"""Open files: bytes per inode, published as one Write when the file is closed.

Close-to-open consistency: an open reads the file's current value once (unless
``O_TRUNC``); reads and writes through the handle work on that buffer. A flush (every
``close``), fsync or release of a dirty buffer **captures** the bytes the file holds at
that moment and schedules the inode on the mount's log writer (`mesa.fuse._writer`),
which publishes the captured bytes as ONE ``Write`` (with the mode and times set
meanwhile), in order with the mount's other writes. A later write through a
descriptor still open (``cmd > file`` closes one descriptor of the file and goes on
writing through its duplicate) changes the buffer, not the capture: a version no
close saw never reaches the log; a later close while the capture is still queued
replaces it. The capture costs no copy until the buffer is written again (the copy
is taken then, once). A file created here and published before any close is
published empty (what the create returned). Until its entry is folded the buffer
stays *live*: this mount serves the file's size, bytes and modification time from it,
so a later open here sees them at once; another mount sees them once it folds the
entry. ``fsync`` waits for that.

The entry's ``seen`` is the sequence the buffer's bytes were read at (or last
published and kept at), so a write another author made while the file was open races
these bytes instead of being overwritten by them.

Every handle of one inode shares one `OpenFile` while it is live, as a local
filesystem's page cache would; a clean open of a file whose value changed since gets
a fresh buffer.

**One size per inode in the kernel.** The kernel keeps one page cache and one size
per inode, whichever handle filled them, and cuts every read at that size. Every
attribute reply records which version its size describes (`tell`). A read-only handle
keeps reading the version it opened while that size holds it whole; once the kernel
was given a smaller size of another version, the handle moves to that version at its
next read (`reading`): serving its older bytes would have the kernel cut them at the
new size, a version no close published (torture seed 1170238483). What this mount
shows instead of the tree (`shown`: a live buffer, or the shared buffer of a file open
for writing) is what the size describes; when it stops being shown and the tree holds
another value, the kernel's attributes and pages are dropped.

An unlinked file keeps working through its open handles: its bytes stay in the
buffer until the last handle is released; a write to a file this mount unlinked is
not published (as on a local filesystem). A file removed or moved by another writer
is published at its new path if it still exists, else at the path it was last seen
at when its directory still exists (a write racing a remove keeps its bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from engine import driver
from engine.content import Content
from engine.merge import Merge
from engine.ops import Append, Chmod, Mkdir, Op, Utimes, Write
from engine.paths import RelPath
from engine.tree import DirNode, FileNode, SymlinkNode, merge_key
from mesa._mount import RepoMount
from mesa.errors import MesaConnectionError, MesaError
from mesa.fuse._inodes import Inode, InodeTable, value_size
from mesa.fuse._spool import Spool, SpoolSnapshot
from mesa.fuse._writer import Published
from transports.base import BLOB_CHUNK_BYTES

log = logging.getLogger("mesa.fuse")


@dataclass(eq=False)
class OpenFile:
    """The bytes of one open inode (see module docstring).

    Attributes:
        inode: the inode.
        data: the bytes (a bytearray once written to).
        key: the merge key of the value ``data`` was read from or published as;
            None while it is unknown.
        dirty: written since the last capture.
        generation: bumped on every change (a publish only cleans what it sent).
        captured: the generation a close captured and the writer has not published
            yet, or None.
        captured_snapshot: the captured bytes, frozen (`mesa.fuse._spool`), or None.
        append_base: while the buffer only grew by appends since it was read or last
            captured, the size it had then (the bytes after it are published as an
            ``Append``: appends never conflict, and a conflict block is not rewritten);
            None once anything else changed it (published as a ``Write``).
        captured_append_base: ``append_base`` as the last capture saw it.
        writers: open handles that may write (while any is open, every open of the
            inode shares this buffer, so no write lands in a buffer nobody publishes).
        mtime_ms: when the buffer was last written or truncated here (shown as the
            file's modification time while the buffer is live), or None.
        handles: open handles on this buffer.
        inflight: publications appended and not folded yet.
        seen: the sequence of the change ``change_id`` whose state ``data`` was
            derived from: the bytes were read then, or published then and the fold
            kept them. Publishing passes it as the entry's ``seen``, so a write
            another author made while the file was open races these bytes instead
            of being overwritten by them.
        change_id: the change ``seen`` counts in (a switch of the mount resets it).
    """

    inode: Inode
    spool: Spool
    key: str | None
    seen: int
    change_id: str
    dirty: bool = False
    generation: int = 0
    handles: int = 0
    inflight: int = 0
    captured: int | None = None
    captured_snapshot: SpoolSnapshot | None = None
    append_base: int | None = None
    captured_append_base: int | None = None
    writers: int = 0
    mtime_ms: int | None = None
    closed: bool = False

    @property
    def live(self) -> bool:
        """Whether this buffer, not the tree, has the file's bytes (module docstring)."""
        return self.dirty or self.captured is not None or self.inflight > 0 or self.inode.pending

    def capture(self) -> bool:
        """Capture the bytes for publication (a close); return whether there is anything.

        The capture is a frozen snapshot of the spool: no copy on disk (the spool moves
        to a copy of its data extents at its next change), at most 1 MiB in memory. A
        capture still queued is replaced by the newer one.
        """
        if self.dirty:
            if self.captured_snapshot is not None:
                self.captured_snapshot.close()
                # A queued capture replaced: the appends it held are in this one too,
                # so the older base stays (an Append of everything since it).
                if self.captured_append_base is None:
                    self.append_base = None
                elif self.append_base is not None:
                    self.append_base = self.captured_append_base
            self.captured_snapshot = self.spool.snapshot()
            self.captured, self.dirty = self.generation, False
            self.captured_append_base = self.append_base
            self.append_base = self.spool.size  # what comes next appends to this
        return self.captured is not None

    def take_capture(self) -> tuple[int, SpoolSnapshot, int | None] | None:
        """Hand the captured bytes to the publisher (once; it closes the snapshot).

        Returns (generation, snapshot, append base or None for a whole write).
        """
        if self.captured is None or self.captured_snapshot is None:
            return None
        taken = (self.captured, self.captured_snapshot, self.captured_append_base)
        self.captured, self.captured_snapshot, self.captured_append_base = None, None, None
        return taken

    def write(self, offset: int, buf: bytes, *, append: bool = False) -> int:
        """Write ``buf`` at ``offset`` (a gap is a hole); return its length (EFBIG past the max).

        ``append``: through an ``O_APPEND`` descriptor (at the end). Only such writes
        keep the buffer publishable as an ``Append``: ``cmd > file`` replaces a file
        and must race as a write, ``cmd >> file`` adds to it and never conflicts.
        """
        appending = append and offset == self.spool.size
        written = self.spool.write(offset, buf)
        if not appending:
            self.append_base = None
        self._changed()
        return written

    def truncate(self, size: int) -> None:
        """Cut or extend (with a hole) to ``size`` bytes (EFBIG past the max)."""
        if size == self.spool.size:
            return
        self.spool.truncate(size)
        self.append_base = None
        self._changed()

    def close(self) -> None:
        """Drop the bytes (the spool and any capture never taken)."""
        self.closed = True
        if self.captured_snapshot is not None:
            self.captured_snapshot.close()
            self.captured_snapshot = None
        self.spool.close()

    def _changed(self) -> None:
        self.dirty = True
        self.generation += 1
        self.key = None
        self.mtime_ms = time.time_ns() // 1_000_000


@dataclass(eq=False)
class Handle:
    """One open of a file: its buffer, whether it may write, and ``O_APPEND``."""

    file: OpenFile
    writable: bool
    append: bool = False


class Handles:
    """The open files and handles of a mount."""

    def __init__(
        self,
        table: InodeTable,
        on_changed: Callable[[Inode], None],
        *,
        spool_dir: str | None = None,
    ) -> None:
        """Track open files of ``table``; their bytes spool to ``spool_dir`` past 1 MiB.

        ``on_changed(inode)`` is called when the tree differs from what the kernel
        was told (a published write raced another writer's): drop the inode's caches,
        and its dentry too if the inode is unlinked now.
        """
        self._table = table
        self._on_changed = on_changed
        self._spool_dir = spool_dir
        self._files: dict[int, OpenFile] = {}
        #: Per inode: what the size the kernel was last given describes (`tell`).
        self._told: dict[int, OpenFile | Merge] = {}
        self._handles: dict[int, Handle] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        self._next_fh = 1

    def get(self, fh: int) -> Handle:
        """Return the handle ``fh`` (``EBADF`` if unknown)."""
        handle = self._handles.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "unknown file handle")
        return handle

    def current(self, ino: int) -> OpenFile | None:
        """Return the inode's shared buffer, if it is open."""
        return self._files.get(ino)

    def shown(self, ino: int) -> OpenFile | None:
        """Return the buffer this mount shows instead of the tree's value, if any.

        A live buffer, or the shared buffer of a file open for writing (every open of
        the inode reads it meanwhile), even before anything is written to it.
        """
        of = self._files.get(ino)
        return of if of is not None and (of.live or of.writers > 0) else None

    def tell(self, ino: int, source: OpenFile | Merge) -> None:
        """Record that the kernel was given the size of ``source`` for ``ino``."""
        self._told[ino] = source

    def forget(self, ino: int) -> None:
        """The kernel forgot ``ino``: nothing it was told of it matters any more."""
        self._told.pop(ino, None)

    async def reading(self, fh: int) -> OpenFile:
        """Return the buffer a read through ``fh`` is served from (see module docstring).

        The handle's own buffer, unless the kernel was given a smaller size of another
        version since (it would cut the handle's bytes at it): then a read-only handle
        moves to that version's buffer (the shown one, the shared one, or one loaded
        for it). A conflict's size is its rendering's (rendered to be measured). A
        handle that may write keeps its buffer: it is the shown one while it is open.
        """
        handle = self.get(fh)
        of = handle.file
        told = self._told.get(of.inode.ino)
        if handle.writable or told is None or told is of:
            return of
        target: OpenFile | None = None
        if isinstance(told, OpenFile):
            if told.closed:
                return of  # its bytes reached the tree, or the kernel was told to drop it
            target = told
            told_size = told.spool.size
        else:
            if of.key is not None and of.key == merge_key(told):
                return of
            size = value_size(told)
            if size is None:
                # A conflict: the size the kernel has is its rendering's.
                target = await self._version(of.inode, told)
                size = target.spool.size
            told_size = size
        if told_size >= of.spool.size:
            # The kernel's size holds this handle's version whole: it keeps reading it
            # (a reader that reached its end gets end-of-file there, not the new tail).
            if target is not None and target is not told:
                self._drop_if_idle(target)
            return of
        if target is None:
            assert not isinstance(told, OpenFile)
            target = await self._version(of.inode, told)
        now = handle.file  # another read of this handle may have moved it meanwhile
        if target is not now:
            target.handles += 1
            handle.file = target
            now.handles -= 1
            self._drop_if_idle(now)
            # The kernel's pages are refilled from here; an open must not keep them.
            of.inode.page_key = None
        self._drop_if_idle(target)
        return handle.file

    async def _version(self, inode: Inode, value: Merge) -> OpenFile:
        """Return a clean buffer of ``value``: the inode's shared one, or a new one.

        A new buffer of the tree's current value becomes the shared one unless a
        shown buffer is; one of an older value serves only the handles moved to it.
        """
        key = merge_key(value)
        lock = self._loading.setdefault(inode.ino, asyncio.Lock())
        try:
            async with lock:
                current = self._files.get(inode.ino)
                if current is not None and not current.closed and current.key == key:
                    return current
                of = await self._load(inode, value, truncate=False)
                node = inode.node
                latest = isinstance(node, FileNode) and merge_key(node.value) == key
                if latest and (current is None or not (current.live or current.writers > 0)):
                    self._files[inode.ino] = of
                return of
        finally:
            if not lock.locked() and self._loading.get(inode.ino) is lock:
                del self._loading[inode.ino]

    async def open(
        self, inode: Inode, *, writable: bool, truncate: bool, append: bool = False
    ) -> tuple[int, bool]:
        """Open ``inode``; return (file handle, whether the kernel may keep its page cache)."""
        lock = self._loading.setdefault(inode.ino, asyncio.Lock())
        try:
            async with lock:
                of = await self._shared(inode, truncate=truncate)
        finally:
            if not lock.locked() and self._loading.get(inode.ino) is lock:
                del self._loading[inode.ino]
        if truncate:
            of.truncate(0)
        keep = (
            of.dirty or of.captured is not None or (of.key is not None and inode.page_key == of.key)
        )
        inode.page_key = of.key
        of.handles += 1
        of.writers += writable
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = Handle(of, writable, append)
        return fh, keep

    async def _shared(self, inode: Inode, *, truncate: bool) -> OpenFile:
        node = inode.node
        assert isinstance(node, FileNode)
        assert inode.repo is not None
        key = merge_key(node.value)
        of = self._files.get(inode.ino)
        if of is not None and (of.live or of.key == key or of.writers > 0):
            return of
        of = await self._load(inode, node.value, truncate=truncate)
        # A truncating open of a non-empty file must publish the empty file.
        if truncate and _size(node) != 0:
            of.dirty = True
        self._files[inode.ino] = of
        return of

    async def _load(self, inode: Inode, value: Merge, *, truncate: bool) -> OpenFile:
        """Return a new clean buffer of ``value`` (empty for ``truncate``), not shared yet."""
        repo = inode.repo
        assert repo is not None
        seen, change_id = repo.replica.seq, repo.change_id
        spool = self.new_spool()
        if not truncate:
            try:
                async with contextlib.aclosing(repo.blobs.value_chunks(value)) as chunks:
                    await spool.fill(chunks)
            except BaseException:
                spool.close()
                raise
        of = OpenFile(inode, spool, None if truncate else merge_key(value), seen, change_id)
        of.append_base = None if truncate else spool.size
        return of

    def new_spool(self) -> Spool:
        """An empty spool in this mount's spool directory."""
        return Spool(directory=self._spool_dir)

    def create(self, inode: Inode, *, append: bool = False) -> int:
        """Open a pending file this mount just created (empty); return its handle."""
        assert inode.repo is not None
        assert inode.pending
        of = OpenFile(inode, self.new_spool(), None, inode.repo.replica.seq, inode.repo.change_id)
        of.dirty = True
        self._files[inode.ino] = of
        of.handles += 1
        of.writers += 1
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = Handle(of, writable=True, append=append)
        return fh

    async def job(self, inode: Inode, unreachable: Callable[[MesaError], None]) -> Published:
        """Append what this mount shows of ``inode`` and the tree lacks (`LogWriter`'s job).

        Entries, in order: ``Mkdir`` of a pending directory; ``Write`` of a live
        buffer's bytes (with the mode set meanwhile, for a pending file); ``Chmod`` and
        ``Utimes`` for a mode or times set and not folded yet. They are appended
        unchecked: they were validated against this mount's view, which is ahead of
        the tree.
        """
        repo = inode.repo
        assert repo is not None
        # A repo root's node is looked up live (its times can be set too).
        node = self._table.node_of(inode)
        if node is None:
            raise OSError(errno.ENOENT, "the node left the tree", inode.name)
        of = self._files.get(inode.ino)
        path = self._target(inode) if isinstance(node, FileNode) else self._table.path_of(inode)
        mode, times, attr_gen = inode.set_mode, inode.set_times, inode.attr_gen
        if path is None:
            log.info("not publishing %s: it was removed", inode.name)
            if of is not None:
                of.dirty = False
                of.captured = None
                if of.captured_snapshot is not None:
                    of.captured_snapshot.close()
                    of.captured_snapshot = None
            return Published(None, functools.partial(self._settled, inode, None, None, attr_gen))
        where = self._table.abs_path(repo, path)
        ops: list[Op] = []
        seen: int | None = None
        sent: tuple[OpenFile, int, str | None, int] | None = None
        creating = inode.pending and not inode.published
        if creating and mode is not None and not isinstance(node, SymlinkNode):
            # The creating entry carries the mode set meanwhile; the detached node
            # records what the log will hold, so a later chmod compares against it.
            node.mode, mode = mode, None
        if isinstance(node, DirNode) and creating:
            ops.append(Mkdir(path, mode=node.mode))
        elif (
            isinstance(node, FileNode) and of is not None and (of.captured is not None or creating)
        ):
            # The bytes a close captured; a create published before any close is empty.
            generation, snap, base = of.take_capture() or (-1, None, None)
            start = base if base is not None and not creating else None
            appending = start is not None
            size = 0 if snap is None else snap.size
            # In flight from here: the buffer stays live (this mount shows its bytes)
            # until the entry is folded, through every await below.
            of.inflight += 1
            try:
                content = await _persistently(
                    lambda: snapshot_content(repo, snap, where, start=start or 0),
                    repo,
                    unreachable,
                )
            except BaseException:
                of.inflight -= 1
                raise
            finally:
                if snap is not None:
                    snap.close()
            # The node may have folded anew during the await; the tree is what the log
            # holds only once this mount's own entries in flight are folded too.
            fresh = self._table.node_of(inode)
            if isinstance(fresh, FileNode):
                node = fresh
            key: str | None
            if appending:
                # Only appended since it was read or last captured: the new bytes go as
                # an Append (never a conflict; a conflicted file keeps its block).
                key = None
                if content.size:
                    ops.append(Append(path, content))
            else:
                key = merge_key(Merge.resolved(content))
                if creating or not repo.caught_up() or key != merge_key(node.value):
                    ops.append(Write(path, content, mode=node.mode))
            # Bytes read from another change (the mount switched) saw nothing of it.
            seen = of.seen if of.change_id == repo.change_id else 0
            sent = (of, generation, key, size)
        if (
            mode is not None
            and not isinstance(node, SymlinkNode)
            and (not repo.caught_up() or mode != node.mode)
        ):
            ops.append(Chmod(path, mode))
        # A pending node's times are not the log's yet (the fold stamps the sequencer's).
        if times is not None and (
            inode.pending or not repo.caught_up() or times != (node.atime_ms, node.mtime_ms)
        ):
            ops.append(Utimes(path, *times))
        seq = None
        try:
            if ops:
                seq = await repo.publish(
                    ops, where, seen=seen, checked=False, unreachable=unreachable
                )
        except BaseException:
            if sent is not None:
                sent[0].inflight -= 1
                self._drop_if_idle(sent[0])
            raise
        if creating:
            inode.published = True
        return Published(
            seq,
            functools.partial(self._settled, inode, path if creating else None, sent, attr_gen),
        )

    def _settled(
        self,
        inode: Inode,
        created: RelPath | None,
        sent: tuple[OpenFile, int, str | None, int] | None,
        attr_gen: int,
    ) -> None:
        """A job's entries are folded: reconcile ``inode`` with the tree."""
        repo = inode.repo
        assert repo is not None
        if inode.pending and created is not None:
            found = repo.replica.state.tree.lookup(created)
            same_kind = type(found) is type(inode.node)
            self._table.bind(inode, found if same_kind else None)
            if not same_kind:
                self._on_changed(inode)
        elif inode.pending:
            self._table.bind(inode, None)  # removed before it was published
        if inode.attr_gen == attr_gen:
            inode.set_mode = inode.set_times = None
        if sent is None:
            return
        of, generation, key, size = sent
        of.inflight -= 1
        node = inode.node
        kept = isinstance(node, FileNode) and (
            merge_key(node.value) == key if key is not None else _size(node) == size
        )
        if kept:
            # The fold kept these bytes: everything up to them is now seen. (If it
            # made a conflict, the handle still has not seen the other side.)
            of.seen, of.change_id = repo.replica.seq, repo.change_id
        elif not inode.unlinked:
            self._on_changed(inode)
        if of.generation == generation:
            of.key = key
            inode.page_key = key
        self._drop_if_idle(of)

    def _drop_if_idle(self, of: OpenFile) -> None:
        if of.handles > 0 or of.live:
            return
        if self._files.get(of.inode.ino) is of:
            del self._files[of.inode.ino]
        of.close()  # also a buffer a newer one replaced, once its last reader is gone

    def _target(self, inode: Inode) -> RelPath | None:
        """Where a buffer is published: its path now, or where it was last seen."""
        path = self._table.path_of(inode)
        if path is not None or inode.unlinked:
            return path
        parent = self._table.get(inode.parent)
        if parent is None or parent.repo is not inode.repo:
            return None
        parent_path = self._table.path_of(parent)
        directory = self._table.node_of(parent)
        if parent_path is None or not isinstance(directory, DirNode):
            return None
        if inode.name in directory.children:
            return None  # something else took the name: do not overwrite it
        return (*parent_path, inode.name)

    def release(self, fh: int) -> OpenFile | None:
        """Drop a handle; return its buffer if it must be published (captured, writable)."""
        handle = self._handles.pop(fh, None)
        if handle is None:
            return None
        of = handle.file
        of.handles -= 1
        of.writers -= handle.writable
        if handle.writable and of.dirty and of.capture():
            return of
        if handle.writable and not of.writers and not of.live:
            # Shown while open for writing, this buffer is shown no more: if the tree
            # holds another value than the one it was read as (another writer's, folded
            # meanwhile), the kernel's size and pages must go. (A buffer this mount
            # published has no key until settled; its fold kept it or `_settled` told.)
            node = of.inode.node
            if of.key is not None and (
                not isinstance(node, FileNode) or merge_key(node.value) != of.key
            ):
                self._on_changed(of.inode)
        self._drop_if_idle(of)
        return None

    def open_count(self) -> int:
        """Return how many handles are open."""
        return len(self._handles)

    def dirty_inodes(self) -> list[Inode]:
        """Every inode whose buffer has bytes not scheduled yet (captured now, for shutdown)."""
        return [of.inode for of in self._files.values() if of.dirty and of.capture()]


async def _persistently(
    attempt: Callable[[], Awaitable[Content]],
    repo: RepoMount,
    unreachable: Callable[[MesaError], None],
) -> Content:
    """Run ``attempt`` until it succeeds, as a persistent writer does with an append.

    A blob upload that fails because the server is unreachable (or just came back and
    is not ready yet) is retried like the entry itself (`engine.driver`); anything
    else is raised. Stops when the mount closes or breaks.
    """
    failed = 0
    while True:
        try:
            return await attempt()
        except MesaConnectionError as exc:
            failed += 1
            unreachable(exc)
            await asyncio.sleep(driver.DEFAULT_RETRY.persistent_delay_ms(failed) / 1000)
            repo.check_open()


async def snapshot_content(
    repo: RepoMount, snap: SpoolSnapshot | None, where: str, *, start: int = 0
) -> Content:
    """Return the content to log for captured bytes from ``start`` (None: an empty create).

    Small bytes go inline; larger ones stream to the blob store in chunks straight
    from the snapshot, never whole in memory.
    """
    if snap is None:
        return Content.of(b"")
    size = snap.size - start
    if driver.goes_inline(size):
        return Content.of(snap.read(start, size))
    if repo.read_only:
        raise OSError(errno.EROFS, "read-only repo", where)
    chunks = snap.chunks() if start == 0 else _range_chunks(snap, start)
    return Content.from_segments([await repo.blobs.put_chunks(chunks)])


def _range_chunks(snap: SpoolSnapshot, start: int) -> Iterator[bytes]:
    offset = start
    while offset < snap.size:
        piece = snap.read(offset, min(BLOB_CHUNK_BYTES, snap.size - offset))
        offset += len(piece)
        yield piece


def _size(node: FileNode) -> int | None:
    value = node.value
    if not value.is_resolved():
        return None
    only = value.adds[0]
    return 0 if only is None else only.size
