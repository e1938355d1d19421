"""Realtime through real FUSE mounts: app mounts and other FUSE mounts, both ways.

Kernel caches are long here (entry, attribute and negative timeouts of an hour,
``keep_cache``); everything a test sees change was invalidated from the log.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import errno
import os
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fuse.conftest import StartFuse
from tests.fuse.fuseutil import ORG, create_repos, is_mounted, read_or_none, wait_until
from tests.integration.conftest import ROOT, Deployment, MountProcess, SpawnMount
from tests.integration.natsutil import NatsServer

EVENT_TIMEOUT_S = 20.0
IN_DELETE_SELF = 0x400
IN_DELETE = 0x200
IN_ALL_EVENTS = 0xFFF


class Inotify:
    """A minimal inotify reader (ctypes)."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0

    def watch(self, path: Path) -> int:
        wd = int(self.libc.inotify_add_watch(self.fd, bytes(path), IN_ALL_EVENTS))
        assert wd >= 0, os.strerror(ctypes.get_errno())
        return wd

    def wait_for(self, wd: int, mask: int, timeout_s: float) -> list[tuple[int, int, bytes]]:
        seen: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], deadline - time.monotonic())
            if not ready:
                break
            data = os.read(self.fd, 65536)
            offset = 0
            while offset < len(data):
                w, m, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0")
                seen.append((w, m, name))
                offset += 16 + length
            if any(w == wd and m & mask for w, m, _ in seen):
                return seen
        raise AssertionError(f"no inotify event {mask:#x} on watch {wd}; saw {seen}")

    def close(self) -> None:
        os.close(self.fd)


def events_for(app: MountProcess, path: str) -> list[dict[str, Any]]:
    return [m for m in app.of_type("event") if m["path"] == path]


async def read_eventually(path: Path, expected: bytes | None) -> None:
    await asyncio.to_thread(
        wait_until,
        lambda: read_or_none(path) == expected,
        EVENT_TIMEOUT_S,
        f"{path} == {expected!r}",
    )


async def test_app_mount_and_fuse_mount_edit_one_change_both_ways(
    nats_server: NatsServer, spawn_mount: SpawnMount, start_fuse: StartFuse
) -> None:
    deployment = Deployment([nats_server.url])
    app = await spawn_mount("app", deployment, create=True)
    await app.call("subscribe")
    fuse = await asyncio.to_thread(start_fuse, deployment)
    root = fuse.repo

    # FUSE -> app: creating the file publishes it empty; its bytes are published as
    # one write when it is closed, and the app's handler reads them.
    def write_in_steps() -> None:
        with open(root / "agent.md", "wb") as f:
            f.write(b"first part, ")
            f.flush()
            time.sleep(0.5)
            seen = [base64.b64decode(e["data"]) for e in events_for(app, "/acme/app/agent.md")]
            assert set(seen) <= {b""}, f"published before close: {seen}"
            f.write(b"second part\n")

    await asyncio.to_thread(write_in_steps)
    event = await app.wait_for(
        lambda m: next((e for e in m if e.get("data") and e["path"] == "/acme/app/agent.md"), None),
        EVENT_TIMEOUT_S,
        "the app's event for agent.md",
    )
    assert base64.b64decode(event["data"]) == b"first part, second part\n"
    with_bytes = [e for e in events_for(app, "/acme/app/agent.md") if e["data"]]
    assert len(with_bytes) == 1  # one write on close
    assert await app.read("agent.md") == b"first part, second part\n"

    # app -> FUSE: the kernel's cached entries and attributes are corrected.
    assert (root / "agent.md").stat().st_size == 24  # cached now
    assert not (root / "human.md").exists()  # a cached negative entry
    await app.write("human.md", b"from the browser\n")
    await read_eventually(root / "human.md", b"from the browser\n")
    await app.write("agent.md", b"edited by a human, longer than before\n")
    await read_eventually(root / "agent.md", b"edited by a human, longer than before\n")
    assert (root / "agent.md").stat().st_size == len(b"edited by a human, longer than before\n")
    await app.call("mkdir", path="docs/deep")
    await app.write("docs/deep/x.txt", b"x")
    await read_eventually(root / "docs" / "deep" / "x.txt", b"x")
    await app.call("rm", path="human.md")
    await read_eventually(root / "human.md", None)
    assert sorted(os.listdir(root)) == ["agent.md", "docs"]

    # FUSE rename and remove -> app events.
    await asyncio.to_thread(os.rename, root / "docs", root / "notes")
    await app.wait_for(
        lambda m: any(e.get("path") == "/acme/app/notes" for e in m), EVENT_TIMEOUT_S, "mv"
    )
    assert await app.read("notes/deep/x.txt") == b"x"


