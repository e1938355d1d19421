"""`MesaFileSystem`: the spec's file API over a mount's repos.

Paths are absolute: ``/`` lists the org, ``/<org>`` lists the mounted repos, and
``/<org>/<repo>/...`` is inside a repo. Resolution is physical, like the kernel's:
symlinks are followed component by component (``..`` after a symlink goes to the
target's parent), across repos when a target is absolute, at most 40 times
(``ELOOP``). Each mutation becomes one op on real paths, checked by the engine
against the folded tree, so errors carry the errno a local filesystem gives.

Per-file metadata (``set_metadata``, ``get_metadata``, ``clear_metadata``) is string
keys and values on any node, in the log like every other change (engine/metadata.py
has the limits; docs/sdk.md the semantics).

``fs.changes`` and ``fs.bookmarks`` (`mesa._history.FsChanges`,
`mesa._bookmarks.FsBookmarks`) version the mounted repos; ``read(path, at=seq)``
reads the past of the mounted change. When a repo switches to another change,
subscribers get one ``WatchEvent("/<org>/<repo>", recursive=True)``.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from engine import driver, paths
from engine import metadata as meta_rules
from engine.content import Content
from engine.errors import FsError, InvalidInputError
from engine.ops import Append, Chmod, Cp, Mkdir, Mv, Op, Rm, SetMetadata, Symlink, Utimes, Write
from engine.replica import Folded
from engine.tree import AnyNode, DirNode, FileNode, SymlinkNode
from mesa._args import content_arg, mode_arg, path_arg, time_arg
from mesa._bash import Bash
from mesa._errormap import os_error
from mesa._fsbookmarks import FsBookmarks
from mesa._history import FsChanges, node_at, read_at
from mesa._mount import RepoMount
from mesa._mounted import MountedRepos
from mesa._types import FsStat, WatchEvent
from mesa.errors import InvalidOptionsError

log = logging.getLogger("mesa")

MAX_SYMLINK_HOPS = 40
Handler = Callable[[WatchEvent], Awaitable[None] | None]


@dataclass
class _Resolved:
    """Where a path landed: a virtual level (repo None), a repo root, or a node in a repo."""

    parts: list[str]
    repo: RepoMount | None
    node: AnyNode | None

    @property
    def rel(self) -> paths.RelPath:
        return tuple(self.parts[2:])

    @property
    def abs(self) -> str:
        return "/" + "/".join(self.parts)

    @property
    def is_dir(self) -> bool:
        return len(self.parts) < 2 or isinstance(self.node, DirNode)


class MesaFileSystem:
    """Async file I/O, metadata, traversal, mutation and subscriptions over a mount."""

    def __init__(self, org: str, mount_id: str) -> None:
        self.org = org
        self.mount_id = mount_id
        self._repos = MountedRepos(org)
        self._subs: list[MesaFileSystemSubscription] = []
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        #: Set while leaving the mount: reads still work (handlers of the events being
        #: delivered may read), writes and new subscriptions are refused.
        self._closing = False
        #: Changes of the mounted repos: new, edit, current, list, checkpoint, history.
        self.changes = FsChanges(self._repos, self.write)
        #: Bookmarks of the mounted repos: create, get, list, move, delete.
        self.bookmarks = FsBookmarks(self._repos)

    # -- mount plumbing ----------------------------------------------------------

    @property
    def repo_mounts(self) -> tuple[RepoMount, ...]:
        """The mounted repos, in the order they were given (for layers above the SDK)."""
        return tuple(self._repos.values())

    def add_repo(self, repo: RepoMount) -> None:
        """Attach a repo (called by the mount while entering)."""
        self._repos.add(repo)
        repo.add_switch_listener(self.on_switched)

    def on_switched(self, repo: RepoMount) -> None:
        """Tell every subscription the whole repo may have changed (it moved to another change)."""
        for sub in list(self._subs):
            sub.push([WatchEvent(repo.prefix, recursive=True)])

    def on_folded(self, repo: RepoMount, folded: list[Folded]) -> None:
        """Turn folded entries into events for every subscription (after the fold)."""
        if not self._subs:
            return
        events = [
            WatchEvent(repo.prefix + ("/" + paths.to_str(e.path) if e.path else ""), e.recursive)
            for f in folded
            for e in f.events
        ]
        for sub in list(self._subs):
            sub.push(events)

    async def aclose(self) -> None:
        """Wait for in-flight writes, deliver queued events, then close everything."""
        if self._closed or self._closing:
            return
        self._closing = True
        await self._idle.wait()
        for sub in list(self._subs):
            await sub.drain_and_stop()
        self._closed = True
        for repo in self._repos.values():
            await repo.close()

    async def wait_synced(self) -> None:
        """Wait until every mounted change is folded up to the newest entry its log holds now."""
        for repo in self._repos.values():
            await repo.wait_synced()

    def _check(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "the mount is closed")
        for repo in self._repos.values():
            repo.check_alive()

    # -- resolution ----------------------------------------------------------------

    def _resolve(
        self, path: str, *, follow: bool, missing_ok: bool = False, dir_check: bool = True
    ) -> _Resolved:
        """Resolve ``path`` physically (see module docstring).

        With ``missing_ok`` the last component may be missing (node None). With
        ``dir_check`` a path in directory form (``x/``) to anything but a directory is
        ENOTDIR; without it the caller checks that in its own order (rename(2)).
        """
        self._check()
        path_arg(path)
        if not path.startswith("/"):
            raise self._repos.relative(path)
        # A trailing "/" (or a last "." or "..") names a directory, as for the kernel:
        # anything else there (a file, or a symlink not followed) is ENOTDIR.
        dir_syntax = _dir_syntax(path)
        # "." stays in the queue: like the kernel, "x/." needs x to be a directory.
        queue = deque(p for p in path.split("/") if p)
        parts: list[str] = []
        repo: RepoMount | None = None
        node: AnyNode | None = None
        hops = 0
        while queue:
            name = queue.popleft()
            if name == ".":
                continue
            if name == "..":
                if parts:
                    parts.pop()
                continue
            last = not queue
            parts.append(name)
            if len(parts) == 1:
                if name != self.org:
                    raise self._repos.outside(path, name, None)
                continue
            if len(parts) == 2:
                repo = self._repos.get(name)
                if repo is None:
                    raise self._repos.outside(path, self.org, name)
                continue
            assert repo is not None
            node = repo.replica.state.tree.lookup(tuple(parts[2:]))
            if node is None:
                if last and missing_ok:
                    return _Resolved(parts, repo, None)
                raise os_error(errno.ENOENT, path)
            if isinstance(node, SymlinkNode) and (follow or not last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise os_error(errno.ELOOP, path)
                parts.pop()
                if node.target.startswith("/"):
                    parts.clear()
                queue.extendleft(reversed([p for p in node.target.split("/") if p]))
                continue
            if not last and not isinstance(node, DirNode):
                raise os_error(errno.ENOTDIR, path)
        repo = self._repos.get(parts[1]) if len(parts) >= 2 else None
        # Look the node up again: after a trailing ".." the last one looked up is a child.
        node = repo.replica.state.tree.lookup(tuple(parts[2:])) if repo is not None else None
        if dir_check and dir_syntax and node is not None and not isinstance(node, DirNode):
            raise os_error(errno.ENOTDIR, path)
        return _Resolved(parts, repo, node)

    def _in_repo(self, r: _Resolved, path: str, *, root_errno: int = errno.EPERM) -> RepoMount:
        """Return the repo a mutation goes to; virtual levels and repo roots raise."""
        if r.repo is None or len(r.parts) < 3:
            raise os_error(root_errno if r.repo is not None else errno.EPERM, path)
        return r.repo

    async def _submit(self, repo: RepoMount, op: Op, path: str, *, seen: int | None = None) -> None:
        if self._closing:
            raise OSError(errno.EBADF, "the mount is closing", path)
        self._inflight += 1
        self._idle.clear()
        try:
            await repo.submit(op, path, seen=seen)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def _content(self, repo: RepoMount, data: bytes | memoryview, path: str) -> Content:
        """Inline bytes, or a blob streamed from ``data`` in pieces (never copied whole)."""
        if driver.goes_inline(len(data)):
            return Content.of(bytes(data))
        if repo.read_only:
            raise os_error(errno.EROFS, path)
        if len(data) > repo.blobs.max_blob_bytes:
            raise os_error(errno.EFBIG, path, f"larger than {repo.blobs.max_blob_bytes} bytes")
        return Content.from_segments([await repo.blobs.put(data)])

    # -- byte I/O ----------------------------------------------------------------------

    async def read(self, path: str, *, at: int | None = None) -> bytes:
        """Read a file as bytes; a conflicted file reads as its jj conflict block.

        With ``at``, read the file as it was once the mounted change had folded
        sequence ``at`` (see `mesa._history`; ``at=0`` is the change's base tree).
        """
        if at is not None:
            return await read_at(self._repos, path, at)
        r = self._resolve(path, follow=True)
        if not isinstance(r.node, FileNode) or r.repo is None:
            raise os_error(errno.EISDIR, path)
        return await r.repo.blobs.value_bytes(r.node.value)

    async def write(self, path: str, content: bytes | bytearray | memoryview | str) -> None:
        """Replace a file's contents, creating it if missing; its parent must exist."""
        self._check_file_path(path)
        await self._put(path, content_arg(content), append=False)

    async def append(self, path: str, content: bytes | bytearray | memoryview | str) -> None:
        """Append bytes to a file, creating it if missing."""
        self._check_file_path(path)
        await self._put(path, content_arg(content), append=True)

    def _check_file_path(self, path: str) -> None:
        """A file cannot be written at a path that names a directory (``x/``): EISDIR."""
        if isinstance(path, str) and _dir_syntax(path):
            # open(2) with O_CREAT: the parents must resolve (ENOENT, ENOTDIR), then a
            # name in directory form is EISDIR whatever is there.
            stem = path.rstrip("/")
            if _last_is_dot(stem):
                stem = stem.rsplit("/", 1)[0] + "/"
            self._resolve(stem or "/", follow=True, missing_ok=not stem.endswith("/"))
            raise os_error(errno.EISDIR, path)

    async def _read_versioned(self, path: str) -> tuple[bytes, int]:
        """Read a file and the sequence of its change the bytes are the state of.

        For writers that derive bytes from what they read (``mesa web``'s rooms): pass
        the sequence back as ``seen`` to `_write_derived`, so a write that landed in
        between races theirs (a conflict) instead of being silently replaced.
        """
        r = self._resolve(path, follow=True)
        if not isinstance(r.node, FileNode) or r.repo is None:
            raise os_error(errno.EISDIR, path)
        seq = r.repo.replica.seq  # the node above is this sequence's (no await between)
        return await r.repo.blobs.value_bytes(r.node.value), seq

    async def _write_derived(self, path: str, content: bytes, *, seen: int) -> None:
        """Write bytes derived from the file as it was at sequence ``seen`` (see above)."""
        self._check_file_path(path)
        await self._put(path, content_arg(content), append=False, seen=seen)

    async def _put(
        self,
        path: str,
        content: bytes | bytearray | memoryview | str,
        *,
        append: bool,
        seen: int | None = None,
    ) -> None:
        data = _as_bytes(content)
        r = self._resolve(path, follow=True, missing_ok=True)
        if (r.is_dir and r.node is not None) or len(r.parts) < 3:
            raise os_error(errno.EISDIR, path)
        repo = self._in_repo(r, path)
        if repo.read_only:
            raise os_error(errno.EROFS, path)
        value = await self._content(repo, data, path)
        op: Op = Append(r.rel, value) if append else Write(r.rel, value)
        await self._submit(repo, op, path, seen=seen)

    async def exists(self, path: str) -> bool:
        """Return whether ``path`` exists, following symlinks (dangling ones are False)."""
        try:
            self._resolve(path, follow=True)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return False
            raise
        return True

    # -- metadata and traversal --------------------------------------------------------

    async def stat(self, path: str) -> FsStat:
        """Return metadata, following symlinks."""
        return await self._stat(self._resolve(path, follow=True))

    async def lstat(self, path: str) -> FsStat:
        """Return metadata without following a final symlink."""
        return await self._stat(self._resolve(path, follow=False))

    async def _stat(self, r: _Resolved) -> FsStat:
        node = r.node
        if node is None:
            return _dir_stat(0o755, 0)
        if isinstance(node, FileNode):
            assert r.repo is not None
            value = node.value
            if value.is_resolved():
                only = value.adds[0]
                size = only.size if only is not None else 0
            else:
                size = len(await r.repo.blobs.value_bytes(value))
            return FsStat(
                is_file=True,
                is_directory=False,
                is_symbolic_link=False,
                mode=node.mode,
                size=size,
                mtime_ms=float(node.mtime_ms),
            )
        if isinstance(node, SymlinkNode):
            size = len(node.target.encode("utf-8", "surrogateescape"))
            return FsStat(
                is_file=False,
                is_directory=False,
                is_symbolic_link=True,
                mode=node.mode,
                size=size,
                mtime_ms=float(node.mtime_ms),
            )
        return _dir_stat(node.mode, node.mtime_ms)

    async def readdir(self, path: str) -> list[str]:
        """Return the names in a directory (sorted here; do not rely on the order)."""
        r = self._resolve(path, follow=True)
        if len(r.parts) == 0:
            return [self.org]
        if len(r.parts) == 1:
            return sorted(self._repos)
        if not isinstance(r.node, DirNode):
            raise os_error(errno.ENOTDIR, path)
        return sorted(r.node.children)

    async def realpath(self, path: str) -> str:
        """Resolve symlinks and ``..`` to the canonical absolute path."""
        return self._resolve(path, follow=True).abs

    async def readlink(self, path: str) -> str:
        """Return the target of a symlink (``EINVAL`` if it is not one)."""
        r = self._resolve(path, follow=False)
        if not isinstance(r.node, SymlinkNode):
            raise os_error(errno.EINVAL, path)
        return r.node.target

    def resolve_path(self, base: str, path: str) -> str:
        """Join and normalize ``path`` against ``base`` without touching the filesystem."""
        return paths.join(base, path)

    # -- mutations ---------------------------------------------------------------------

    async def mkdir(self, path: str, recursive: bool | None = None) -> None:  # noqa: FBT001 (spec)
        """Create a directory; ``recursive`` creates parents and accepts an existing directory."""
        if not path_arg(path).startswith("/"):
            raise self._repos.relative(path)
        if recursive:
            await self._mkdir_parents(path)
            return
        r = self._resolve(path, follow=False, missing_ok=True)
        if r.node is not None or len(r.parts) < 3:
            raise os_error(errno.EEXIST, path)
        await self._submit(self._in_repo(r, path), Mkdir(r.rel), path)

    async def _mkdir_parents(self, path: str) -> None:
        """``mkdir -p``: make each missing prefix of ``path`` in turn, as ``os.makedirs`` does.

        Each prefix is resolved like mkdir(2) resolves its path, so a dangling symlink
        in the way is not created through (ENOENT, or EEXIST as the last component),
        and ``x/../y`` makes ``x`` too. Once the rest below a missing prefix is plain
        names, one op makes all of it.
        """
        comps = [p for p in path.split("/") if p not in ("", ".")]
        for i in range(1, len(comps) + 1):
            prefix = "/" + "/".join(comps[:i])
            r = self._resolve(prefix, follow=False, missing_ok=True)
            if r.node is None and len(r.parts) >= 3:
                rest = comps[i:]
                repo = self._in_repo(r, path)
                if ".." not in rest:
                    await self._submit(repo, Mkdir((*r.rel, *rest), parents=True), path)
                    return
                await self._submit(repo, Mkdir(r.rel), path)
                continue
            if i == len(comps) and not self._is_dir(prefix):
                raise os_error(errno.EEXIST, path)

    def _is_dir(self, path: str) -> bool:
        try:
            return self._resolve(path, follow=True).is_dir
        except OSError:
            return False

    async def rm(
        self,
        path: str,
        recursive: bool | None = None,  # noqa: FBT001 (the spec's signature)
        force: bool | None = None,  # noqa: FBT001
    ) -> None:
        """Remove a file or directory (``recursive``: non-empty too; ``force``: ignore missing)."""
        if _last_is_dot(path_arg(path)):
            raise os_error(errno.EINVAL, path, "refusing to remove '.' or '..'")
        try:
            r = self._resolve(path, follow=False, missing_ok=True)
        except FileNotFoundError:
            if force:
                return
            raise
        if r.node is None and len(r.parts) >= 3:
            if force:
                return
            raise os_error(errno.ENOENT, path)
        repo = self._in_repo(r, path, root_errno=errno.EBUSY)
        await self._submit(repo, Rm(r.rel, recursive=bool(recursive)), path)

    async def cp(self, src: str, dest: str, recursive: bool | None = None) -> None:  # noqa: FBT001
        """Copy a file, or a directory with ``recursive``; symlinks inside stay symlinks."""
        rs = self._resolve(src, follow=True)
        if rs.is_dir and not recursive:
            # The source is checked before the destination is looked at (cp(1), copyfile).
            raise os_error(errno.EISDIR, src)
        if not rs.is_dir and _dir_syntax(path_arg(dest, "dest")):
            # A file cannot land at a path that names a directory (cp(1): ENOTDIR).
            self._resolve(dest, follow=True, missing_ok=True)
            raise os_error(errno.ENOTDIR, dest)
        # A file is written through a symlink at ``dest`` (open(2)); a directory copy
        # makes ``dest`` as mkdir(2) does, so a symlink there, even dangling, is EEXIST.
        rd = self._resolve(dest, follow=not rs.is_dir, missing_ok=True)
        if len(rs.parts) == 2 and rs.repo is not None and rs.repo is rd.repo:
            # Every path of a repo is inside its root: copying the root there is
            # copying a directory into itself, EINVAL as for any other directory.
            raise os_error(errno.EINVAL, dest, "cannot copy a directory into itself")
        src_repo = self._in_repo(rs, src)
        dst_repo = self._in_repo(rd, dest)
        if src_repo is dst_repo:
            await self._submit(src_repo, Cp(rs.rel, rd.rel, recursive=bool(recursive)), dest)
            return
        if rd.node is not None and (isinstance(rs.node, DirNode) or isinstance(rd.node, DirNode)):
            raise os_error(errno.EEXIST if isinstance(rs.node, DirNode) else errno.EISDIR, dest)
        assert rs.node is not None
        await self._copy_across(src_repo, rs.node, dst_repo, rd.rel, dest)

    async def _copy_across(
        self, src_repo: RepoMount, node: AnyNode, dst_repo: RepoMount, rel: paths.RelPath, dest: str
    ) -> None:
        """Copy a subtree into another repo, one op per node (not atomic).

        Nodes go in sorted pre-order, walked with an explicit stack (any depth). Each
        node's metadata follows it (one more op, replacing what the destination had,
        as a copy within a repo does); a conflicted key is copied as the block it
        reads as, as a conflicted file is copied as its bytes.
        """
        stack: list[tuple[AnyNode, paths.RelPath]] = [(node, rel)]
        while stack:
            node, rel = stack.pop()
            if isinstance(node, FileNode):
                data = await src_repo.blobs.value_bytes(node.value)
                value = await self._content(dst_repo, data, dest)
                await self._submit(dst_repo, Write(rel, value, mode=node.mode), dest)
            elif isinstance(node, SymlinkNode):
                await self._submit(dst_repo, Symlink(rel, node.target), dest)
            else:
                await self._submit(dst_repo, Mkdir(rel, mode=node.mode), dest)
                children = node.children
                stack.extend((children[n], (*rel, n)) for n in sorted(children, reverse=True))
            items = _copied_metadata(node, dest)
            await self._submit(dst_repo, SetMetadata(rel, items, clear=True), dest)

    async def mv(self, src: str, dest: str) -> None:
        """Move or rename with rename(2) semantics (``EXDEV`` across repos)."""
        # rename(2) looks up both parents before the source itself: a bad destination
        # directory is reported even when the source is missing.
        rs = self._resolve(src, follow=False, missing_ok=True, dir_check=False)
        rd = self._resolve(dest, follow=False, missing_ok=True, dir_check=False)
        for value in (src, dest):
            # After both parents resolve and before the source is looked up (rename(2)).
            if _last_is_dot(value):
                raise os_error(errno.EBUSY, value, "cannot rename '.' or '..'")
        if rs.node is None and len(rs.parts) >= 3:
            raise os_error(errno.ENOENT, src)
        if not rs.is_dir:
            # A non-directory cannot be named, or renamed to, in directory form.
            for value in (src, dest):
                if _dir_syntax(value):
                    raise os_error(errno.ENOTDIR, value)
        src_repo = self._in_repo(rs, src, root_errno=errno.EBUSY)
        dst_repo = self._in_repo(rd, dest, root_errno=errno.EBUSY)
        if src_repo is not dst_repo:
            raise os_error(errno.EXDEV, dest)
        await self._submit(src_repo, Mv(rs.rel, rd.rel), dest)

    async def chmod(self, path: str, mode: int) -> None:
        """Set permission bits, such as ``0o755``."""
        mode = mode_arg(mode)
        r = self._resolve(path, follow=True)
        repo = r.repo
        if repo is None:
            raise os_error(errno.EPERM, path)
        await self._submit(repo, Chmod(r.rel, mode), path)

    async def symlink(self, target: str, path: str) -> None:
        """Create a symlink at ``path``; relative targets resolve against its parent when read."""
        path_arg(target, "target")
        if isinstance(path, str) and _dir_syntax(path):
            raise os_error(errno.ENOENT, path, "a symlink cannot be made at a directory path")
        r = self._resolve(path, follow=False, missing_ok=True)
        if r.node is not None or len(r.parts) < 3:
            raise os_error(errno.EEXIST, path)
        await self._submit(self._in_repo(r, path), Symlink(r.rel, target), path)

    async def utimes(self, path: str, atime_ms: float, mtime_ms: float) -> None:
        """Set access and modification times, in milliseconds since the epoch.

        Times are limited to what a 64-bit nanosecond timestamp holds (`mesa._args`).
        """
        atime = time_arg(atime_ms, "atime_ms")
        mtime = time_arg(mtime_ms, "mtime_ms")
        r = self._resolve(path, follow=True)
        if r.repo is None:
            raise os_error(errno.EPERM, path)
        await self._submit(r.repo, Utimes(r.rel, atime, mtime), path)

    async def link(self, existing_path: str, new_path: str) -> None:
        """Hard links are not supported: always raises `NotImplementedError`."""
        raise NotImplementedError("hard links are not supported")

    # -- per-file metadata -------------------------------------------------------------

    async def set_metadata(self, path: str, metadata: Mapping[str, str | None]) -> None:
        """Merge keys into the metadata of a file or directory (symlinks are followed).

        A value of None or ``""`` deletes its key; keys not named stay. Invalid input
        (a reserved key ``org``/``repo``, a non-string value, a key or value over the
        limits of `engine.metadata`, more than `engine.metadata.MAX_KEYS` keys after
        the merge) raises `InvalidOptionsError` (a ``ValueError``) and changes nothing.
        A set that changes no value is not logged.
        """
        items = _metadata_items(metadata)
        r = self._resolve(path, follow=True)
        repo = self._metadata_repo(r, path)
        if not items:
            return
        current = r.node.meta if r.node is not None else None
        keys = set(current or {})
        keys.update(k for k, v in items if v is not None)
        keys.difference_update(k for k, v in items if v is None)
        if len(keys) > meta_rules.MAX_KEYS:
            raise InvalidOptionsError(
                f"{path}: metadata would hold {len(keys)} keys, over the limit of"
                f" {meta_rules.MAX_KEYS}"
            )
        await self._submit(repo, SetMetadata(r.rel, items), path)

    async def get_metadata(self, path: str, *, at: int | None = None) -> dict[str, str]:
        """Return the metadata of a file or directory, with read-only ``org`` and ``repo``.

        A key two racing sets left conflicted reads as its jj conflict block (as a
        conflicted file reads); the next set of the key resolves it. With ``at``, the
        metadata as it was once the mounted change had folded sequence ``at``.
        """
        if at is not None:
            rm, node = await node_at(self._repos, path, at)
            return _metadata_dict(self.org, rm.name, node)
        r = self._resolve(path, follow=True)
        if r.repo is None:
            return {"org": self.org}
        return _metadata_dict(self.org, r.repo.name, r.node or r.repo.replica.state.tree.root)

    async def clear_metadata(self, path: str) -> None:
        """Remove every metadata key of a file or directory; idempotent."""
        r = self._resolve(path, follow=True)
        repo = self._metadata_repo(r, path)
        await self._submit(repo, SetMetadata(r.rel, (), clear=True), path)

    def _metadata_repo(self, r: _Resolved, path: str) -> RepoMount:
        """The repo whose node ``r`` names (the repo root too); virtual levels: EPERM."""
        if r.repo is None:
            raise os_error(errno.EPERM, path, "the org and repo listings carry no metadata")
        if r.repo.read_only:
            raise os_error(errno.EROFS, path)
        return r.repo

    # -- bash --------------------------------------------------------------------------

    def bash(
        self, *, env: dict[str, str] | None = None, cwd: str = "/", timeout_ms: int = 30000
    ) -> Bash:
        """A bash session over this mount (no host process; writes are mesafs writes).

        See `mesa._bash` and docs/bash.md: ``await bash.exec(script)`` returns an
        `ExecResult`; past ``timeout_ms`` a script exits 124, never raising.
        """
        self._check()
        return Bash(self, env=env, cwd=cwd, timeout_ms=timeout_ms)

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(self, handler: Handler) -> MesaFileSystemSubscription:
        """Call ``handler`` with each `WatchEvent`, after the change is visible here."""
        if not callable(handler):
            raise TypeError("handler must be callable")
        self._check()
        if self._closing:
            raise OSError(errno.EBADF, "the mount is closing")
        sub = MesaFileSystemSubscription(self, handler)
        self._subs.append(sub)
        return sub

    def _remove_subscription(self, sub: MesaFileSystemSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)


class MesaFileSystemSubscription:
    """A running subscription: events queue here and one task calls the handler in order."""

    def __init__(self, fs: MesaFileSystem, handler: Handler) -> None:
        self._fs = fs
        self._handler = handler
        self._queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="mesa-subscription")

    def push(self, events: list[WatchEvent]) -> None:
        """Queue events (called right after the fold that produced them)."""
        for event in events:
            self._queue.put_nowait(event)

    async def _run(self) -> None:
        while (event := await self._queue.get()) is not None:
            try:
                result = self._handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("subscription handler failed on %s", event)

    async def unsubscribe(self) -> None:
        """Stop receiving events and close the watcher (also from inside the handler)."""
        self._fs._remove_subscription(self)
        if asyncio.current_task() is self._task:
            # Called by our own handler: finish this call, then stop; cancelling and
            # awaiting ourselves would never return.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def drain_and_stop(self) -> None:
        """Deliver what is queued, then stop (used when the mount closes)."""
        self._fs._remove_subscription(self)
        self._queue.put_nowait(None)
        await asyncio.gather(self._task, return_exceptions=True)


