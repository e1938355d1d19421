"""The benchmark's FUSE floor: a plain in-memory filesystem on the same FUSE stack.

``python -m simulations.bench.fuse_floor MOUNTPOINT`` serves an empty directory from
memory through pyfuse3 in asyncio mode, with the options, cache timeouts and reply
shapes of the mesafs mount (``default_permissions``, readdirplus, hour-long entry and
attribute timeouts from `mesa.fuse.tuning`, cached negative lookups, ``keep_cache``),
and nothing else: no log, no NATS, no fold. What a workload costs on it is what the
kernel's FUSE round trips and pyfuse3 cost on this machine; the benchmark sets the
mount's figures beside it, so the share of the slowdown that mesafs adds is a ratio
measured in the same run.

It supports what the benchmark's workloads do (tar, git, reads and writes) and is
not part of the product: no persistence, one process, nothing shared.

`build_native_null` compiles the kernel's floor under both: a C libfuse filesystem
that answers every lookup "no such name" (``NATIVE_NULL_C``), so the benchmark can
show what one FUSE round trip costs without Python.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import itertools
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.paths import NAME_MAX_BYTES
from mesa.fuse.tuning import BLKSIZE, DEFAULT_CACHE_TIMEOUT_S

pyfuse3: Any = importlib.import_module("pyfuse3")

#: The mount's own values, so the floor differs from it only in what serves requests.
TIMEOUT_S = DEFAULT_CACHE_TIMEOUT_S


def _error(code: int) -> Exception:
    exc: Exception = pyfuse3.FUSEError(code)
    return exc


@dataclass(eq=False)
class _Node:
    mode: int
    data: bytearray = field(default_factory=bytearray)
    children: dict[bytes, int] | None = None
    target: bytes = b""
    atime_ns: int = field(default_factory=time.time_ns)
    mtime_ns: int = field(default_factory=time.time_ns)
    nlink: int = 1
    lookups: int = 0


class FloorOperations:
    """The request handlers (mixed into ``pyfuse3.Operations`` by `operations`)."""

    supports_dot_lookup = False
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self) -> None:
        root = _Node(stat.S_IFDIR | 0o755, children={}, nlink=2)
        self.nodes: dict[int, _Node] = {pyfuse3.ROOT_INODE: root}
        self.parents: dict[int, int] = {pyfuse3.ROOT_INODE: pyfuse3.ROOT_INODE}
        self._inos = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._dirs: dict[int, list[tuple[bytes, int]]] = {}
        self._fhs = itertools.count(1)
        self.uid, self.gid = os.getuid(), os.getgid()

    def init(self) -> None:
        """Called by pyfuse3 before the first request."""

    def _node(self, ino: int) -> _Node:
        node = self.nodes.get(ino)
        if node is None:
            raise _error(errno.ESTALE)
        return node

    def _dir(self, ino: int) -> dict[bytes, int]:
        children = self._node(ino).children
        if children is None:
            raise _error(errno.ENOTDIR)
        return children

    def _attrs(self, ino: int) -> Any:
        node = self._node(ino)
        attr = pyfuse3.EntryAttributes()
        attr.st_ino = ino
        attr.entry_timeout = attr.attr_timeout = TIMEOUT_S
        attr.st_mode, attr.st_nlink = node.mode, node.nlink
        attr.st_uid, attr.st_gid = self.uid, self.gid
        attr.st_size = len(node.target) if stat.S_ISLNK(node.mode) else len(node.data)
        attr.st_blksize = BLKSIZE
        attr.st_blocks = (attr.st_size + 511) // 512
        attr.st_atime_ns = node.atime_ns
        attr.st_mtime_ns = attr.st_ctime_ns = node.mtime_ns
        return attr

    def _add(self, parent: int, name: bytes, node: _Node) -> Any:
        children = self._dir(parent)
        if name in children:
            raise _error(errno.EEXIST)
        ino = next(self._inos)
        self.nodes[ino] = node
        self.parents[ino] = parent
        children[name] = ino
        self._node(parent).mtime_ns = time.time_ns()
        node.lookups += 1
        return self._attrs(ino)

    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> Any:
        """Look up a name (a negative reply is cached for the entry timeout)."""
        ino = self._dir(parent).get(name)
        if ino is None:
            attr = pyfuse3.EntryAttributes()
            attr.st_ino = 0
            attr.entry_timeout = TIMEOUT_S
            return attr
        self.nodes[ino].lookups += 1
        return self._attrs(ino)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """Drop nodes the kernel forgot once nothing names them."""
        for ino, count in inode_list:
            node = self.nodes.get(ino)
            if node is None:
                continue
            node.lookups -= count
            if node.lookups <= 0 and node.nlink == 0:
                del self.nodes[ino]
                self.parents.pop(ino, None)

    async def getattr(self, ino: int, ctx: Any = None) -> Any:
        """Return a node's attributes."""
        return self._attrs(ino)

    async def setattr(self, ino: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> Any:
        """chmod, truncate and utimens (ownership is not kept)."""
        node = self._node(ino)
        if fields.update_size:
            del node.data[attr.st_size :]
            node.data.extend(bytes(attr.st_size - len(node.data)))
            node.mtime_ns = time.time_ns()
        if fields.update_mode:
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        return self._attrs(ino)

    async def readlink(self, ino: int, ctx: Any = None) -> bytes:
        """Return a symlink's target."""
        return self._node(ino).target

    async def statfs(self, ctx: Any = None) -> Any:
        """Report a large, mostly free filesystem."""
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 4096
        st.f_blocks = st.f_bfree = st.f_bavail = 1 << 32
        st.f_files = st.f_ffree = st.f_favail = 1 << 32
        st.f_namemax = NAME_MAX_BYTES
        return st

    async def opendir(self, ino: int, ctx: Any = None) -> int:
        """Open a directory; its listing is taken now."""
        fh = next(self._fhs)
        self._dirs[fh] = sorted(self._dir(ino).items())
        return fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        """List entries with attributes (readdirplus)."""
        entries = self._dirs[fh]
        for index in range(start_id, len(entries)):
            name, ino = entries[index]
            if ino not in self.nodes:
                continue
            if not pyfuse3.readdir_reply(token, name, self._attrs(ino), index + 1):
                return
            self.nodes[ino].lookups += 1

    async def releasedir(self, fh: int) -> None:
        """Drop a directory handle."""
        self._dirs.pop(fh, None)

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> Any:
        """Make a directory."""
        return self._add(parent, name, _Node(stat.S_IFDIR | (mode & 0o7777), children={}, nlink=2))

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Any) -> Any:
        """Make a symlink."""
        return self._add(parent, name, _Node(stat.S_IFLNK | 0o777, target=target))

    async def _remove(self, parent: int, name: bytes, *, directory: bool) -> None:
        children = self._dir(parent)
        ino = children.get(name)
        if ino is None:
            raise _error(errno.ENOENT)
        node = self.nodes[ino]
        if directory and node.children is None:
            raise _error(errno.ENOTDIR)
        if not directory and node.children is not None:
            raise _error(errno.EISDIR)
        if node.children:
            raise _error(errno.ENOTEMPTY)
        del children[name]
        node.nlink = 0
        self._node(parent).mtime_ns = time.time_ns()

    async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
        """Remove a file or symlink."""
        await self._remove(parent, name, directory=False)

    async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        """Remove an empty directory."""
        await self._remove(parent, name, directory=True)

    async def rename(
        self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int, ctx: Any
    ) -> None:
        """Rename, replacing a file or an empty directory at the target."""
        if flags:
            raise _error(errno.EINVAL)
        source = self._dir(old_parent)
        ino = source.get(old)
        if ino is None:
            raise _error(errno.ENOENT)
        target = self._dir(new_parent)
        replaced = target.get(new)
        if replaced is not None and replaced != ino:
            await self._remove(new_parent, new, directory=self.nodes[replaced].children is not None)
        del source[old]
        target[new] = ino
        self.parents[ino] = new_parent

    async def link(self, ino: int, parent: int, name: bytes, ctx: Any) -> Any:
        """Hard links are refused, as on the mount."""
        raise _error(errno.EPERM)

    async def open(self, ino: int, flags: int, ctx: Any) -> Any:
        """Open a file (its page cache is kept)."""
        node = self._node(ino)
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            node.data.clear()
        return pyfuse3.FileInfo(fh=ino, keep_cache=True)

    async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        """Create and open a file."""
        attrs = self._add(parent, name, _Node(stat.S_IFREG | (mode & 0o7777)))
        return pyfuse3.FileInfo(fh=attrs.st_ino, keep_cache=True), attrs

    async def read(self, fh: int, offset: int, size: int) -> bytes:
        """Read from a file."""
        return bytes(self._node(fh).data[offset : offset + size])

    async def write(self, fh: int, offset: int, buf: bytes) -> int:
        """Write into a file."""
        node = self._node(fh)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(buf)] = buf
        node.mtime_ns = time.time_ns()
        return len(buf)

    async def flush(self, fh: int) -> None:
        """Nothing to publish."""

    async def fsync(self, fh: int, datasync: bool) -> None:  # noqa: FBT001
        """Nothing to make durable."""

    async def fsyncdir(self, fh: int, datasync: bool) -> None:  # noqa: FBT001
        """Nothing to make durable."""

    async def release(self, fh: int) -> None:
        """Nothing to drop (the handle is the inode number)."""


