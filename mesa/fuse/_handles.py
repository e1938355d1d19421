"""Open files: bytes per inode, published as one Write on flush, fsync or close.

Close-to-open consistency: an open reads the file's current value once (unless
``O_TRUNC``); reads and writes through the handle work on that buffer; the bytes are
published as ONE ``Write`` when a handle is flushed (every ``close``), fsynced or
released while the buffer is dirty, and the call returns once the write is durable
in the log and folded here. A later open (here or on any other mount, once it
folded the entry) sees them.

Every handle of one inode shares one `OpenFile` while any of them is dirty, as a
local filesystem's page cache would; a clean open of a file whose value changed
since gets a fresh buffer (readers holding the old one keep reading the old bytes).

An unlinked file keeps working through its open handles: its bytes stay in the
buffer until the last handle is released; a write to a file this mount unlinked is
not published (as on a local filesystem). A file removed or moved by another writer
is published at its new path if it still exists, else at the path it was last seen
at when its directory still exists (a write racing a remove keeps its bytes).
"""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass, field

from engine.content import Content
from engine.merge import Merge
from engine.ops import Write
from engine.paths import RelPath
from engine.tree import DirNode, FileNode, merge_key
from mesa._blobs import INLINE_THRESHOLD_BYTES
from mesa._mount import RepoMount
from mesa.fuse._inodes import Inode, InodeTable

log = logging.getLogger("mesa.fuse")


@dataclass(eq=False)
class OpenFile:
    """The bytes of one open inode (see module docstring).

    Attributes:
        inode: the inode.
        data: the bytes (a bytearray once written to).
        key: the merge key of the value ``data`` was read from or published as;
            None while it is unknown.
        dirty: written since the last publish.
        generation: bumped on every change (a publish only cleans what it sent).
        handles: open handles on this buffer.
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
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

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
        if not isinstance(self.data, bytearray):
            self.data = bytearray(self.data)
        return self.data

    def _changed(self) -> None:
        self.dirty = True
        self.generation += 1
        self.key = None


@dataclass(eq=False)
class Handle:
    """One open of a file: its buffer and whether it may write."""

    file: OpenFile
    writable: bool


class Handles:
    """The open files and handles of a mount."""

    def __init__(self, table: InodeTable) -> None:
        self._table = table
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

    def dirty_file(self, ino: int) -> OpenFile | None:
        """Return the inode's buffer if it holds unpublished bytes."""
        of = self._files.get(ino)
        return of if of is not None and of.dirty else None

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
        keep = of.dirty or (of.key is not None and inode.page_key == of.key)
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
        if of is not None and (of.dirty or of.key == key):
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

    async def publish(self, of: OpenFile) -> None:
        """Publish a dirty buffer as one Write (see module docstring)."""
        async with of.lock:
            if not of.dirty:
                return
            generation, data = of.generation, bytes(of.data)
            inode, repo = of.inode, of.inode.repo
            assert repo is not None
            assert isinstance(inode.node, FileNode)
            path = self._target(inode)
            if path is None:
                log.info("not publishing %s: the file was removed", inode.name)
                of.dirty = False
                return
            where = self._table.abs_path(repo, path)
            content = await content_of(repo, data, where)
            # Bytes read from another change (the mount switched) saw nothing of this one.
            seen = of.seen if of.change_id == repo.change_id else 0
            seq = await repo.submit(Write(path, content, mode=inode.node.mode), where, seen=seen)
            published = merge_key(Merge.resolved(content))
            if merge_key(inode.node.value) == published:
                # The fold kept these bytes (or they were there already): everything up
                # to them is now seen. If it made a conflict, the other side is unseen.
                of.seen = repo.replica.seq if seq is None else seq
                of.change_id = repo.change_id
            if of.generation == generation:
                of.dirty = False
                of.key = published
                inode.page_key = of.key

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

    async def release(self, fh: int) -> None:
        """Drop a handle, publishing its buffer if dirty (errors are only logged)."""
        handle = self._handles.pop(fh, None)
        if handle is None:
            return
        of = handle.file
        of.handles -= 1
        try:
            if of.dirty and handle.writable:
                await self.publish(of)
        finally:
            if of.handles <= 0 and self._files.get(of.inode.ino) is of and not of.dirty:
                del self._files[of.inode.ino]

    def open_count(self) -> int:
        """Return how many handles are open."""
        return len(self._handles)

    async def publish_all(self) -> None:
        """Publish every dirty buffer (used when the mount shuts down)."""
        for of in list(self._files.values()):
            if of.dirty:
                try:
                    await self.publish(of)
                except Exception:
                    log.exception("publishing %s at shutdown failed", of.inode.name)


async def content_of(repo: RepoMount, data: bytes, where: str) -> Content:
    """Return the content to log for ``data``: inline when small, else a blob."""
    if len(data) <= INLINE_THRESHOLD_BYTES:
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
