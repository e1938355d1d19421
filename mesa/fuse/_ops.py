"""The pyfuse3 request handlers over a mount's repos.

Reads (lookup, getattr, readdir, readlink, read) are answered from the folded trees
in memory, with what this mount wrote and has not seen folded yet on top (pending
nodes, live buffers, modes and times set). Creating a file, making a directory,
closing a written file, chmod and utimens return once the mount shows the change and
its log writer has it queued (`mesa.fuse._writer`: write-behind, in order; fsync
waits for it). Every other mutation waits for the writer's queue, then is one op
submitted to its repo's log, returning once the entry is durable and folded here.
Replies carry long entry/attribute timeouts (negative lookups too) and open files
keep their page cache: `mesa.fuse._invalidate` corrects the kernel from the
log when another writer changes something.

Errors: every handler fails only with ``FUSEError`` (anything else would end the
main loop): filesystem errors keep their errno, read-only repos are ``EROFS``, the
virtual levels (``/`` and ``/<org>``) are ``EPERM`` to mutate, renames across repos
``EXDEV``, hard links ``EPERM``, ``RENAME_EXCHANGE`` ``EINVAL`` (the log has no atomic
exchange), special files ``EPERM``. Ownership is not stored: every node belongs to
the mounting user and ``chown`` succeeds without changing anything. Extended
attributes are per-file metadata in the ``user.mesa.`` namespace; every other name is
``EOPNOTSUPP`` (`mesa.fuse._xattrs`).

pyfuse3 is imported here (and only here) as an untyped module.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from engine.content import Content
from engine.merge import Merge
from engine.ops import Mv, Op, Rm, SetMetadata, Symlink, Write
from engine.paths import NAME_MAX_BYTES, RelPath
from engine.tree import AnyNode, DirNode, FileNode, SymlinkNode, merge_key
from mesa._fs import MesaFileSystem
from mesa._mount import RepoMount
from mesa.fuse import _xattrs
from mesa.fuse._errors import errno_of
from mesa.fuse._handles import Handles, OpenFile, snapshot_content
from mesa.fuse._inodes import ORG, ROOT, Inode, InodeTable, value_size
from mesa.fuse._invalidate import (
    InvalEntry,
    Invalidator,
    InvalInode,
    Notification,
    Notifier,
)
from mesa.fuse._spool import MAX_FILE_BYTES
from mesa.fuse._writer import Failure, LogWriter, describe
from mesa.fuse.tuning import BLKSIZE, DEFAULT_CACHE_TIMEOUT_S

pyfuse3: Any = importlib.import_module("pyfuse3")

log = logging.getLogger("mesa.fuse")

#: Preferred I/O size: one FUSE request per write(2) of a buffered writer.
_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


def _guard(fn: _F) -> _F:
    """Turn every exception of a handler into ``FUSEError`` (see module docstring)."""

    @functools.wraps(fn)
    async def wrapper(*args: Any) -> Any:
        try:
            return await fn(*args)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from None

    return cast("_F", wrapper)


def _fail(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _name(raw: bytes) -> str:
    if len(raw) > NAME_MAX_BYTES:
        raise _fail(errno.ENAMETOOLONG)
    return raw.decode("utf-8", "surrogateescape")


@dataclass(eq=False)
class _Dir:
    inode: Inode
    entries: list[tuple[str, AnyNode | None, int]] | None = None


class Handlers:
    """The request handlers (mixed into ``pyfuse3.Operations`` by `operations`)."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self, fs: MesaFileSystem, *, cache_timeout_s: float, spool_dir: str | None = None
    ) -> None:
        self.fs = fs
        repos = list(fs.repo_mounts)
        self.table = InodeTable(fs.org, repos)
        self.handles = Handles(self.table, self._changed_under_kernel, spool_dir=spool_dir)
        self.writer = LogWriter(self.handles.job, self.table.describe)
        self.timeout = cache_timeout_s
        self.uid, self.gid = os.getuid(), os.getgid()
        self.started_ns = time.time_ns()
        self._dirs: dict[int, _Dir] = {}
        self._next_dir = 1
        self._conflict_sizes: dict[str, int] = {}
        self.notifier = Notifier(pyfuse3.invalidate_entry, pyfuse3.invalidate_inode)
        self.invalidator = Invalidator(self.table, self.notifier)
        for repo in repos:
            repo.add_fold_listener(self.invalidator.on_folded)
            # Mounts that follow a bookmark switch changes when it moves.
            repo.add_switch_listener(self.invalidator.on_switched)

    def init(self) -> None:
        """Called by pyfuse3 before the first request."""

    async def shutdown(self, timeout_s: float) -> list[Failure]:
        """Queue every buffer not published yet, drain the writer; return what was lost."""
        lost: list[Failure] = []
        for inode in self.handles.dirty_inodes():
            try:
                self.writer.schedule(inode)
            except OSError as exc:
                lost.append(Failure(self.table.describe(inode), describe(exc)))
        return lost + await self.writer.close(timeout_s)

    def _changed_under_kernel(self, inode: Inode) -> None:
        """A published write came out differently (a race): correct the kernel's caches."""
        batch: list[Notification] = [InvalInode(inode.ino)]
        if inode.unlinked and inode.parent:
            batch.append(InvalEntry(inode.parent, inode.name))
        inode.page_key = None
        self.notifier.submit(batch)

    async def _barrier(self, repo: RepoMount, *names: tuple[Inode, str]) -> None:
        """Wait until the writer folded everything queued (and the named pending files).

        ``names``: (parent, name) this op is about; a pending file there whose bytes
        were not handed to the writer yet (still open) is handed over first.
        """
        for parent, name in names:
            _, _, ino = self.table.child(parent, name)
            inode = self.table.get(ino) if ino else None
            if inode is not None and inode.pending and not inode.queued:
                self.writer.schedule(inode)
        await self.writer.barrier(repo)

    def _names_changed(self, directory: Inode, now_ms: int) -> None:
        """This mount added a name to ``directory``: its mtime is now (as the fold will say).

        A utimens of the directory not folded yet is overtaken by the new name.
        """
        self.table.dir_mtimes[directory.ino] = now_ms
        if directory.set_times is not None:
            directory.set_times = (directory.set_times[0], now_ms)
            directory.attr_gen += 1

    @staticmethod
    def _now_ms() -> int:
        return time.time_ns() // 1_000_000

    # -- helpers -----------------------------------------------------------------------

    def _inode(self, ino: int) -> Inode:
        inode = self.table.get(ino)
        if inode is None:
            raise _fail(errno.ESTALE)
        return inode

    @staticmethod
    def _writable(repo: RepoMount | None) -> RepoMount:
        if repo is None:
            raise _fail(errno.EPERM)
        repo.check_alive()
        if repo.read_only:
            raise _fail(errno.EROFS)
        return repo

    def _dir_path(self, parent: Inode) -> tuple[RepoMount, RelPath, DirNode]:
        """Return the repo, path and node of a directory that may be mutated."""
        repo = self._writable(parent.repo)
        path = self.table.path_of(parent)
        node = self.table.node_of(parent)
        if path is None:
            raise _fail(errno.ENOENT)
        if not isinstance(node, DirNode):
            raise _fail(errno.ENOTDIR)
        return repo, path, node

    def _path(self, inode: Inode) -> RelPath:
        path = self.table.path_of(inode)
        if path is None:
            raise _fail(errno.ENOENT)
        return path

    async def _submit(self, repo: RepoMount, op: Op, path: RelPath) -> None:
        await repo.submit(op, self.table.abs_path(repo, path))

    async def _size(self, repo: RepoMount, value: Merge) -> int:
        """The size of a tree value (a conflict's materialized size)."""
        size = value_size(value)
        if size is not None:
            return size
        key = merge_key(value)
        cached = self._conflict_sizes.get(key)
        if cached is None:
            cached = len(await repo.blobs.value_bytes(value))
            if len(self._conflict_sizes) > 1024:
                self._conflict_sizes.clear()
            self._conflict_sizes[key] = cached
        return cached

    async def _attrs(
        self, ino: int, repo: RepoMount | None, node: AnyNode | None, *, unlinked: bool = False
    ) -> Any:
        """Build the attributes the kernel caches for ``ino``."""
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.generation = 0
        attr.entry_timeout = self.timeout
        attr.attr_timeout = self.timeout
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_blksize = BLKSIZE
        if node is None and repo is not None:
            node = repo.replica.state.tree.root
        if node is None:
            # The root holds the org; the org holds one directory per repo.
            subdirs = 1 if ino == ROOT else len(self.table.repos)
            attr.st_mode, attr.st_nlink, attr.st_size = stat.S_IFDIR | 0o755, 2 + subdirs, 0
            attr.st_atime_ns = attr.st_mtime_ns = attr.st_ctime_ns = self.started_ns
            return attr
        live: OpenFile | None = None
        if isinstance(node, DirNode):
            # As on a local filesystem: "." and the entry in its parent, plus each
            # subdirectory's "..". O(children): the kernel caches it for the timeout.
            subdirs = sum(1 for child in node.children.values() if isinstance(child, DirNode))
            subdirs += self.table.pending_dirs(ino)
            attr.st_mode, attr.st_size = stat.S_IFDIR | node.mode, 0
            attr.st_nlink = 2 + subdirs
        elif isinstance(node, FileNode):
            assert repo is not None
            attr.st_mode, attr.st_nlink = stat.S_IFREG | node.mode, 1
            # Reads are served from what this size describes (`Handles.reading`).
            live = self.handles.shown(ino)
            if live is not None:
                attr.st_size = live.spool.size
                self.handles.tell(ino, live)
            else:
                value = node.value
                attr.st_size = await self._size(repo, value)
                self.handles.tell(ino, value)
        else:
            attr.st_mode, attr.st_nlink = stat.S_IFLNK | 0o777, 1
            attr.st_size = len(node.target.encode("utf-8", "surrogateescape"))
        if unlinked:
            attr.st_nlink = 0
        attr.st_blocks = (attr.st_size + 511) // 512
        atime_ms, mtime_ms = node.atime_ms, node.mtime_ms
        if isinstance(node, DirNode):
            mtime_ms = self.table.dir_mtimes.get(ino, mtime_ms)
        if live is not None and live.mtime_ms is not None:
            # Bytes written or truncated here and not folded yet: their time (make).
            mtime_ms = max(mtime_ms, live.mtime_ms)
        inode = self.table.get(ino)
        if inode is not None:
            if inode.set_mode is not None and not isinstance(node, SymlinkNode):
                attr.st_mode = stat.S_IFMT(attr.st_mode) | inode.set_mode
            if inode.set_times is not None:
                atime_ms, mtime_ms = inode.set_times
        attr.st_atime_ns = atime_ms * 1_000_000
        attr.st_mtime_ns = attr.st_ctime_ns = mtime_ms * 1_000_000
        return attr

    async def _inode_attrs(self, inode: Inode) -> Any:
        return await self._attrs(
            inode.ino, inode.repo, self.table.node_of(inode), unlinked=inode.unlinked
        )

    async def _learned(self, parent: Inode, name: str) -> Any:
        """Reply for an entry that now exists: attributes, and one more lookup counted."""
        repo, node, ino = self.table.child(parent, name)
        if not ino:
            raise _fail(errno.ENOENT)
        attrs = await self._attrs(ino, repo, node)
        self.table.learn(parent, name, repo, node)
        return attrs

    # -- lookups and attributes ----------------------------------------------------------

    @_guard
    async def lookup(self, parent_ino: int, raw: bytes, ctx: Any = None) -> Any:
        """Look up ``raw`` in a directory (a negative reply is cached too)."""
        parent = self._inode(parent_ino)
        if not self.table.is_dir(parent):
            raise _fail(errno.ENOTDIR)
        name = _name(raw)
        if parent.repo is not None:
            parent.repo.check_alive()
        if name in (".", ".."):
            target = parent if name == "." else self._inode(parent.parent or ROOT)
            attrs = await self._inode_attrs(target)
            target.lookups += 1
            return attrs
        repo, node, ino = self.table.child(parent, name)
        if not ino:
            self.table.learn_negative(parent, name)
            attrs = pyfuse3.EntryAttributes()
            attrs.st_ino = 0
            attrs.entry_timeout = self.timeout
            return attrs
        attrs = await self._attrs(ino, repo, node)
        self.table.learn(parent, name, repo, node)
        return attrs

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """Lower lookup counts (never raises)."""
        for ino, count in inode_list:
            try:
                self.table.forget(ino, count)
                if self.table.get(ino) is None:
                    self.handles.forget(ino)
            except Exception:
                log.exception("forget %d failed", ino)

    @_guard
    async def getattr(self, ino: int, ctx: Any = None) -> Any:
        """Return the attributes of an inode the kernel knows."""
        return await self._inode_attrs(self._inode(ino))

    @_guard
    async def setattr(self, ino: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> Any:
        """chmod, truncate/ftruncate, utimens; chown is accepted and ignored.

        chmod and utimens are shown at once and handed to the log writer (with the
        bytes, for a file open for writing: published at its close).
        """
        inode = self._inode(ino)
        node = self.table.node_of(inode)
        changes = (fields.update_size, fields.update_mode, fields.update_atime, fields.update_mtime)
        if any(changes):
            repo = self._writable(inode.repo)
            assert node is not None
            if fields.update_size:
                await self._truncate(inode, node, fh, attr.st_size)
            attrs_set = False
            if fields.update_mode and not isinstance(node, SymlinkNode):
                inode.set_mode = attr.st_mode & 0o7777
                attrs_set = True
            if fields.update_atime or fields.update_mtime:
                atime, mtime = inode.set_times or (node.atime_ms, node.mtime_ms)
                if fields.update_atime:
                    atime = attr.st_atime_ns // 1_000_000
                if fields.update_mtime:
                    mtime = attr.st_mtime_ns // 1_000_000
                inode.set_times = (atime, mtime)
                attrs_set = True
            if attrs_set:
                inode.attr_gen += 1
                of = self.handles.current(inode.ino)
                if of is None or not (of.dirty and of.handles > 0):
                    self.writer.schedule(inode)
                    await self.writer.throttle(repo)
        return await self._inode_attrs(inode)

    async def _truncate(self, inode: Inode, node: AnyNode, fh: int | None, size: int) -> None:
        if isinstance(node, DirNode):
            raise _fail(errno.EISDIR)
        if not isinstance(node, FileNode):
            raise _fail(errno.EINVAL)
        of = self.handles.current(inode.ino)
        if of is not None:
            of.truncate(size)
            if fh is None and of.capture():
                self.writer.schedule(inode)
            return
        repo = inode.repo
        assert repo is not None
        if size > MAX_FILE_BYTES:
            raise _fail(errno.EFBIG)  # before anything is read
        await self.writer.barrier(repo)
        path = self._path(inode)
        spool = self.handles.new_spool()
        try:
            async with contextlib.aclosing(repo.blobs.value_chunks(node.value)) as chunks:
                await spool.fill(chunks)
            if spool.size == size and node.value.is_resolved():
                return
            spool.truncate(size)  # a hole past the old end, never zeros in memory
            with spool.snapshot() as snap:
                content = await snapshot_content(repo, snap, self.table.abs_path(repo, path))
        finally:
            spool.close()
        await self._submit(repo, Write(path, content, mode=node.mode), path)

    @_guard
    async def readlink(self, ino: int, ctx: Any = None) -> bytes:
        """Return a symlink's target, verbatim."""
        node = self.table.node_of(self._inode(ino))
        if not isinstance(node, SymlinkNode):
            raise _fail(errno.EINVAL)
        return node.target.encode("utf-8", "surrogateescape")

    @_guard
    async def statfs(self, ctx: Any = None) -> Any:
        """Report a large, mostly free filesystem (the log has no fixed capacity)."""
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 4096
        st.f_blocks = st.f_bfree = st.f_bavail = 1 << 32
        st.f_files = st.f_ffree = st.f_favail = 1 << 32
        st.f_namemax = NAME_MAX_BYTES
        return st

    # -- extended attributes: per-file metadata (mesa.fuse._xattrs) -----------------------

    async def getxattr(self, ino: int, name: bytes, ctx: Any = None) -> bytes:
        """Return the value of ``user.mesa.<key>``, as folded here (realtime with the SDK).

        The kernel asks for ``security.capability`` before every write(2) to a file
        (to clear capabilities), so anything outside the namespace is answered first,
        with no lookup.
        """
        if not name.startswith(_xattrs.PREFIX):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        return await self._getxattr(ino, name)

    @_guard
    async def _getxattr(self, ino: int, name: bytes) -> bytes:
        inode = self._inode(ino)
        if inode.repo is None:
            raise _fail(errno.ENODATA)
        return _xattrs.get(self.table.node_of(inode), name)

    @_guard
    async def listxattr(self, ino: int, ctx: Any = None) -> list[bytes]:
        """Return ``user.mesa.<key>`` for every metadata key of the node."""
        inode = self._inode(ino)
        return _xattrs.names(self.table.node_of(inode) if inode.repo is not None else None)

    @_guard
    async def setxattr(self, ino: int, name: bytes, value: bytes, ctx: Any = None) -> None:
        """Set one metadata key (an empty value deletes it): one op, durable on return."""
        inode = self._inode(ino)
        _xattrs.key_of(name)
        repo, path, node = await self._settled(inode)
        key, text = _xattrs.set_item(node, name, value)
        await self._submit(repo, SetMetadata(path, ((key, text),)), path)

    @_guard
    async def removexattr(self, ino: int, name: bytes, ctx: Any = None) -> None:
        """Delete one metadata key (ENODATA when it is not set)."""
        inode = self._inode(ino)
        _xattrs.key_of(name)
        repo, path, node = await self._settled(inode)
        key, _ = _xattrs.remove_item(node, name)
        await self._submit(repo, SetMetadata(path, ((key, None),)), path)

    async def _settled(self, inode: Inode) -> tuple[RepoMount, RelPath, AnyNode]:
        """Wait until a node made here is in the log; return its repo, path and node."""
        repo = self._writable(inode.repo)
        parent = self.table.get(inode.parent) if inode.parent else None
        if parent is not None and parent.repo is not None:
            await self._barrier(repo, (parent, inode.name))
        else:
            await self.writer.barrier(repo)
        path = self._path(inode)
        node = self.table.node_of(inode)
        if node is None or inode.unlinked:
            raise _fail(errno.ENOENT)
        return repo, path, node

    # -- directories ---------------------------------------------------------------------

    @_guard
    async def opendir(self, ino: int, ctx: Any = None) -> int:
        """Open a directory; its listing is taken at the first readdir (and on rewind)."""
        inode = self._inode(ino)
        if not self.table.is_dir(inode):
            raise _fail(errno.ENOTDIR)
        fh = self._next_dir
        self._next_dir += 1
        self._dirs[fh] = _Dir(inode)
        return fh

    @_guard
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        """List entries with attributes (readdirplus); offsets index one stable listing."""
        handle = self._dirs.get(fh)
        if handle is None:
            raise _fail(errno.EBADF)
        inode = handle.inode
        if handle.entries is None or start_id == 0:
            handle.entries = self.table.listing(inode)
        entries = handle.entries
        for index in range(start_id, len(entries) + 2):
            if index < 2:
                target = inode if index == 0 else self.table.get(inode.parent) or inode
                attrs = await self._inode_attrs(target)
                if not pyfuse3.readdir_reply(token, b"." * (index + 1), attrs, index + 1):
                    return
                continue
            name, _, ino = entries[index - 2]
            repo, node, now = self.table.child(inode, name)
            if now != ino:
                continue  # removed since the listing was taken
            attrs = await self._attrs(ino, repo, node)
            if not pyfuse3.readdir_reply(
                token, name.encode("utf-8", "surrogateescape"), attrs, index + 1
            ):
                return
            self.table.learn(inode, name, repo, node)

    @_guard
    async def releasedir(self, fh: int) -> None:
        """Drop a directory handle."""
        self._dirs.pop(fh, None)

    @_guard
    async def fsyncdir(self, fh: int, datasync: bool) -> None:  # noqa: FBT001
        """Wait until every change this mount queued for the repo is durable and folded."""
        handle = self._dirs.get(fh)
        if handle is None:
            raise _fail(errno.EBADF)
        if handle.inode.repo is not None:
            await self.writer.barrier(handle.inode.repo)

    @_guard
    async def mkdir(self, parent_ino: int, raw: bytes, mode: int, ctx: Any) -> Any:
        """Make a directory: shown at once, its Mkdir queued on the log writer."""
        parent = self._inode(parent_ino)
        name = _name(raw)
        repo, _, _ = self._dir_path(parent)
        if self.table.child(parent, name)[2]:
            raise _fail(errno.EEXIST)
        now = self._now_ms()
        inode = self.table.add_pending(parent, name, DirNode(0, mode & 0o7777, now, now))
        self._names_changed(parent, now)
        self.writer.schedule(inode)
        await self.writer.throttle(repo)
        return await self._inode_attrs(inode)

    @_guard
    async def rmdir(self, parent_ino: int, raw: bytes, ctx: Any) -> None:
        """Remove an empty directory."""
        await self._remove(parent_ino, _name(raw), directory=True)

    @_guard
    async def unlink(self, parent_ino: int, raw: bytes, ctx: Any) -> None:
        """Remove a file or symlink; open handles keep working until released."""
        await self._remove(parent_ino, _name(raw), directory=False)

    async def _remove(self, parent_ino: int, name: str, *, directory: bool) -> None:
        parent = self._inode(parent_ino)
        repo, _, _ = self._dir_path(parent)
        await self._barrier(repo, (parent, name))
        repo, path, node = self._dir_path(parent)
        child = node.children.get(name)
        if child is None:
            raise _fail(errno.ENOENT)
        if directory and not isinstance(child, DirNode):
            raise _fail(errno.ENOTDIR)
        if not directory and isinstance(child, DirNode):
            raise _fail(errno.EISDIR)
        if isinstance(child, DirNode) and (
            child.children or self.table.pending.get(self.table.ino_of(repo, child.ino))
        ):
            raise _fail(errno.ENOTEMPTY)  # (a file created here and still open counts)
        await self._submit(repo, Rm((*path, name)), (*path, name))
        self._unlinked(parent, name, repo, child)

    def _unlinked(self, parent: Inode, name: str, repo: RepoMount, node: AnyNode) -> None:
        """The kernel dropped ``name``; the node may live on in open handles."""
        directory = self.table.node_of(parent)
        if isinstance(directory, DirNode) and directory.children.get(name) is node:
            return  # kept (a racing write by another writer wins over the remove)
        self.table.drop_dentry(parent.ino, name)
        inode = self.table.get(self.table.ino_of(repo, node.ino))
        if inode is not None:
            inode.unlinked = True

    @_guard
    async def rename(
        self,
        old_ino: int,
        old_raw: bytes,
        new_ino: int,
        new_raw: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        """Rename as one Mv op (rename(2)); ``RENAME_NOREPLACE`` is honoured, exchange is EINVAL."""
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise _fail(errno.EINVAL)
        old_parent, new_parent = self._inode(old_ino), self._inode(new_ino)
        old_name, new_name = _name(old_raw), _name(new_raw)
        if old_parent.repo is None or new_parent.repo is None:
            raise _fail(errno.EPERM)
        if old_parent.repo is not new_parent.repo:
            raise _fail(errno.EXDEV)
        repo, _, _ = self._dir_path(old_parent)
        self._dir_path(new_parent)
        await self._barrier(repo, (old_parent, old_name), (new_parent, new_name))
        repo, old_path, old_dir = self._dir_path(old_parent)
        _, new_path, new_dir = self._dir_path(new_parent)
        moved = old_dir.children.get(old_name)
        if moved is None:
            raise _fail(errno.ENOENT)
        replaced = new_dir.children.get(new_name)
        if replaced is not None and flags & pyfuse3.RENAME_NOREPLACE:
            raise _fail(errno.EEXIST)
        if replaced is moved:
            return
        await self._submit(repo, Mv((*old_path, old_name), (*new_path, new_name)), new_path)
        self.table.drop_dentry(old_parent.ino, old_name)
        self.table.forget_negative(new_parent.ino, new_name)
        if replaced is not None:
            self._unlinked(new_parent, new_name, repo, replaced)
        inode = self.table.get(self.table.ino_of(repo, moved.ino))
        if inode is not None:
            inode.parent, inode.name = new_parent.ino, new_name
            self.table.dentries.setdefault(new_parent.ino, {})[new_name] = inode.ino

    @_guard
    async def symlink(self, parent_ino: int, raw: bytes, target: bytes, ctx: Any) -> Any:
        """Create a symlink; the target is stored verbatim."""
        parent = self._inode(parent_ino)
        name = _name(raw)
        repo, _, _ = self._dir_path(parent)
        await self._barrier(repo, (parent, name))
        repo, path, _ = self._dir_path(parent)
        if self.table.child(parent, name)[2]:
            raise _fail(errno.EEXIST)
        text = target.decode("utf-8", "surrogateescape")
        await self._submit(repo, Symlink((*path, name), text), (*path, name))
        return await self._learned(parent, name)

    @_guard
    async def link(self, ino: int, parent_ino: int, raw: bytes, ctx: Any) -> Any:
        """Hard links are not supported."""
        raise _fail(errno.EPERM)

    @_guard
    async def mknod(self, parent_ino: int, raw: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        """Regular files only; devices, FIFOs and sockets are ``EPERM``."""
        if not stat.S_ISREG(mode):
            raise _fail(errno.EPERM)
        parent = self._inode(parent_ino)
        name = _name(raw)
        repo, _, _ = self._dir_path(parent)
        await self._barrier(repo, (parent, name))
        repo, path, _ = self._dir_path(parent)
        if self.table.child(parent, name)[2]:
            raise _fail(errno.EEXIST)
        await self._new_file(repo, (*path, name), mode)
        return await self._learned(parent, name)

    async def _new_file(self, repo: RepoMount, path: RelPath, mode: int) -> None:
        await self._submit(repo, Write(path, Content.of(b""), mode=mode & 0o7777), path)

    # -- files ---------------------------------------------------------------------------

    @_guard
    async def open(self, ino: int, flags: int, ctx: Any) -> Any:
        """Open a file: its bytes are read once; writes publish on flush/fsync/close."""
        inode = self._inode(ino)
        node = self.table.node_of(inode)
        if isinstance(node, DirNode) or inode.repo is None:
            raise _fail(errno.EISDIR)
        if not isinstance(node, FileNode):
            raise _fail(errno.ELOOP)
        writable = flags & os.O_ACCMODE != os.O_RDONLY
        if writable:
            self._writable(inode.repo)
        else:
            inode.repo.check_alive()
        truncate = writable and bool(flags & os.O_TRUNC)
        append = bool(flags & os.O_APPEND)
        # Close-to-open: the kernel must not read the new bytes with a size it cached
        # before a fold changed the file (a cut read). Invalidations of folds done
        # before this open reach the kernel first.
        await self.notifier.flushed()
        fh, keep = await self.handles.open(
            inode, writable=writable, truncate=truncate, append=append
        )
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep)

    @_guard
    async def create(self, parent_ino: int, raw: bytes, mode: int, flags: int, ctx: Any) -> Any:
        """Create and open a file: shown at once, published (one Write) at its close."""
        parent = self._inode(parent_ino)
        name = _name(raw)
        self._dir_path(parent)
        exists = self.table.child(parent, name)[2]
        if not exists:
            now = self._now_ms()
            empty = Merge.resolved(Content.of(b""))
            node = FileNode(0, mode & 0o7777, now, now, value=empty)
            inode = self.table.add_pending(parent, name, node)
            self._names_changed(parent, now)
            fh = self.handles.create(inode, append=bool(flags & os.O_APPEND))
            attrs = await self._inode_attrs(inode)
            return pyfuse3.FileInfo(fh=fh, keep_cache=False), attrs
        if flags & os.O_EXCL:
            raise _fail(errno.EEXIST)
        attrs = await self._learned(parent, name)
        inode = self._inode(attrs.st_ino)
        if isinstance(inode.node, DirNode):
            raise _fail(errno.EISDIR)
        if not isinstance(inode.node, FileNode):
            raise _fail(errno.EEXIST)
        truncate = bool(flags & os.O_TRUNC)
        append = bool(flags & os.O_APPEND)
        fh, keep = await self.handles.open(inode, writable=True, truncate=truncate, append=append)
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep), attrs

    @_guard
    async def read(self, fh: int, offset: int, size: int) -> Any:
        """Read the version whose size the kernel was given last (`Handles.reading`)."""
        return (await self.handles.reading(fh)).spool.read(offset, size)

    @_guard
    async def write(self, fh: int, offset: int, buf: bytes) -> int:
        """Write into the handle's buffer (published on flush/fsync/close)."""
        handle = self.handles.get(fh)
        if not handle.writable:
            raise _fail(errno.EBADF)
        inode = handle.file.inode
        if inode.set_times is not None:
            inode.set_times = None  # a write after utimens sets mtime again
            inode.attr_gen += 1
        if handle.append:
            # O_APPEND: at the end of this mount's bytes, whatever size the kernel
            # cached (another mount's write may have changed the file since).
            offset = handle.file.spool.size
        return handle.file.write(offset, buf, append=handle.append)

    @_guard
    async def flush(self, fh: int) -> None:
        """close(2) of a descriptor: hand the bytes written through it to the log writer."""
        handle = self.handles.get(fh)
        if handle.writable and handle.file.capture():
            inode = handle.file.inode
            self.writer.schedule(inode)
            assert inode.repo is not None
            await self.writer.throttle(inode.repo)

    @_guard
    async def fsync(self, fh: int, datasync: bool) -> None:  # noqa: FBT001
        """Publish now; return once this and every earlier write is durable and folded.

        ``EIO`` if a write of this file could not be published (once, with the
        reason logged), or while the server is unreachable past the retry budget.
        """
        await self.flush(fh)
        inode = self.handles.get(fh).file.inode
        repo = inode.repo
        assert repo is not None
        await self.writer.barrier(repo)
        if inode.write_error is not None:
            reason, inode.write_error = inode.write_error, None
            raise OSError(errno.EIO, f"a write of this file was not published: {reason}")

    @_guard
    async def release(self, fh: int) -> None:
        """The last descriptor closed: hand what is left to the log writer, drop the handle."""
        of = self.handles.release(fh)
        if of is not None:
            self.writer.schedule(of.inode)


def operations(
    fs: MesaFileSystem,
    *,
    cache_timeout_s: float = DEFAULT_CACHE_TIMEOUT_S,
    spool_dir: str | None = None,
) -> Any:
    """Return a ``pyfuse3.Operations`` serving ``fs`` (``Handlers`` over pyfuse3's defaults)."""
    cls = type("MesaOperations", (Handlers, pyfuse3.Operations), {})
    return cls(fs, cache_timeout_s=cache_timeout_s, spool_dir=spool_dir)


__all__ = ["BLKSIZE", "DEFAULT_CACHE_TIMEOUT_S", "ORG", "ROOT", "Handlers", "operations"]