NATIVE_NULL_C = r"""
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void null_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    e.entry_timeout = 3600.0;  /* a cached negative entry, as the Python filesystems */
    fuse_reply_entry(req, &e);
}

static void null_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_ino = ino;
    st.st_mode = S_IFDIR | 0755;
    st.st_nlink = 2;
    fuse_reply_attr(req, &st, 3600.0);
}

static const struct fuse_lowlevel_ops ops = {.lookup = null_lookup, .getattr = null_getattr};

int main(int argc, char *argv[]) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct fuse_cmdline_opts opts;
    if (fuse_parse_cmdline(&args, &opts) != 0 || opts.mountpoint == NULL) return 2;
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (se == NULL || fuse_session_mount(se, opts.mountpoint) != 0) return 1;
    printf("mounted null at %s\n", opts.mountpoint);
    fflush(stdout);
    int ret = fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return ret;
}
"""


def build_native_null(workdir: Path) -> tuple[Path | None, str]:
    """Compile `NATIVE_NULL_C` in ``workdir``: (the program, "") or (None, why not)."""
    cc, pkg_config = shutil.which("gcc") or shutil.which("cc"), shutil.which("pkg-config")
    if cc is None or pkg_config is None:
        return None, "no C compiler or pkg-config"
    flags = subprocess.run(
        [pkg_config, "--cflags", "--libs", "fuse3"], capture_output=True, text=True, check=False
    )
    if flags.returncode != 0:
        return None, "libfuse3 development files are missing (apt install libfuse3-dev)"
    source, program = workdir / "nullfs.c", workdir / "nullfs"
    source.write_text(NATIVE_NULL_C)
    built = subprocess.run(
        [cc, "-O2", str(source), "-o", str(program), *flags.stdout.split()],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        return None, f"compiling failed: {built.stderr.strip()[:300]}"
    return program, ""


def operations() -> Any:
    """Return a ``pyfuse3.Operations`` serving an empty in-memory directory."""
    cls = type("FloorOperations", (FloorOperations, pyfuse3.Operations), {})
    return cls()


async def serve(mountpoint: str) -> None:
    """Mount, say so on stdout, and serve until unmounted (pyfuse3 in asyncio mode)."""
    importlib.import_module("pyfuse3.asyncio").enable()
    pyfuse3.init(operations(), mountpoint, {"fsname=mesa-floor", "default_permissions"})
    sys.stdout.write(f"mounted floor at {mountpoint}\n")
    sys.stdout.flush()
    try:
        await pyfuse3.main()
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
