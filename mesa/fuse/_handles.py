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
a fresh buffer (readers holding the old one keep reading the old bytes).

An unlinked file keeps working through its open handles: its bytes stay in the
buffer until the last handle is released; a write to a file this mount unlinked is
not published (as on a local filesystem). A file removed or moved by another writer
is published at its new path if it still exists, else at the path it was last seen
at when its directory still exists (a write racing a remove keeps its bytes).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine import driver
from engine.content import Content
from engine.merge import Merge
from engine.ops import Chmod, Mkdir, Op, Utimes, Write
from engine.paths import RelPath
from engine.tree import DirNode, FileNode, SymlinkNode, merge_key
from mesa._mount import RepoMount
from mesa.errors import MesaError
from mesa.fuse._inodes import Inode, InodeTable
from mesa.fuse._writer import Published

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
        captured_bytes: the captured bytes once the buffer changed after the capture
            (None while the buffer still holds exactly them).
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
    data: bytes | bytearray
    key: str | None
    seen: int
    change_id: str
    dirty: bool = False
    generation: int = 0
    handles: int = 0
    inflight: int = 0
    captured: int | None = None
    captured_bytes: bytes | None = None
    mtime_ms: int | None = None

    @property
    def live(self) -> bool:
        """Whether this buffer, not the tree, has the file's bytes (module docstring)."""
        return self.dirty or self.captured is not None or self.inflight > 0 or self.inode.pending

    def capture(self) -> bool:
        """Capture the bytes for publication (a close); return whether there is anything."""
        if self.dirty:
            self.captured, self.captured_bytes, self.dirty = self.generation, None, False
        return self.captured is not None

    def take_capture(self) -> tuple[int, bytes] | None:
        """Hand the captured bytes to the publisher (once); None if nothing is captured."""
        if self.captured is None:
            return None
        generation, data = self.captured, self.captured_bytes
        if data is None:
            data = bytes(self.data)
        self.captured = self.captured_bytes = None
        return generation, data

    def write(self, offset: int, buf: bytes) -> int:
        """Write ``buf`` at ``offset`` (zero-filling a gap); return its length."""
        data = self._writable()
        end = offset + len(buf)
        if offset > len(data):
            data.extend(bytes(offset - len(data)))
        data[offset:end] = buf
        self._changed()
        return len(buf)

    def truncate(self, size: int) -> None:
        """Cut or zero-extend to ``size`` bytes."""
        if size == len(self.data):
            return
        data = self._writable()
        if size < len(data):
            del data[size:]
        else:
            data.extend(bytes(size - len(data)))
        self._changed()

    def _writable(self) -> bytearray:
        if self.captured is not None and self.captured_bytes is None:
            # Copy on write: the capture keeps the bytes the close saw.
            self.captured_bytes = bytes(self.data)
        if not isinstance(self.data, bytearray):
            self.data = bytearray(self.data)
        return self.data

    def _changed(self) -> None:
        self.dirty = True
        self.generation += 1
        self.key = None
        self.mtime_ms = time.time_ns() // 1_000_000


@dataclass(eq=False)
class Handle:
    """One open of a file: its buffer and whether it may write."""

    file: OpenFile
    writable: bool


