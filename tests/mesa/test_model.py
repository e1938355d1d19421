"""Model-based test: `MesaFileSystem` against a real directory.

A Hypothesis state machine applies the same random single-writer operations to a
mount (memory transport) and to a real temporary directory, on a small path
alphabet so that collisions, ``..`` components and symlinks in the way are
frequent. Each operation must succeed on both sides or fail on both with the same
errno, return the same result, and leave the same tree: paths, kinds, bytes,
symlink targets, permission bits, and the mtime of files whose mtime was last set
by ``utimes``.

The real side is POSIX through Python's ``os``/``shutil`` (see ``_Real``). Where a
Python helper differs from the syscall or tool it stands for, the model follows
the syscall/tool and says so next to the code: ``shutil.SameFileError`` (no errno)
is EINVAL; a directory copy does not make the destination's parents and refuses
to copy into itself (``cp -r``, where ``copytree`` would do both); ``realpath``
gets the kernel's errno for ``file/..`` (``os.path.realpath`` folds it lexically).

Excluded on purpose, because they are documented differences rather than bugs:

- directory sizes and mtimes, and atimes (not replicated state);
- mutations whose target is the repo root itself, and operations whose path
  resolution would leave the repo (``..`` above ``/acme/app``): the real directory
  has no ``/acme`` level to mirror;
- permission errors: the tests may run as root, where ``os.access`` always passes;
- paths ending in ``..`` for mutations (rmdir/rename of ``x/..`` are Linux quirks);
- mutations of a symlink named in directory form (``link/``): rm(1) follows it, the
  syscalls do not (the SDK does what the syscalls do: ENOTDIR).

Paths in directory form (a trailing ``/``, a last ``.``) are generated for write,
rm, mv and chmod: a file there is ENOTDIR, a write there EISDIR, a rename of ``.``
EBUSY, an rm of ``.`` EINVAL (as rm(1) refuses it).

"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from mesa_sdk import Mesa
from transports.auth import Keyring, generate_key
from transports.base import SystemClock
from transports.memory import MemoryTransport

KEY = generate_key()
ROOT = "/acme/app"
NAMES = ["a", "b", "c", "d"]
MODES = [0o600, 0o644, 0o755, 0o700]
MAX_HOPS = 40
BIG = b"B" * (64 * 1024 + 1)  # above the inline threshold: goes through the blob store

names = st.sampled_from(NAMES)
contents = st.binary(max_size=6)
bigs = st.sampled_from([False] * 7 + [True])  # sometimes write BIG instead
times_ms = st.integers(min_value=0, max_value=4_000_000_000_000)


@st.composite
def rel_paths(draw: st.DrawFn, *, final_dotdot: bool = False, dir_forms: bool = False) -> str:
    """A path below the root: 1-3 names, sometimes with ``..`` between two of them.

    ``final_dotdot`` (read-only operations only) may also end the path with ``..``;
    mutations never end in ``..`` (rmdir/rename of ``x/..`` are Linux-specific).
    ``dir_forms`` sometimes ends the path as a directory name does: a trailing ``/``
    or a last ``.`` (the kernel then wants a directory there: ENOTDIR for a file).
    """
    depth = draw(st.sampled_from([1, 1, 1, 2, 2, 3]))  # shallow paths collide more
    comps = [draw(names) for _ in range(depth)]
    if len(comps) > 1 and draw(st.integers(0, 3)) == 0:
        comps.insert(draw(st.integers(1, len(comps) - 1)), "..")
    if final_dotdot and draw(st.integers(0, 5)) == 0:
        comps.append("..")
    path = "/".join(comps)
    if dir_forms:
        path += draw(st.sampled_from(["", "", "", "", "/", "/."]))
    return path


# Relative targets only: names, ".", "..", dangling ones, links to directories.
link_targets = st.one_of(
    names,
    st.lists(st.sampled_from([*NAMES, "..", "."]), min_size=1, max_size=3).map("/".join),
)

OK, ESCAPE, AT_ROOT = "ok", "escape", "root"


class _Real:
    """The real directory's side of each operation (POSIX through ``os``/``shutil``)."""

    def __init__(self, top: str) -> None:
        self.top = top

    def path(self, rel: str) -> str:
        return os.path.join(self.top, rel)

    def unreal(self, real: str) -> str:
        rel = os.path.relpath(real, self.top)
        assert not rel.startswith(".."), real
        return ROOT if rel == "." else f"{ROOT}/{rel}"

    def classify(self, rel: str, *, follow: bool, create: bool = False) -> str:
        """Say where resolving ``rel`` goes: above the root, to the root, or ``OK``.

        Walks the real tree component by component like the kernel (symlinks
        expanded, ``..`` physical). ``create`` treats missing components as
        directories about to be made (``os.makedirs`` walks on through them).
        A resolution that fails on the way is ``OK``: both sides then report it.
        """
        queue = deque(c for c in rel.split("/") if c not in ("", "."))
        stack: list[str] = []
        hops = 0
        while queue:
            name = queue.popleft()
            last = not queue
            if name == "..":
                if not stack:
                    return ESCAPE
                stack.pop()
                continue
            try:
                st_ = os.lstat(os.path.join(self.top, *stack, name))
            except FileNotFoundError:
                if create:
                    stack.append(name)
                    continue
                return OK
            except OSError:
                return OK
            if stat.S_ISLNK(st_.st_mode) and (follow or not last):
                hops += 1
                if hops > MAX_HOPS:
                    return OK
                target = os.readlink(os.path.join(self.top, *stack, name))
                assert not target.startswith("/")
                queue.extendleft(reversed([c for c in target.split("/") if c not in ("", ".")]))
                continue
            stack.append(name)
            if not last and not stat.S_ISDIR(st_.st_mode):
                return OK
        return OK if stack else AT_ROOT

    # -- operations -----------------------------------------------------------------

    def put(self, rel: str, data: bytes, mode: str) -> None:
        with open(self.path(rel), mode) as f:
            f.write(data)

    def read(self, rel: str) -> bytes:
        with open(self.path(rel), "rb") as f:
            return f.read()

    def mkdir(self, rel: str, recursive: bool) -> None:
        if recursive:
            os.makedirs(self.path(rel), exist_ok=True)
        else:
            os.mkdir(self.path(rel))

    def rm(self, rel: str, recursive: bool, force: bool) -> None:
        p = self.path(rel)
        if rel.rstrip("/").split("/")[-1] in (".", ".."):
            # rm(1) refuses "." and ".." before touching anything (shutil.rmtree of
            # "d/." would empty d first); the SDK does the same, with EINVAL.
            raise OSError(errno.EINVAL, "refusing to remove '.' or '..'", p)
        try:
            st_ = os.lstat(p)
        except FileNotFoundError:
            if force:
                return
            raise
        if not stat.S_ISDIR(st_.st_mode):
            os.unlink(p)  # a file, or a symlink (even one to a directory): the link only
        elif recursive:
            shutil.rmtree(p)
        else:
            os.rmdir(p)

    def cp(self, src_rel: str, dst_rel: str, recursive: bool) -> None:
        src, dst = self.path(src_rel), self.path(dst_rel)
        if not stat.S_ISDIR(os.stat(src).st_mode):
            try:
                shutil.copyfile(src, dst)
            except shutil.SameFileError:
                # shutil's SameFileError has no errno; the SDK (like Node's fs.cp)
                # reports EINVAL for copying a file onto itself.
                raise OSError(errno.EINVAL, "same file", dst) from None
            shutil.copymode(src, dst)
            return
        if not recursive:
            raise OSError(errno.EISDIR, "is a directory", src)
        # A directory copy makes ``dst`` with mkdir(2) semantics, like ``cp -r``: its
        # parent must exist (shutil.copytree would makedirs the parents, unlike the
        # SDK's file copy and ``cp -r``) and any existing name, even a dangling
        # symlink, is EEXIST.
        try:
            os.lstat(dst)
            exists = True
        except FileNotFoundError:
            os.stat(os.path.dirname(dst))  # the kernel's error for a missing parent
            exists = False
        src_real = os.path.realpath(src, strict=True)
        dst_real = os.path.join(
            os.path.realpath(os.path.dirname(dst), strict=True), os.path.basename(dst)
        )
        if dst_real == src_real or dst_real.startswith(src_real + "/"):
            # copytree would copy into its own subtree; cp(1) refuses ("cannot copy a
            # directory into itself") and so does the SDK, with EINVAL.
            raise OSError(errno.EINVAL, "cannot copy a directory into itself", dst)
        if exists:
            raise OSError(errno.EEXIST, "exists", dst)
        shutil.copytree(src, dst, symlinks=True)

    def realpath(self, rel: str) -> str:
        p = self.path(rel)
        # os.path.realpath folds ".." after a non-directory lexically ("f/.." is the
        # parent of f); realpath(3) and the kernel say ENOTDIR. stat(2) first gives
        # the kernel's errno for every failing path.
        os.stat(p)
        return self.unreal(os.path.realpath(p, strict=True))


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "dir"
    assert stat.S_ISREG(mode)
    return "file"


