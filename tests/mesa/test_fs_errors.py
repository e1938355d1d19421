"""Regression tests: errnos and results `MesaFileSystem` must share with a local filesystem.

Each test is a divergence the model test (tests/mesa/test_model.py) found against a
real directory, reduced to its smallest form.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator

import pytest

from mesa._fs import MesaFileSystem
from mesa_sdk import Mesa, WatchEvent

R = "/acme/app"


@pytest.fixture
async def fs(mesa: Mesa) -> AsyncIterator[MesaFileSystem]:
    async with mesa.fs.mount(repos=["app"]) as mounted:
        yield mounted


async def _errno(call: object) -> int | None:
    try:
        await call  # type: ignore[misc]
    except OSError as exc:
        return exc.errno
    return None


async def test_trailing_dotdot_names_the_parent_not_the_child(fs: MesaFileSystem) -> None:
    # The resolver kept the node of the component ".." popped, so "a/b/.." was b.
    await fs.mkdir(f"{R}/a/b", recursive=True)
    await fs.chmod(f"{R}/a/b", 0o700)
    await fs.write(f"{R}/a/f", b"x")
    assert (await fs.stat(f"{R}/a/b/..")).mode == 0o755
    assert sorted(await fs.readdir(f"{R}/a/b/..")) == ["b", "f"]
    assert await fs.realpath(f"{R}/a/b/..") == f"{R}/a"


async def test_mkdir_recursive_makes_the_dirs_dotdot_steps_out_of(fs: MesaFileSystem) -> None:
    # mkdir -p and os.makedirs create "x" for "x/../y"; the SDK raised ENOENT.
    await fs.mkdir(f"{R}/x/../y", recursive=True)
    assert sorted(await fs.readdir(R)) == ["x", "y"]
    await fs.mkdir(f"{R}/p/q/../r/s", recursive=True)
    assert sorted(await fs.readdir(f"{R}/p")) == ["q", "r"]
    assert await fs.readdir(f"{R}/p/r") == ["s"]


async def test_mkdir_recursive_does_not_create_through_a_dangling_symlink(
    fs: MesaFileSystem,
) -> None:
    # mkdir(2) never follows a dangling symlink: os.makedirs gives ENOENT below it
    # and EEXIST on it. The SDK created the symlink's target directories.
    await fs.symlink("zz", f"{R}/l")
    assert await _errno(fs.mkdir(f"{R}/l/x", recursive=True)) == errno.ENOENT
    assert await _errno(fs.mkdir(f"{R}/l", recursive=True)) == errno.EEXIST
    assert await fs.readdir(R) == ["l"]
    await fs.mkdir(f"{R}/zz")
    await fs.mkdir(f"{R}/l/x", recursive=True)  # through a live one it works
    await fs.mkdir(f"{R}/l", recursive=True)
    assert await fs.readdir(f"{R}/zz") == ["x"]


async def test_cp_of_a_directory_without_recursive_is_eisdir_first(fs: MesaFileSystem) -> None:
    # cp(1) and shutil.copyfile look at the source first; the SDK reported the
    # destination's missing parent (ENOENT).
    await fs.mkdir(f"{R}/d")
    assert await _errno(fs.cp(f"{R}/d", f"{R}/missing/d")) == errno.EISDIR


async def test_mv_reports_a_bad_destination_directory_before_a_missing_source(
    fs: MesaFileSystem,
) -> None:
    # rename(2) looks up both parents before the source: ELOOP/ENOTDIR there win over
    # the source's ENOENT.
    await fs.symlink("a", f"{R}/a")
    await fs.write(f"{R}/f", b"")
    assert await _errno(fs.mv(f"{R}/missing", f"{R}/a/x")) == errno.ELOOP
    assert await _errno(fs.mv(f"{R}/missing", f"{R}/f/x")) == errno.ENOTDIR
    assert await _errno(fs.mv(f"{R}/missing", f"{R}/x")) == errno.ENOENT


async def test_dot_after_a_name_requires_a_directory(fs: MesaFileSystem) -> None:
    # "x/." names x only if x is a directory; the SDK dropped "." and wrote d/a
    # through a link to "d/a/.".
    await fs.mkdir(f"{R}/d")
    await fs.symlink("d/a/.", f"{R}/l")
    assert await _errno(fs.write(f"{R}/l", b"")) == errno.ENOENT
    assert await fs.readdir(f"{R}/d") == []
    await fs.write(f"{R}/f", b"")
    assert await _errno(fs.stat(f"{R}/f/.")) == errno.ENOTDIR
    assert await _errno(fs.mkdir(f"{R}/n/.")) == errno.ENOENT
    assert (await fs.stat(f"{R}/d/.")).is_directory


async def test_mv_onto_an_ancestor_of_the_source_is_enotempty(fs: MesaFileSystem) -> None:
    # Linux's rename(2) refuses a target that is an ancestor of the source with
    # ENOTEMPTY before it compares kinds; the SDK said EISDIR for a file source.
    await fs.mkdir(f"{R}/b/c", recursive=True)
    await fs.write(f"{R}/b/f", b"")
    assert await _errno(fs.mv(f"{R}/b/f", f"{R}/b")) == errno.ENOTEMPTY
    assert await _errno(fs.mv(f"{R}/b/c", f"{R}/b")) == errno.ENOTEMPTY
    assert await _errno(fs.cp(f"{R}/b/f", f"{R}/b")) == errno.EISDIR  # open(2) of a directory


async def test_mv_onto_a_file_keeps_the_moved_files_mtime(fs: MesaFileSystem) -> None:
    await fs.write(f"{R}/a", b"1")
    await fs.write(f"{R}/b", b"2")
    await fs.utimes(f"{R}/a", 1_000, 2_000)
    await fs.mv(f"{R}/a", f"{R}/b")
    assert (await fs.stat(f"{R}/b")).mtime_ms == 2_000


async def test_cp_of_a_directory_does_not_follow_a_symlink_at_the_destination(
    fs: MesaFileSystem,
) -> None:
    # A directory copy makes its destination like mkdir(2): any name there, even a
    # dangling symlink, is EEXIST. The SDK followed it: it made the dangling link's
    # target, and said EINVAL (same directory) for a link to the source.
    await fs.mkdir(f"{R}/d")
    await fs.symlink("zz", f"{R}/dangling")
    await fs.symlink("d", f"{R}/to_d")
    assert await _errno(fs.cp(f"{R}/d", f"{R}/dangling", recursive=True)) == errno.EEXIST
    assert await _errno(fs.cp(f"{R}/d", f"{R}/to_d", recursive=True)) == errno.EEXIST
    assert sorted(await fs.readdir(R)) == ["d", "dangling", "to_d"]
    await fs.write(f"{R}/f", b"x")
    await fs.cp(f"{R}/f", f"{R}/dangling")  # a file is written through it (open(2))
    assert await fs.read(f"{R}/zz") == b"x"


async def test_cp_of_the_repo_root_into_the_repo_is_einval(fs: MesaFileSystem) -> None:
    # Like any directory copied into its own subtree (cp(1): "cannot copy a
    # directory into itself"); the SDK said EPERM.
    await fs.symlink(".", f"{R}/here")
    assert await _errno(fs.cp(R, f"{R}/b", recursive=True)) == errno.EINVAL
    assert await _errno(fs.cp(f"{R}/here", f"{R}/b", recursive=True)) == errno.EINVAL
    assert await _errno(fs.cp(R, f"{R}/b")) == errno.EISDIR
    assert await fs.readdir(R) == ["here"]


async def test_a_handler_may_unsubscribe_itself(fs: MesaFileSystem) -> None:
    seen: list[str] = []
    after: list[str] = []

    async def handler(event: WatchEvent) -> None:
        seen.append(event.path)
        await sub.unsubscribe()
        after.append(event.path)  # the handler's code after unsubscribe still runs

    sub = fs.subscribe(handler)
    await fs.write(f"{R}/one", b"1")
    await fs.write(f"{R}/two", b"2")
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen == [f"{R}/one"]
    assert after == [f"{R}/one"]


async def test_handlers_can_read_while_the_mount_delivers_its_last_events(
    mesa: Mesa,
) -> None:
    read: dict[str, bytes] = {}
    async with mesa.fs.mount(repos=["app"]) as fs:

        async def handler(event: WatchEvent) -> None:
            await asyncio.sleep(0)
            read[event.path] = await fs.read(event.path)

        fs.subscribe(handler)
        for name in ("a", "b", "c"):
            await fs.write(f"{R}/{name}", name.encode())
    assert read == {f"{R}/{n}": n.encode() for n in ("a", "b", "c")}
    with pytest.raises(OSError, match="closed") as closed:
        await fs.read(f"{R}/a")
    assert closed.value.errno == errno.EBADF