def _metadata_items(items: object) -> tuple[tuple[str, str | None], ...]:
    """Check a ``set_metadata`` mapping; return its items sorted, "" as None (delete)."""
    if not isinstance(items, Mapping):
        raise InvalidOptionsError(
            f"metadata must be a mapping of str to str or None, not {type(items).__name__}"
        )
    if len(items) > meta_rules.MAX_KEYS:
        raise InvalidOptionsError(
            f"a set names {len(items)} metadata keys, over the limit of {meta_rules.MAX_KEYS}"
        )
    try:
        checked = [
            (meta_rules.check_key(k), meta_rules.check_value(k, v)) for k, v in items.items()
        ]
    except InvalidInputError as exc:
        raise InvalidOptionsError(str(exc)) from None
    return tuple(sorted(checked))


def _copied_metadata(node: AnyNode, dest: str) -> tuple[tuple[str, str | None], ...]:
    """The metadata items a copy into another repo sets (every key, as it reads)."""
    items: list[tuple[str, str | None]] = []
    for key in sorted(node.meta or {}):
        text = meta_rules.render((node.meta or {})[key].value)
        try:
            items.append((key, meta_rules.check_value(key, text)))
        except InvalidInputError as exc:
            raise os_error(errno.E2BIG, dest, f"cannot copy metadata across repos: {exc}") from None
    return tuple(items)