def _sdk_path(rel: str) -> str:
    return f"{ROOT}/{rel}"


class MesaFsModel(RuleBasedStateMachine):
    """Drives a mount and a real directory with the same operations."""

    def __init__(self) -> None:
        super().__init__()
        self.old_umask = os.umask(0o022)  # new files 0o644 and dirs 0o755, as the SDK
        self.loop = asyncio.new_event_loop()
        self.top = os.path.realpath(tempfile.mkdtemp(prefix="mesa-model-"))
        os.chmod(self.top, 0o755)  # mkdtemp makes 0o700; a repo root is 0o755
        self.real = _Real(self.top)
        # Inodes of real files whose mtime was last set by utimes: only their mtimes
        # are compared (the SDK stamps other changes with the sequencer's time).
        self.utimed: set[int] = set()
        keyring = Keyring()
        keyring.add(KEY, "acme")
        self.transport = MemoryTransport(keyring, SystemClock())
        self.mesa = Mesa(org="acme", api_key=KEY, transport=self.transport)
        self.run(self.mesa.repos.create("app"))
        self.mount = self.mesa.fs.mount(repos=["app"])
        self.fs = self.run(self.mount.__aenter__())

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def teardown(self) -> None:
        try:
            self.run(self.mount.__aexit__(None, None, None))
            self.run(self.transport.aclose())
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()
            shutil.rmtree(self.top, ignore_errors=True)
            os.umask(self.old_umask)

    # -- helpers ----------------------------------------------------------------------

    def skip(self, *checks: tuple[str, bool, bool]) -> bool:
        """Return True (and note why) when a path leaves the repo or a mutation hits the root.

        Each check is ``(rel, follow, mutation)``.
        """
        for rel, follow, mutation in checks:
            stem = rel.rstrip("/").removesuffix("/.")
            if mutation and stem != rel and os.path.islink(self.real.path(stem)):
                # rm/rename of "link/": rm(1) and shutil follow the link, rename(2) and
                # rmdir(2) do not; the SDK takes the syscalls' side (ENOTDIR).
                note(f"skipped: {rel!r} is a symlink in directory form")
                event("skipped: symlink in directory form")
                return True
            where = self.real.classify(rel, follow=follow)
            if where == ESCAPE or (where == AT_ROOT and mutation):
                note(f"skipped: {rel!r} resolves {where}")
                event(f"skipped: {where}")
                return True
        return False

    def both(self, label: str, sdk: Callable[[], Awaitable[Any]], real: Callable[[], Any]) -> Any:
        """Run one operation on both sides; same errno or both succeed; return both results."""
        sdk_result = real_result = None
        sdk_error: OSError | None = None
        real_error: OSError | None = None
        try:
            sdk_result = self.run(sdk())
        except OSError as exc:
            sdk_error = exc
        try:
            real_result = real()
        except OSError as exc:
            real_error = exc
        note(f"{label}: sdk={sdk_error or sdk_result!r} real={real_error or real_result!r}")
        outcome = "ok" if real_error is None else errno.errorcode.get(real_error.errno or 0, "?")
        event(f"{label.split()[0]}: {outcome}")
        sdk_errno = None if sdk_error is None else sdk_error.errno
        real_errno = None if real_error is None else real_error.errno
        assert sdk_errno == real_errno, (
            f"{label}: errno differs: sdk raised {sdk_error!r}, real raised {real_error!r}"
        )
        assert sdk_error is None or sdk_errno is not None, f"{label}: {sdk_error!r} has no errno"
        return sdk_error is None, sdk_result, real_result

    def is_file(self, rel: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.real.path(rel)).st_mode)
        except OSError:
            return False

    def untrack(self, rel: str) -> None:
        """Forget the utimes of the file ``rel`` resolves to (its content just changed)."""
        with contextlib.suppress(OSError):
            self.utimed.discard(os.stat(self.real.path(rel)).st_ino)

    # -- mutations ----------------------------------------------------------------------

    @initialize(
        entries=st.lists(
            st.tuples(st.sampled_from(["dir", "dir", "file", "link"]), rel_paths(), link_targets),
            max_size=8,
        )
    )
    def seed(self, entries: list[tuple[str, str, str]]) -> None:
        """Start from a populated tree (on both sides), so later operations meet things."""
        for kind, path, link_to in entries:
            if kind == "dir":
                self.mkdir(path, recursive=True)
            elif kind == "file":
                self.write(path, path.encode(), big=False, append=False)
            else:
                self.symlink(link_to, path)

    @rule(path=rel_paths(dir_forms=True), data=contents, big=bigs, append=st.booleans())
    def write(self, path: str, data: bytes, big: bool, append: bool) -> None:
        if self.skip((path, True, True)):
            return
        data = BIG if big else data
        if append:
            ok, _, _ = self.both(
                f"append {path} {len(data)}B",
                lambda: self.fs.append(_sdk_path(path), data),
                lambda: self.real.put(path, data, "ab"),
            )
        else:
            ok, _, _ = self.both(
                f"write {path} {len(data)}B",
                lambda: self.fs.write(_sdk_path(path), data),
                lambda: self.real.put(path, data, "wb"),
            )
        if ok:
            self.untrack(path)

    @rule(path=rel_paths(), recursive=st.booleans())
    def mkdir(self, path: str, recursive: bool) -> None:
        where = self.real.classify(path, follow=recursive, create=recursive)
        if where != OK:
            note(f"skipped: {path!r} resolves {where}")
            event(f"skipped: {where}")
            return
        self.both(
            f"mkdir {path} recursive={recursive}",
            lambda: self.fs.mkdir(_sdk_path(path), recursive=recursive),
            lambda: self.real.mkdir(path, recursive),
        )

    @rule(path=rel_paths(dir_forms=True), recursive=st.booleans(), force=st.booleans())
    def rm(self, path: str, recursive: bool, force: bool) -> None:
        if self.skip((path, False, True)):
            return
        self.both(
            f"rm {path} recursive={recursive} force={force}",
            lambda: self.fs.rm(_sdk_path(path), recursive=recursive, force=force),
            lambda: self.real.rm(path, recursive, force),
        )

    @rule(src=rel_paths(), dst=rel_paths(), recursive=st.booleans())
    def cp(self, src: str, dst: str, recursive: bool) -> None:
        if self.skip((src, True, False), (dst, True, True), (dst, False, True)):
            return
        ok, _, _ = self.both(
            f"cp {src} {dst} recursive={recursive}",
            lambda: self.fs.cp(_sdk_path(src), _sdk_path(dst), recursive=recursive),
            lambda: self.real.cp(src, dst, recursive),
        )
        if ok:
            self.untrack(dst)

    @rule(src=rel_paths(dir_forms=True), dst=rel_paths(dir_forms=True))
    def mv(self, src: str, dst: str) -> None:
        if self.skip((src, False, True), (dst, False, True)):
            return
        self.both(
            f"mv {src} {dst}",
            lambda: self.fs.mv(_sdk_path(src), _sdk_path(dst)),
            lambda: os.rename(self.real.path(src), self.real.path(dst)),
        )

    @rule(path=rel_paths(dir_forms=True), mode=st.sampled_from(MODES))
    def chmod(self, path: str, mode: int) -> None:
        if self.skip((path, True, True)):
            return
        self.both(
            f"chmod {path} {mode:o}",
            lambda: self.fs.chmod(_sdk_path(path), mode),
            lambda: os.chmod(self.real.path(path), mode),
        )

    @rule(link_to=link_targets, path=rel_paths())
    def symlink(self, link_to: str, path: str) -> None:
        if self.skip((path, False, True)):
            return
        self.both(
            f"symlink {link_to!r} {path}",
            lambda: self.fs.symlink(link_to, _sdk_path(path)),
            lambda: os.symlink(link_to, self.real.path(path)),
        )

    @rule(path=rel_paths(), atime=times_ms, mtime=times_ms)
    def utimes(self, path: str, atime: int, mtime: int) -> None:
        if self.skip((path, True, True)):
            return
        ok, _, _ = self.both(
            f"utimes {path} {atime} {mtime}",
            lambda: self.fs.utimes(_sdk_path(path), atime, mtime),
            lambda: os.utime(self.real.path(path), ns=(atime * 1_000_000, mtime * 1_000_000)),
        )
        if ok:
            st_ = os.stat(self.real.path(path))
            if stat.S_ISREG(st_.st_mode):
                self.utimed.add(st_.st_ino)

    # -- reads ------------------------------------------------------------------------

    @rule(path=rel_paths(final_dotdot=True))
    def read(self, path: str) -> None:
        if self.skip((path, True, False)):
            return
        _, got, want = self.both(
            f"read {path}", lambda: self.fs.read(_sdk_path(path)), lambda: self.real.read(path)
        )
        assert got == want, f"read {path}: sdk {got!r} != real {want!r}"

    @rule(path=rel_paths(final_dotdot=True))
    def readdir(self, path: str) -> None:
        if self.skip((path, True, False)):
            return
        _, got, want = self.both(
            f"readdir {path}",
            lambda: self.fs.readdir(_sdk_path(path)),
            lambda: os.listdir(self.real.path(path)),
        )
        if got is not None:
            assert sorted(got) == sorted(want), f"readdir {path}: sdk {got} != real {want}"

    @rule(path=rel_paths(final_dotdot=True), follow=st.booleans())
    def stat(self, path: str, follow: bool) -> None:
        if self.skip((path, follow, False)):
            return
        p = self.real.path(path)
        _, got, want = self.both(
            f"{'stat' if follow else 'lstat'} {path}",
            lambda: self.fs.stat(_sdk_path(path)) if follow else self.fs.lstat(_sdk_path(path)),
            lambda: os.stat(p) if follow else os.lstat(p),
        )
        if got is None:
            return
        kind = _kind(want.st_mode)
        assert (got.is_file, got.is_directory, got.is_symbolic_link) == (
            kind == "file",
            kind == "dir",
            kind == "symlink",
        ), f"stat {path}: sdk {got} but real is a {kind}"
        assert got.mode == stat.S_IMODE(want.st_mode), f"stat {path}: {got} vs {want}"
        if kind != "dir":  # directory sizes are filesystem-specific
            assert got.size == want.st_size, f"stat {path}: {got} vs {want}"
        if kind == "file" and want.st_ino in self.utimed:
            assert got.mtime_ms == want.st_mtime_ns / 1_000_000, f"stat {path}: {got} vs {want}"

    @rule(path=rel_paths(final_dotdot=True))
    def exists(self, path: str) -> None:
        if self.skip((path, True, False)):
            return
        _, got, want = self.both(
            f"exists {path}",
            lambda: self.fs.exists(_sdk_path(path)),
            lambda: os.path.exists(self.real.path(path)),
        )
        assert got == want, f"exists {path}: sdk {got} != real {want}"

    @rule(path=rel_paths())
    def readlink(self, path: str) -> None:
        if self.skip((path, False, False)):
            return
        _, got, want = self.both(
            f"readlink {path}",
            lambda: self.fs.readlink(_sdk_path(path)),
            lambda: os.readlink(self.real.path(path)),
        )
        assert got == want, f"readlink {path}: sdk {got!r} != real {want!r}"

    @rule(path=rel_paths(final_dotdot=True))
    def realpath(self, path: str) -> None:
        if self.skip((path, True, False)):
            return
        _, got, want = self.both(
            f"realpath {path}",
            lambda: self.fs.realpath(_sdk_path(path)),
            lambda: self.real.realpath(path),
        )
        assert got == want, f"realpath {path}: sdk {got!r} != real {want!r}"

    # -- the trees ----------------------------------------------------------------------

    def real_tree(self) -> tuple[dict[str, tuple[Any, ...]], dict[str, float]]:
        tree: dict[str, tuple[Any, ...]] = {}
        mtimes: dict[str, float] = {}
        seen: set[int] = set()
        for dirpath, dirnames, filenames in os.walk(self.top):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                rel = os.path.relpath(p, self.top)
                st_ = os.lstat(p)
                kind = _kind(st_.st_mode)
                if kind == "symlink":
                    tree[rel] = (kind, os.readlink(p))
                elif kind == "dir":
                    tree[rel] = (kind, stat.S_IMODE(st_.st_mode))
                else:
                    with open(p, "rb") as f:
                        tree[rel] = (kind, stat.S_IMODE(st_.st_mode), f.read())
                    seen.add(st_.st_ino)
                    if st_.st_ino in self.utimed:
                        mtimes[rel] = st_.st_mtime_ns / 1_000_000
        self.utimed &= seen  # a removed file's inode may be reused by a new one
        return tree, mtimes

    async def sdk_tree(self) -> tuple[dict[str, tuple[Any, ...]], dict[str, float]]:
        tree: dict[str, tuple[Any, ...]] = {}
        mtimes: dict[str, float] = {}
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            for name in await self.fs.readdir(f"{ROOT}/{rel_dir}".rstrip("/")):
                rel = f"{rel_dir}/{name}" if rel_dir else name
                st_ = await self.fs.lstat(_sdk_path(rel))
                if st_.is_symbolic_link:
                    tree[rel] = ("symlink", await self.fs.readlink(_sdk_path(rel)))
                elif st_.is_directory:
                    tree[rel] = ("dir", st_.mode)
                    stack.append(rel)
                else:
                    assert st_.is_file
                    data = await self.fs.read(_sdk_path(rel))
                    assert st_.size == len(data), f"{rel}: size {st_.size} but {len(data)} bytes"
                    tree[rel] = ("file", st_.mode, data)
                    mtimes[rel] = st_.mtime_ms
        return tree, mtimes

    @invariant()
    def trees_match(self) -> None:
        real, real_mtimes = self.real_tree()
        sdk, sdk_mtimes = self.run(self.sdk_tree())
        if sdk != real:
            diff = {
                k: (sdk.get(k), real.get(k))
                for k in sorted(sdk.keys() | real.keys())
                if sdk.get(k) != real.get(k)
            }
            raise AssertionError(f"trees differ (path: (sdk, real)): {diff}")
        for rel, mtime in real_mtimes.items():
            assert sdk_mtimes[rel] == mtime, f"{rel}: sdk mtime {sdk_mtimes[rel]} != real {mtime}"


MesaFsModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestMesaFsModel = MesaFsModel.TestCase
