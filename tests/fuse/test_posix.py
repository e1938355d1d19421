"""POSIX operations through a real FUSE mount, with the errno each failure gives.

One ``mesa mount`` process (``acme/app`` read-write, ``acme/docs`` read-only) serves
the whole module; each test works in a directory of its own.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fuse.fuseutil import FuseMount

AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


@pytest.fixture
def work(shared_mount: FuseMount) -> Path:
    """A fresh directory inside ``acme/app``."""
    path = shared_mount.repo / f"t-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def raises_errno(code: int, fn: object, *args: object) -> None:
    assert callable(fn)
    with pytest.raises(OSError, match=re.escape(os.strerror(code))) as info:
        fn(*args)
    assert info.value.errno == code, f"expected {errno.errorcode[code]}, got {info.value!r}"


def renameat2(src: Path, dst: Path, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.renameat2(AT_FDCWD, bytes(src), AT_FDCWD, bytes(dst), flags)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def test_layout_lists_org_then_repos(shared_mount: FuseMount) -> None:
    assert os.listdir(shared_mount.mountpoint) == ["acme"]
    assert sorted(os.listdir(shared_mount.mountpoint / "acme")) == ["app", "docs"]
    assert stat.S_ISDIR(os.stat(shared_mount.repo).st_mode)
    raises_errno(errno.ENOENT, os.stat, shared_mount.mountpoint / "other")
    raises_errno(errno.ENOENT, os.stat, shared_mount.mountpoint / "acme" / "nope")
    raises_errno(errno.EPERM, os.mkdir, shared_mount.mountpoint / "acme" / "newrepo")
    raises_errno(errno.EPERM, os.mkdir, shared_mount.mountpoint / "neworg")


def test_write_read_stat_and_close_to_open(work: Path) -> None:
    path = work / "notes.md"
    path.write_bytes(b"hello\n")
    assert path.read_bytes() == b"hello\n"
    st = path.stat()
    assert stat.S_ISREG(st.st_mode)
    assert (st.st_size, st.st_nlink) == (6, 1)
    assert stat.S_IMODE(st.st_mode) == 0o644
    with open(path, "ab") as f:
        f.write(b"more\n")
    assert path.read_bytes() == b"hello\nmore\n"
    with open(path, "r+b") as f:
        f.seek(2)
        f.write(b"LL")
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        assert f.read() == b"heLLo\nmore\n"
    with open(path, "wb") as f:  # O_TRUNC
        f.write(b"x")
    assert path.read_bytes() == b"x"
    big = os.urandom(3 * 1024 * 1024 + 17)  # a blob, written in many FUSE requests
    (work / "big.bin").write_bytes(big)
    assert (work / "big.bin").read_bytes() == big
    assert (work / "big.bin").stat().st_size == len(big)
    with open(work / "sparse", "wb") as f:
        f.seek(10)
        f.write(b"!")
    assert (work / "sparse").read_bytes() == bytes(10) + b"!"
    raises_errno(errno.ENOENT, open, work / "missing" / "x", "wb")
    raises_errno(errno.EISDIR, open, work, "wb")
    raises_errno(errno.ENOTDIR, open, path / "child", "wb")
    raises_errno(errno.EEXIST, os.open, path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    raises_errno(errno.ENAMETOOLONG, open, work / ("n" * 256), "wb")


def test_setattr_chmod_truncate_utimens(work: Path) -> None:
    path = work / "f"
    path.write_bytes(b"0123456789")
    os.chmod(path, 0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o755)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    os.truncate(path, 4)
    assert path.read_bytes() == b"0123"
    os.truncate(path, 6)
    assert path.read_bytes() == b"0123\0\0"
    with open(path, "r+b") as f:
        os.ftruncate(f.fileno(), 2)
    assert path.read_bytes() == b"01"
    os.utime(path, ns=(1_600_000_000_123_000_000, 1_500_000_000_456_000_000))
    st = path.stat()
    assert st.st_mtime_ns == 1_500_000_000_456_000_000
    assert st.st_atime_ns == 1_600_000_000_123_000_000
    with open(path, "r+b") as f:  # times set through a descriptor land after its bytes
        f.write(b"AB")
        f.flush()  # to the descriptor (not published yet)
        os.utime(f.fileno(), ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    assert path.read_bytes() == b"AB"
    assert path.stat().st_mtime_ns == 1_000_000_000_000_000_000
    os.chown(path, 1234, 1234)  # accepted, ownership is not stored
    assert path.stat().st_uid == os.getuid()
    os.utime(work, ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    assert work.stat().st_mtime_ns == 2_000_000_000_000_000_000


def test_mkdir_rmdir_unlink_errnos(work: Path) -> None:
    (work / "d").mkdir(mode=0o750)
    assert stat.S_IMODE((work / "d").stat().st_mode) == 0o750
    raises_errno(errno.EEXIST, os.mkdir, work / "d")
    raises_errno(errno.ENOENT, os.mkdir, work / "x" / "y")
    (work / "d" / "f").write_bytes(b"1")
    raises_errno(errno.ENOTEMPTY, os.rmdir, work / "d")
    raises_errno(errno.EISDIR, os.unlink, work / "d")
    raises_errno(errno.ENOTDIR, os.rmdir, work / "d" / "f")
    raises_errno(errno.ENOENT, os.unlink, work / "d" / "nope")
    raises_errno(errno.ENOTDIR, os.mkdir, work / "d" / "f" / "g")
    os.unlink(work / "d" / "f")
    assert os.listdir(work / "d") == []
    os.rmdir(work / "d")
    assert not (work / "d").exists()
    raises_errno(errno.ENOENT, os.rmdir, work / "d")


def test_readdir_is_complete_and_rm_rf_empties_large_directories(work: Path) -> None:
    names = {f"entry-{i:04d}-{'x' * (i % 40)}" for i in range(300)}
    for name in names:
        (work / name).write_bytes(name.encode())
    listed = os.listdir(work)
    assert len(listed) == len(set(listed)) == 300
    assert set(listed) == names
    with os.scandir(work) as it:
        entries = {e.name: e.stat(follow_symlinks=False).st_size for e in it}
    assert entries == {name: len(name) for name in names}
    for i, name in enumerate(sorted(names)):  # removing while listing skips nothing
        if i % 2:
            os.unlink(work / name)
    assert len(os.listdir(work)) == 150
    assert os.system(f"rm -rf '{work}'") == 0
    assert not work.exists()


def test_rename_replace_noreplace_exchange_and_exdev(work: Path, shared_mount: FuseMount) -> None:
    (work / "a").write_bytes(b"A")
    (work / "b").write_bytes(b"B")
    ino_a = (work / "a").stat().st_ino
    os.rename(work / "a", work / "c")
    assert (work / "c").read_bytes() == b"A"
    assert (work / "c").stat().st_ino == ino_a
    assert not (work / "a").exists()
    os.rename(work / "c", work / "b")  # replaces b
    assert (work / "b").read_bytes() == b"A"
    assert sorted(os.listdir(work)) == ["b"]
    (work / "x").write_bytes(b"X")
    raises_errno(errno.EEXIST, renameat2, work / "x", work / "b", RENAME_NOREPLACE)
    renameat2(work / "x", work / "y", RENAME_NOREPLACE)
    assert (work / "y").read_bytes() == b"X"
    raises_errno(errno.EINVAL, renameat2, work / "y", work / "b", RENAME_EXCHANGE)
    (work / "d1").mkdir()
    (work / "d1" / "f").write_bytes(b"f")
    (work / "d2").mkdir()
    (work / "d2" / "g").write_bytes(b"g")
    raises_errno(errno.ENOTEMPTY, os.rename, work / "d1", work / "d2")
    raises_errno(errno.ENOTDIR, os.rename, work / "d1", work / "b")
    raises_errno(errno.EISDIR, os.rename, work / "b", work / "d1")
    raises_errno(errno.EINVAL, os.rename, work / "d1", work / "d1" / "sub")
    os.rename(work / "d1", work / "d3")
    assert (work / "d3" / "f").read_bytes() == b"f"
    docs = shared_mount.mountpoint / "acme" / "docs"
    raises_errno(errno.EXDEV, os.rename, work / "b", docs / "b")
    raises_errno(errno.ENOENT, os.rename, work / "nope", work / "z")


def test_symlink_readlink_lstat_and_hard_links(work: Path) -> None:
    (work / "target").write_bytes(b"T")
    os.symlink("target", work / "link")
    assert os.readlink(work / "link") == "target"
    assert (work / "link").read_bytes() == b"T"
    st = os.lstat(work / "link")
    assert stat.S_ISLNK(st.st_mode)
    assert st.st_size == len("target")
    os.symlink("/no/such/place", work / "dangling")
    assert os.readlink(work / "dangling") == "/no/such/place"
    raises_errno(errno.ENOENT, os.stat, work / "dangling")
    raises_errno(errno.EEXIST, os.symlink, "x", work / "link")
    raises_errno(errno.EINVAL, os.readlink, work / "target")
    raises_errno(errno.EPERM, os.link, work / "target", work / "hard")
    os.utime(work / "link", ns=(10**18, 10**18), follow_symlinks=False)
    assert os.lstat(work / "link").st_mtime_ns == 10**18
    assert os.stat(work / "target").st_mtime_ns != 10**18
    raises_errno(errno.EPERM, os.mkfifo, work / "fifo")
    os.mknod(work / "plain", 0o600 | stat.S_IFREG)
    assert (work / "plain").read_bytes() == b""


def test_unlinked_open_file_keeps_working_until_closed(work: Path) -> None:
    path = work / "tmp"
    path.write_bytes(b"data")
    fd = os.open(path, os.O_RDWR)
    try:
        os.unlink(path)
        assert not path.exists()
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 10, 0) == b"data"
        os.pwrite(fd, b"more", 4)
        assert os.pread(fd, 10, 0) == b"datamore"
    finally:
        os.close(fd)
    assert not path.exists()
    assert os.listdir(work) == []


def test_read_only_repo_is_erofs(shared_mount: FuseMount) -> None:
    docs = shared_mount.mountpoint / "acme" / "docs"
    assert os.listdir(docs) == []
    raises_errno(errno.EROFS, open, docs / "f", "wb")
    raises_errno(errno.EROFS, os.mkdir, docs / "d")
    raises_errno(errno.EROFS, os.symlink, "x", docs / "l")
    raises_errno(errno.EROFS, os.chmod, docs, 0o700)


def test_statfs(shared_mount: FuseMount) -> None:
    st = os.statvfs(shared_mount.repo)
    assert st.f_bsize > 0
    assert st.f_bavail > 0
    assert st.f_namemax == 255
    with open("/proc/mounts") as mounts:
        line = next(m for m in mounts if m.split()[1] == str(shared_mount.mountpoint))
    assert line.split()[2] == "fuse.mesafs"


def test_xattrs_outside_user_mesa_are_not_supported(work: Path) -> None:
    (work / "f").write_bytes(b"x")
    raises_errno(errno.EOPNOTSUPP, os.getxattr, work / "f", "user.k")
    raises_errno(errno.EOPNOTSUPP, os.setxattr, work / "f", "user.k", b"v")


def test_directory_mtime_changes_with_its_entries(work: Path) -> None:
    """Python's import system caches a directory's listing by its mtime."""
    package = work / "pkg"
    package.mkdir()
    os.utime(package, ns=(10**18, 10**18))
    assert package.stat().st_mtime_ns == 10**18
    (package / "first.py").write_text("VALUE = 1\n")
    after_create = package.stat().st_mtime_ns
    assert after_create > 10**18
    (package / "first.py").write_text("VALUE = 2\n")  # in place: the names stay
    assert package.stat().st_mtime_ns == after_create
    code = (
        "import importlib, pathlib, sys, time\n"
        f"sys.path.insert(0, {str(package)!r})\n"
        "import first\n"
        "time.sleep(0.01)\n"
        f"pathlib.Path({str(package)!r}, 'second.py').write_text('VALUE = 3\\n')\n"
        "import second\n"
        "print(first.VALUE, second.VALUE)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "3"]
    os.unlink(package / "first.py")
    assert package.stat().st_mtime_ns > after_create


def test_new_files_and_directories_are_served_before_their_entries_fold(work: Path) -> None:
    """Write-behind: what a syscall returned is visible at once, and later ops see it."""
    (work / "a" / "b").mkdir(parents=True)
    fd = os.open(work / "a" / "b" / "new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, b"not closed yet\n")
        assert os.listdir(work / "a" / "b") == ["new.txt"]
        assert os.stat(work / "a" / "b" / "new.txt").st_size == len(b"not closed yet\n")
        with pytest.raises(FileExistsError):
            os.open(work / "a" / "b" / "new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        with pytest.raises(FileExistsError):
            os.mkdir(work / "a" / "b" / "new.txt")
        os.fchmod(fd, 0o640)
        os.utime(fd, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
    finally:
        os.close(fd)
    st = os.stat(work / "a" / "b" / "new.txt")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (0o640, 1_600_000_000 * 10**9)
    # A rename right after close waits for the file's entry, then moves it.
    os.rename(work / "a" / "b" / "new.txt", work / "a" / "moved.txt")
    assert (work / "a" / "moved.txt").read_bytes() == b"not closed yet\n"
    assert stat.S_IMODE(os.stat(work / "a" / "moved.txt").st_mode) == 0o640
    # Unlinking a file that is still open and never closed removes it too.
    fd = os.open(work / "a" / "tmp", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"scratch")
        os.unlink(work / "a" / "tmp")
        assert not (work / "a" / "tmp").exists()
    finally:
        os.close(fd)
    assert sorted(os.listdir(work / "a")) == ["b", "moved.txt"]
    fd = os.open(work / "a" / "b" / "open.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(OSError, match="not empty") as caught:
            os.rmdir(work / "a" / "b")  # holds a file created here, still open
        assert caught.value.errno == errno.ENOTEMPTY
    finally:
        os.close(fd)
    os.unlink(work / "a" / "b" / "open.txt")
    os.rmdir(work / "a" / "b")
    assert sorted(os.listdir(work / "a")) == ["moved.txt"]