async def test_two_fuse_mounts_see_each_other(
    nats_server: NatsServer, start_fuse: StartFuse
) -> None:
    deployment = Deployment([nats_server.url])
    await asyncio.to_thread(create_repos, deployment, "app")
    a = await asyncio.to_thread(start_fuse, deployment, name="a")
    b = await asyncio.to_thread(start_fuse, deployment, name="b")
    (a.repo / "src").mkdir()
    (a.repo / "src" / "main.py").write_text("print(1)\n")
    await read_eventually(b.repo / "src" / "main.py", b"print(1)\n")
    ino = (b.repo / "src" / "main.py").stat().st_ino
    # a numbered it when it created it (before the fold did); b has the fold's number.
    created_ino = (a.repo / "src" / "main.py").stat().st_ino
    (b.repo / "src" / "main.py").write_text("print(2)  # edited on b\n")
    await read_eventually(a.repo / "src" / "main.py", b"print(2)  # edited on b\n")
    assert (a.repo / "src" / "main.py").stat().st_ino == created_ino  # an edit keeps it
    os.rename(a.repo / "src", a.repo / "lib")
    await read_eventually(b.repo / "lib" / "main.py", b"print(2)  # edited on b\n")
    assert not (b.repo / "src").exists()
    assert (b.repo / "lib" / "main.py").stat().st_ino == ino  # a move keeps the inode
    assert (a.repo / "lib" / "main.py").stat().st_ino == created_ino
    (b.repo / "lib" / "more.py").write_text("x = 1\n")  # the moved directory still works
    await read_eventually(a.repo / "lib" / "more.py", b"x = 1\n")
    os.unlink(b.repo / "lib" / "main.py")
    await read_eventually(a.repo / "lib" / "main.py", None)
    await asyncio.to_thread(subprocess.run, ["rm", "-rf", str(a.repo / "lib")], check=True)
    await read_eventually(b.repo / "lib" / "more.py", None)
    assert os.listdir(b.repo) == []


async def test_inotify_sees_a_remote_delete(
    nats_server: NatsServer, spawn_mount: SpawnMount, start_fuse: StartFuse
) -> None:
    deployment = Deployment([nats_server.url])
    app = await spawn_mount("app", deployment, create=True)
    await app.write("watched.txt", b"watch me\n")
    fuse = await asyncio.to_thread(start_fuse, deployment)
    path = fuse.repo / "watched.txt"
    assert path.read_bytes() == b"watch me\n"
    inotify = Inotify()
    try:
        wd = inotify.watch(path)
        await app.call("rm", path="watched.txt")
        events = await asyncio.to_thread(inotify.wait_for, wd, IN_DELETE_SELF, EVENT_TIMEOUT_S)
        assert any(w == wd and m & IN_DELETE_SELF for w, m, _ in events)
    finally:
        inotify.close()
    assert not path.exists()


