"""The FUSE benchmark's instruments: the floor filesystem (mounted for real) and its table."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulations.bench.fuse import (
    FloorProcess,
    NativeNullProcess,
    Row,
    make_archive,
    miss_rate,
    table,
    untar,
)
from simulations.bench.fuse_floor import build_native_null
from tests.fuse.fuseutil import is_mounted


@pytest.fixture
def floor(tmp_path: Path) -> Iterator[FloorProcess]:
    """The floor filesystem mounted at ``tmp_path/floor``; unmounted in teardown."""
    process = FloorProcess(tmp_path / "floor", dict(os.environ))
    try:
        yield process
    finally:
        process.stop()
        assert not is_mounted(tmp_path / "floor")


def _tree(root: Path) -> None:
    (root / "pkg" / "sub").mkdir(parents=True)
    for i in range(40):
        (root / "pkg" / f"m{i}.py").write_bytes(os.urandom(i * 997))
    (root / "pkg" / "sub" / "big.bin").write_bytes(os.urandom(300_000))
    (root / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    (root / "pkg" / "run.sh").chmod(0o755)
    (root / "pkg" / "link").symlink_to("run.sh")


def test_the_floor_serves_a_tar_tree_back(tmp_path: Path, floor: FloorProcess) -> None:
    src = tmp_path / "src"
    _tree(src)
    archive = tmp_path / "tree.tar"
    assert make_archive(src, archive) == 46  # the root, pkg, sub, 40 modules, big, run, link
    untar(archive, floor.root)
    got = floor.root / "tree"
    for path in src.rglob("*"):
        twin = got / path.relative_to(src)
        assert twin.lstat().st_mode == path.lstat().st_mode, path
        if path.is_symlink():
            assert os.readlink(twin) == os.readlink(path)
        elif path.is_file():
            assert twin.read_bytes() == path.read_bytes(), path
            assert twin.stat().st_mtime_ns // 10**9 == path.stat().st_mtime_ns // 10**9
    assert sorted(p.name for p in (got / "pkg").iterdir()) == sorted(
        p.name for p in (src / "pkg").iterdir()
    )


def test_the_floor_renames_removes_and_refuses_like_a_filesystem(floor: FloorProcess) -> None:
    root = floor.root
    (root / "a").write_bytes(b"one")
    (root / "b").write_bytes(b"two")
    os.rename(root / "a", root / "b")
    assert (root / "b").read_bytes() == b"one"
    assert not (root / "a").exists()
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"x")
    with pytest.raises(OSError, match="not empty") as info:
        (root / "d").rmdir()
    assert info.value.errno == errno.ENOTEMPTY
    with pytest.raises(PermissionError):
        os.link(root / "b", root / "c")
    with open(root / "b", "r+b") as f:
        f.truncate(1)
        f.seek(4)
        f.write(b"z")
    assert (root / "b").read_bytes() == b"o\0\0\0z"
    (root / "d" / "f").unlink()
    (root / "d").rmdir()
    assert sorted(os.listdir(root)) == ["b"]


def test_rows_report_costs_over_each_baseline() -> None:
    rate = Row("lstat", "ops/s", 1000.0, 500.0, 250.0, 1.5)
    assert rate.slowdown == 4.0
    assert rate.cost(rate.floor, rate.tmpfs) == 2.0
    assert rate.cost(rate.fuse, rate.floor) == 2.0
    duration = Row("tar", "s", 0.1, 0.4, 1.2, 3.0)
    assert duration.slowdown == pytest.approx(12.0)
    assert duration.cost(duration.fuse, duration.floor) == pytest.approx(3.0)
    cold = Row("cold read", "MB/s", 100.0, None, 50.0, None)
    assert cold.cost(cold.floor, cold.tmpfs) is None
    lines = table([rate, duration, cold]).splitlines()
    assert lines[2] == (
        "| lstat | 1,000 ops/s | 500 ops/s | 250 ops/s | 2.00x | 4.00x | 2.00x | <= 1.5x |"
    )
    assert lines[3].split(" | ")[4:7] == ["4.00x", "12.00x", "3.00x"]
    assert lines[4].split(" | ")[2] == "-"


def test_the_native_null_filesystem_builds_mounts_and_answers_no_such_name(
    tmp_path: Path,
) -> None:
    program, why = build_native_null(tmp_path)
    assert program is not None, why  # CI installs gcc, pkg-config and libfuse3-dev
    null = NativeNullProcess(tmp_path / "null", program)
    try:
        with pytest.raises(FileNotFoundError):
            os.lstat(null.root / "anything")
        assert miss_rate(null.root, 50, fresh=None) > 0
        assert is_mounted(null.root)
    finally:
        null.stop()
    assert not is_mounted(null.root)