class Handles:
    """The open files and handles of a mount."""

    def __init__(self, table: InodeTable, on_changed: Callable[[Inode], None]) -> None:
        """Track open files of ``table``.

        ``on_changed(inode)`` is called when the tree differs from what the kernel
        was told (a published write raced another writer's): drop the inode's caches,
        and its dentry too if the inode is unlinked now.
        """
        self._table = table
        self._on_changed = on_changed
        self._files: dict[int, OpenFile] = {}
        self._handles: dict[int, Handle] = {}
        self._loading: dict[int, asyncio.Lock] = {}
        self._next_fh = 1

    def get(self, fh: int) -> Handle:
        """Return the handle ``fh`` (``EBADF`` if unknown)."""
        handle = self._handles.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "unknown file handle")
        return handle

    def live(self, ino: int) -> OpenFile | None:
        """Return the inode's buffer if it has bytes the tree does not have yet."""
        of = self._files.get(ino)
        return of if of is not None and of.live else None

    def current(self, ino: int) -> OpenFile | None:
        """Return the inode's shared buffer, if it is open."""
        return self._files.get(ino)

    async def open(self, inode: Inode, *, writable: bool, truncate: bool) -> tuple[int, bool]:
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
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = Handle(of, writable)
        return fh, keep

    async def _shared(self, inode: Inode, *, truncate: bool) -> OpenFile:
        node = inode.node
        assert isinstance(node, FileNode)
        assert inode.repo is not None
        key = merge_key(node.value)
        of = self._files.get(inode.ino)
        if of is not None and (of.live or of.key == key):
            return of
        repo = inode.repo
        seen, change_id, value = repo.replica.seq, repo.change_id, node.value
        data = b"" if truncate else await repo.blobs.value_bytes(value)
        # A truncating open of a non-empty file must publish the empty file.
        of = OpenFile(inode, data, None if truncate else key, seen, change_id)
        if truncate and _size(node) != 0:
            of.dirty = True
        self._files[inode.ino] = of
        return of

    def create(self, inode: Inode) -> int:
        """Open a pending file this mount just created (empty); return its handle."""
        assert inode.repo is not None
        assert inode.pending
        of = OpenFile(inode, b"", None, inode.repo.replica.seq, inode.repo.change_id)
        of.dirty = True
        self._files[inode.ino] = of
        of.handles += 1
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = Handle(of, writable=True)
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
                of.captured = of.captured_bytes = None
            return Published(None, functools.partial(self._settled, inode, None, None, attr_gen))
        where = self._table.abs_path(repo, path)
        ops: list[Op] = []
        seen: int | None = None
        sent: tuple[OpenFile, int, str] | None = None
        creating = inode.pending and not inode.published
        if creating and mode is not None and not isinstance(node, SymlinkNode):
            # The creating entry carries the mode set meanwhile; the detached node
            # records what the log will hold, so a later chmod compares against it.
            node.mode, mode = mode, None
        if isinstance(node, DirNode) and creating:
            ops.append(Mkdir(path, mode=node.mode))
        elif isinstance(node, FileNode) and of is not None and (of.captured or creating):
            # The bytes a close captured; a create published before any close is empty.
            generation, data = of.take_capture() or (-1, b"")
            # In flight from here: the buffer stays live (this mount shows its bytes)
            # until the entry is folded, through every await below.
            of.inflight += 1
            try:
                content = await content_of(repo, data, where)
            except BaseException:
                of.inflight -= 1
                raise
            key = merge_key(Merge.resolved(content))
            if creating or key != merge_key(node.value):
                ops.append(Write(path, content, mode=node.mode))
                # Bytes read from another change (the mount switched) saw nothing of it.
                seen = of.seen if of.change_id == repo.change_id else 0
            sent = (of, generation, key)
        if mode is not None and not isinstance(node, SymlinkNode) and mode != node.mode:
            ops.append(Chmod(path, mode))
        # A pending node's times are not the log's yet (the fold stamps the sequencer's).
        if times is not None and (inode.pending or times != (node.atime_ms, node.mtime_ms)):
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
        sent: tuple[OpenFile, int, str] | None,
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
        of, generation, key = sent
        of.inflight -= 1
        node = inode.node
        if isinstance(node, FileNode) and merge_key(node.value) == key:
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
        if of.handles <= 0 and not of.live and self._files.get(of.inode.ino) is of:
            del self._files[of.inode.ino]

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
        if handle.writable and of.dirty and of.capture():
            return of
        self._drop_if_idle(of)
        return None

    def open_count(self) -> int:
        """Return how many handles are open."""
        return len(self._handles)

    def dirty_inodes(self) -> list[Inode]:
        """Every inode whose buffer has bytes not scheduled yet (captured now, for shutdown)."""
        return [of.inode for of in self._files.values() if of.dirty and of.capture()]


async def content_of(repo: RepoMount, data: bytes, where: str) -> Content:
    """Return the content to log for ``data``: inline when small, else a blob."""
    if driver.goes_inline(len(data)):
        return Content.of(data)
    if repo.read_only:
        raise OSError(errno.EROFS, "read-only repo", where)
    return Content.from_segments([await repo.blobs.put(data)])


def _size(node: FileNode) -> int | None:
    value = node.value
    if not value.is_resolved():
        return None
    only = value.adds[0]
    return 0 if only is None else only.size