async def test_conflicted_file_reads_with_markers_and_writing_resolves_it(
    nats_server: NatsServer, spawn_mount: SpawnMount, start_fuse: StartFuse
) -> None:
    deployment = Deployment([nats_server.url])
    a = await spawn_mount("A", deployment, create=True)
    b = await spawn_mount("B", deployment)
    fuse = await asyncio.to_thread(start_fuse, deployment)
    base = b"shared notes\n"
    for attempt in range(3):
        name = f"notes-{attempt}.md"
        await a.write(name, base)
        await b.call("sync")
        at_ms = int(time.time() * 1000) + 300
        await asyncio.gather(
            a.call("race", path=name, at_ms=at_ms, data=base64.b64encode(b"from A\n").decode()),
            b.call("race", path=name, at_ms=at_ms, data=base64.b64encode(b"from B\n").decode()),
        )
        await asyncio.gather(a.call("sync"), b.call("sync"))
        expected = await a.read(name)
        if expected.startswith(b"<<<<<<< conflict 1 of 1\n"):
            break
    else:
        pytest.fail("no conflict in three simultaneous writes")
    path = fuse.repo / name
    await read_eventually(path, expected)
    assert path.stat().st_size == len(expected)
    assert b"+++++++ side #1\n" in expected
    assert b"------- base\nshared notes\n" in expected
    path.write_bytes(b"resolved by the agent\n")
    assert path.read_bytes() == b"resolved by the agent\n"
    await b.call("sync")
    assert await b.read(name) == b"resolved by the agent\n"


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def mesa_cli(
    deployment: Deployment, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesa", *args],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


async def test_killed_fuse_process_leaves_a_mount_that_mesa_unmount_clears(
    nats_server: NatsServer, start_fuse: StartFuse
) -> None:
    deployment = Deployment([nats_server.url])
    await asyncio.to_thread(create_repos, deployment, "app")
    fuse = await asyncio.to_thread(start_fuse, deployment)
    (fuse.repo / "d").mkdir()
    fd = os.open(fuse.repo / "d" / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"1")
        os.fsync(fd)  # close is not a durability point (write-behind); fsync is
    finally:
        os.close(fd)
    fuse.proc.send_signal(signal.SIGKILL)
    fuse.proc.wait(10)
    assert is_mounted(fuse.mountpoint)
    with pytest.raises(OSError, match="not connected") as info:
        os.listdir(fuse.mountpoint)
    assert info.value.errno == errno.ENOTCONN
    result = await asyncio.to_thread(mesa_cli, deployment, "unmount", str(fuse.mountpoint))
    assert result.returncode == 0, result.stderr
    assert not is_mounted(fuse.mountpoint)
    assert os.listdir(fuse.mountpoint) == []
    # The data outlived the process: a new mount there serves it.
    again = await asyncio.to_thread(start_fuse, deployment, name="mnt2")
    assert (again.repo / "d" / "f").read_bytes() == b"1"


async def test_daemonized_mount_serves_until_mesa_unmount(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    deployment = Deployment([nats_server.url])
    await asyncio.to_thread(create_repos, deployment, "app")
    mountpoint = tmp_path / "daemon"
    mountpoint.mkdir()
    result = await asyncio.to_thread(
        mesa_cli,
        deployment,
        "mount",
        str(mountpoint),
        "--org",
        ORG,
        "--repo",
        "app@main",
        "--daemonize",
    )
    try:
        assert result.returncode == 0, result.stderr
        assert "mounted acme/app" in result.stdout
        assert is_mounted(mountpoint)
        pid = int(result.stdout.rsplit("pid ", 1)[1].rstrip(")\n"))
        (mountpoint / ORG / "app" / "d.txt").write_bytes(b"daemon")
        assert (mountpoint / ORG / "app" / "d.txt").read_bytes() == b"daemon"
    finally:
        done = await asyncio.to_thread(mesa_cli, deployment, "unmount", str(mountpoint))
    assert done.returncode == 0, done.stderr
    assert not is_mounted(mountpoint)
    await asyncio.to_thread(wait_until, lambda: not running(pid), 15, "the daemon's exit")
    failed = await asyncio.to_thread(
        mesa_cli,
        deployment,
        "mount",
        str(mountpoint),
        "--org",
        ORG,
        "--repo",
        "nope",
        "--daemonize",
    )
    assert failed.returncode != 0
    assert "not found" in failed.stderr
    assert not is_mounted(mountpoint)


async def test_write_made_while_a_fuse_file_was_open_races_its_close(
    nats_server: NatsServer, spawn_mount: SpawnMount, start_fuse: StartFuse
) -> None:
    """The bytes published at close were read at open: a write in between must survive."""
    deployment = Deployment([nats_server.url])
    # A wide window: the race must not depend on how fast this machine is.
    await asyncio.to_thread(create_repos, deployment, "app", race_window_ms=60_000)
    app = await spawn_mount("A", deployment)
    fuse = await asyncio.to_thread(start_fuse, deployment)
    path = fuse.repo / "doc.txt"
    await app.write("doc.txt", b"base\n")
    await read_eventually(path, b"base\n")
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, b"edited through FUSE\n")
        await app.write("doc.txt", b"edited by the app\n")
        await app.write("marker", b"after the app's edit\n")
        # The FUSE mount has folded the app's edit before the file is closed.
        await read_eventually(fuse.repo / "marker", b"after the app's edit\n")
    finally:
        os.close(fd)
    # Publication is write-behind: an fsync (of any file) waits for what was closed before.
    fd = os.open(fuse.repo / "fuse-marker", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    await app.call("sync")
    merged = await app.read("doc.txt")
    assert merged.startswith(b"<<<<<<< conflict 1 of 1\n"), merged
    assert b"edited by the app\n" in merged
    assert b"edited through FUSE\n" in merged
    assert path.read_bytes() == merged