def _metadata_dict(org: str, repo: str, node: AnyNode) -> dict[str, str]:
    out = {"org": org, "repo": repo}
    meta = node.meta or {}
    for key in sorted(meta):
        out[key] = meta_rules.render(meta[key].value)
    return out


def _dir_syntax(path: str) -> bool:
    """Whether ``path`` names a directory by its form: a trailing "/", "." or ".."."""
    return path.endswith("/") or _last_is_dot(path)


def _last_is_dot(path: str) -> bool:
    """Whether the last component of ``path`` is "." or ".." (trailing slashes ignored)."""
    parts = [p for p in path.split("/") if p]
    return bool(parts) and parts[-1] in (".", "..")


def _dir_stat(mode: int, mtime_ms: int) -> FsStat:
    return FsStat(
        is_file=False,
        is_directory=True,
        is_symbolic_link=False,
        mode=mode,
        size=0,
        mtime_ms=float(mtime_ms),
    )


def _as_bytes(content: bytes | bytearray | memoryview | str) -> bytes | memoryview:
    """Return the bytes to write: ``bytes`` as is, a flat byte view of a buffer (no copy)."""
    if isinstance(content, str):
        return content.encode("utf-8")
    if isinstance(content, bytes):
        return content
    if isinstance(content, bytearray | memoryview):
        view = memoryview(content)
        if view.c_contiguous:
            return view.cast("B") if view.format != "B" or view.ndim != 1 else view
        return bytes(content)
    raise TypeError(f"content must be bytes or str, not {type(content).__name__}")


__all__ = ["FsError", "MesaFileSystem", "MesaFileSystemSubscription"]
