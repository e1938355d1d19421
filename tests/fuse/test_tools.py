"""Ordinary tools inside a real FUSE mount: git, tar, python -m venv."""

from __future__ import annotations

import os
import random
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.fuse.fuseutil import FuseMount

GIT_ENV = {
    "GIT_AUTHOR_NAME": "agent",
    "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "agent",
    "GIT_COMMITTER_EMAIL": "agent@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def run(argv: list[str], cwd: Path, **kwargs: object) -> str:
    result = subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        timeout=300,
        check=False,
        **kwargs,  # type: ignore[call-overload]
    )
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return str(result.stdout)


def test_git_init_add_commit_status(shared_mount: FuseMount) -> None:
    repo = shared_mount.repo / "gitrepo"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main", "."], repo)
    (repo / "src").mkdir()
    for i in range(20):
        (repo / "src" / f"m{i}.py").write_text(f"print({i})\n")
    (repo / "README.md").write_text("# project\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(repo / "run.sh", 0o755)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "first"], repo)
    assert run(["git", "status", "--porcelain"], repo) == ""
    assert "first" in run(["git", "log", "--oneline"], repo)
    (repo / "src" / "m3.py").write_text("print('changed')\n")
    (repo / "new.txt").write_text("new\n")
    os.unlink(repo / "src" / "m5.py")
    status = run(["git", "status", "--porcelain"], repo)
    assert sorted(status.splitlines()) == [" D src/m5.py", " M src/m3.py", "?? new.txt"]
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-q", "-m", "second"], repo)
    assert run(["git", "status", "--porcelain"], repo) == ""
    assert run(["git", "fsck", "--strict"], repo) is not None
    assert run(["git", "show", "HEAD:src/m3.py"], repo) == "print('changed')\n"
    assert run(["git", "ls-files", "-s", "run.sh"], repo).startswith("100755")


def make_tree(root: Path, files: int, seed: int = 7) -> None:
    """A deterministic tree: nested directories, small and blob-sized files, symlinks, modes."""
    rng = random.Random(seed)
    dirs = [root]
    for i in range(files // 25):
        parent = rng.choice(dirs)
        child = parent / f"dir{i:03d}"
        child.mkdir()
        dirs.append(child)
    for i in range(files):
        parent = rng.choice(dirs)
        size = rng.choice((0, 1, 100, 4000, 20_000)) if i % 200 else 200_000
        path = parent / f"file{i:05d}.{rng.choice(('py', 'txt', 'c', 'md'))}"
        path.write_bytes(rng.randbytes(size))
        if i % 17 == 0:
            path.chmod(0o755)
        if i % 97 == 0:
            (parent / f"link{i:05d}").symlink_to(path.name)
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))


def snapshot(root: Path) -> dict[str, tuple[str, int, object]]:
    """Every entry under ``root``: kind, permission bits, and bytes or target."""
    out: dict[str, tuple[str, int, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            else:
                data = (path.read_bytes(), int(st.st_mtime))
                out[rel] = ("file", stat.S_IMODE(st.st_mode), data)
    return out


def test_tar_extract_thousands_of_files_reads_back_identical(
    shared_mount: FuseMount, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    make_tree(source, 2000)
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(source, arcname="tree")
    dest = shared_mount.repo / "untar"
    dest.mkdir()
    run(["tar", "-x", "-f", str(archive)], dest)
    expected, actual = snapshot(source), snapshot(dest / "tree")
    assert len(actual) == len(expected) > 2000
    assert sorted(actual) == sorted(expected)
    different = [rel for rel in expected if actual[rel] != expected[rel]]
    assert not different, f"{len(different)} entries differ, e.g. {different[:5]}"
    # What tar saw is write-behind; once an fsync returns, all of it is in the log:
    # a new mount, which knows only the log, serves the same tree (modes and times too).
    fd = os.open(dest / "barrier", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    other = FuseMount.start(tmp_path / "other", shared_mount.extra["deployment"], ("app",))
    try:
        from_log = snapshot(other.repo / "untar" / "tree")
    finally:
        other.stop()
    different = [rel for rel in expected if from_log.get(rel) != expected[rel]]
    assert not different, f"{len(different)} entries differ in the log, e.g. {different[:5]}"
    assert len(from_log) == len(expected)


def test_python_venv_inside_the_mount(shared_mount: FuseMount) -> None:
    venv = shared_mount.repo / "venv"
    run([sys.executable, "-m", "venv", str(venv)], shared_mount.repo)
    python = venv / "bin" / "python"
    out = run([str(python), "-c", "import sys, pip; print(sys.prefix); print(pip.__file__)"], venv)
    prefix, pip_file = out.splitlines()
    assert Path(prefix) == venv
    assert Path(pip_file).is_relative_to(venv)


@pytest.mark.slow
def test_tar_extract_of_the_python_standard_library(
    shared_mount: FuseMount, tmp_path: Path
) -> None:
    stdlib = Path(os.__file__).parent
    archive = tmp_path / "stdlib.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(stdlib, arcname="lib", filter=_no_site_packages)
    dest = shared_mount.repo / "stdlib"
    dest.mkdir()
    run(["tar", "-x", "-f", str(archive)], dest)
    reference = tmp_path / "ref"
    reference.mkdir()
    run(["tar", "-x", "-f", str(archive)], reference)
    assert snapshot(dest / "lib") == snapshot(reference / "lib")


def _no_site_packages(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "site-packages" in info.name or "__pycache__" in info.name else info
