"""The edges real tools hit on a FUSE mount: nothing lost, nothing silent (issue 12).

Each test mounts for real (``mesa mount`` processes on a shared nats-server), uses
ordinary tools or syscalls, and checks what another mount and the log hold.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.fuse.conftest import StartFuse
from tests.fuse.fuseutil import ORG, ROOT, FuseMount, create_repos, read_or_none, wait_until
from tests.integration.conftest import Deployment
from tests.integration.natsutil import NatsServer

HISTORY = """
import asyncio, json, sys
from mesa import Mesa

async def main():
    mesa = Mesa(org=sys.argv[1])
    out = []
    async with mesa.fs.mount(repos=[sys.argv[2]]) as fs:
        path = f"/{sys.argv[1]}/{sys.argv[2]}/{sys.argv[3]}"
        for entry in await fs.changes.history(path):
            if entry.op == "write":
                out.append(len(await fs.read(path, at=entry.seq)))
    print(json.dumps(out))
    await mesa.transport.aclose()

asyncio.run(main())
"""


@pytest.fixture
def repo_name(shared_server: NatsServer) -> str:
    """A repo of its own for each test, on the module's server."""
    name = f"e{uuid.uuid4().hex[:8]}"
    create_repos(Deployment([shared_server.url]), name, race_window_ms=5_000)
    return name


@pytest.fixture
def two(
    shared_server: NatsServer, start_fuse: StartFuse, repo_name: str
) -> tuple[FuseMount, FuseMount]:
    deployment = Deployment([shared_server.url])
    first = start_fuse(deployment, (repo_name,), name="m1")
    second = start_fuse(deployment, (repo_name,), name="m2")
    first.extra["deployment"] = deployment
    return first, second


def _history_sizes(deployment: Deployment, repo: str, rel: str) -> list[int]:
    """The size of every version of ``rel`` the log holds (one per write entry)."""
    out = subprocess.run(
        [sys.executable, "-c", HISTORY, ORG, repo, rel],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        check=True,
        timeout=60,
    )
    import json

    sizes: list[int] = json.loads(out.stdout)
    return sizes


def _sh(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_setting_times_on_the_repo_root_keeps_the_mount_writing(
    two: tuple[FuseMount, FuseMount],
) -> None:
    m1, m2 = two
    root = m1.repo
    (root / "b.txt").write_text("b\n")
    os.utime(root, (1_000_000, 1_000_000))  # touch of the repo root
    time.sleep(0.3)
    os.unlink(root / "b.txt")
    (root / "after.txt").write_text("after\n")
    fd = os.open(root / "after.txt", os.O_RDONLY)
    try:
        os.fsync(fd)  # EIO while the writer is wedged
    finally:
        os.close(fd)
    wait_until(lambda: read_or_none(m2.repo / "after.txt") == b"after\n", what="after.txt on m2")
    wait_until(lambda: not (m2.repo / "b.txt").exists(), what="b.txt gone on m2")
    wait_until(lambda: int(os.stat(m2.repo).st_mtime) != 0, what="root times on m2")


def test_tar_and_cp_a_into_the_repo_root(two: tuple[FuseMount, FuseMount], tmp_path: Path) -> None:
    m1, m2 = two
    src = tmp_path / "tree"
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "e" / "f.txt").write_text("deep\n")
    (src / "top.txt").write_text("top\n")
    os.utime(src, (1_000_000, 1_000_000))
    tarball = tmp_path / "t.tar"
    subprocess.run(["tar", "-cf", str(tarball), "-C", str(src), "."], check=True)
    result = _sh(
        f"tar -xf {tarball} -C . && cp -a {src}/. ./copy-root-check/ 2>/dev/null; "
        f"cp -a {src}/. . && sync",
        m1.repo,
    )
    assert result.returncode == 0, result.stderr
    wait_until(lambda: read_or_none(m2.repo / "d" / "e" / "f.txt") == b"deep\n", what="tar on m2")
    assert read_or_none(m2.repo / "top.txt") == b"top\n"
    (m1.repo / "later.txt").write_text("later\n")
    wait_until(lambda: read_or_none(m2.repo / "later.txt") == b"later\n", what="later on m2")


def test_a_redirect_publishes_no_torn_version(two: tuple[FuseMount, FuseMount]) -> None:
    m1, m2 = two
    result = _sh("head -c 3000000 /dev/urandom > f.bin", m1.repo)
    assert result.returncode == 0, result.stderr
    size_seen_on_m2: set[int] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = read_or_none(m2.repo / "f.bin")
        if data is not None:
            size_seen_on_m2.add(len(data))
            if len(data) == 3_000_000:
                break
        time.sleep(0.02)
    assert size_seen_on_m2 <= {0, 3_000_000}, sorted(size_seen_on_m2)
    assert 3_000_000 in size_seen_on_m2, sorted(size_seen_on_m2)
    deployment: Deployment = m1.extra["deployment"]
    sizes = _history_sizes(deployment, m1.extra["repo"], "f.bin")
    assert set(sizes) <= {0, 3_000_000}, sizes
    assert sizes[-1] == 3_000_000


def test_racing_atomic_saves_keep_both_sides(two: tuple[FuseMount, FuseMount]) -> None:
    m1, m2 = two
    (m1.repo / "f.txt").write_text("base\n")
    wait_until(lambda: read_or_none(m2.repo / "f.txt") == b"base\n", what="base on m2")

    async def save(root: Path, tmp: str, text: str) -> None:
        def run() -> None:
            (root / tmp).write_text(text)
            os.rename(root / tmp, root / "f.txt")

        await asyncio.to_thread(run)

    async def both() -> None:
        await asyncio.gather(save(m1.repo, ".t1", "ONE\n"), save(m2.repo, ".t2", "TWO\n"))

    asyncio.run(both())

    def settled() -> bytes | None:
        one, two_ = read_or_none(m1.repo / "f.txt"), read_or_none(m2.repo / "f.txt")
        return one if one == two_ and one is not None and b"ONE" in one and b"TWO" in one else None

    data = wait_until(settled, what="both saves in f.txt on both mounts")
    assert b"<<<<<<< conflict 1 of 1" in data
    assert b"base" in data


def test_make_sees_the_time_of_a_truncate_on_the_writing_mount(
    two: tuple[FuseMount, FuseMount],
) -> None:
    m1, _ = two
    (m1.repo / "Makefile").write_text("out: in\n\tcp in out\n")
    (m1.repo / "in").write_text("v1\n")
    time.sleep(1.1)
    assert _sh("make -s", m1.repo).returncode == 0
    time.sleep(1.1)
    assert _sh("truncate -s 100 in", m1.repo).returncode == 0
    result = _sh("make", m1.repo)
    assert result.returncode == 0, result.stderr
    assert "up to date" not in result.stdout, result.stdout
    assert (m1.repo / "out").stat().st_size == 100
    time.sleep(1.1)
    assert _sh("echo more >> in", m1.repo).returncode == 0
    result = _sh("make", m1.repo)
    assert "up to date" not in result.stdout, result.stdout
    assert (m1.repo / "out").read_bytes().endswith(b"more\n")


def test_a_directory_links_itself_and_its_subdirectories(
    two: tuple[FuseMount, FuseMount],
) -> None:
    m1, m2 = two
    top = m1.repo / "top"
    for name in ("a", "b", "c"):
        (top / name).mkdir(parents=True)
    (top / "file").write_text("x")
    assert os.stat(top).st_nlink == 2 + 3
    assert os.stat(top / "a").st_nlink == 2
    wait_until(lambda: (m2.repo / "top" / "c").is_dir(), what="top on m2")
    assert os.stat(m2.repo / "top").st_nlink == 5
    assert os.stat(m1.mountpoint).st_nlink == 3
    assert os.stat(m1.mountpoint / ORG).st_nlink == 3


def test_unmount_waits_for_the_queue_and_exits_zero(
    shared_server: NatsServer, start_fuse: StartFuse, repo_name: str
) -> None:
    deployment = Deployment([shared_server.url])
    mount = start_fuse(deployment, (repo_name,), name="u1")
    for i in range(50):
        (mount.repo / f"f{i}.txt").write_text(f"{i}\n")
    result = subprocess.run(
        [sys.executable, "-m", "mesa", "unmount", str(mount.mountpoint)],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "unmounted" in result.stdout
    mount.stop()
    second = start_fuse(deployment, (repo_name,), name="u2")
    assert sorted(os.listdir(second.repo)) == sorted(f"f{i}.txt" for i in range(50))


def test_unmount_exits_nonzero_and_names_the_writes_it_could_not_publish(
    nats_server: NatsServer, start_fuse: StartFuse
) -> None:
    deployment = Deployment([nats_server.url])
    create_repos(deployment, "app")
    mount = start_fuse(deployment, ("app",), "--unmount-timeout", "2", name="lost")
    (mount.repo / "kept.txt").write_text("kept\n")
    fd = os.open(mount.repo / "kept.txt", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    nats_server.stop()  # the server goes away; what is closed now stays queued
    (mount.repo / "queued.txt").write_text("never published\n")
    result = subprocess.run(
        [sys.executable, "-m", "mesa", "unmount", str(mount.mountpoint)],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "1 write(s) were not published" in result.stderr
    assert f"/{ORG}/app/queued.txt" in result.stderr
    assert "Traceback" not in result.stderr
    mount.stop()


def test_a_truncate_back_queued_behind_an_append_survives_a_server_restart(
    nats_server: NatsServer, start_fuse: StartFuse
) -> None:
    """``cat >> f; truncate -s <old size> f; chmod`` while the server is away.

    Both closes stay queued; once the server is back the append is published first,
    and the truncate's bytes equal what the tree holds until the append folds. They
    were skipped as a no-op (and the mode set back too), so the file kept the appended
    line: the torture test's read-your-writes failure right after a restart.
    """
    deployment = Deployment([nats_server.url])
    create_repos(deployment, "app")
    mount = start_fuse(deployment, ("app",), name="m")
    other = start_fuse(deployment, ("app",), name="other")
    f = mount.repo / "f.txt"
    f.write_bytes(b"old\n")
    os.chmod(f, 0o644)
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    nats_server.stop()
    with open(f, "ab") as out:
        out.write(b"appended while the server was away\n")
    os.chmod(f, 0o600)
    assert _sh(f"truncate -s 4 {f} && chmod 644 {f}", mount.repo).returncode == 0
    assert f.read_bytes() == b"old\n"
    nats_server.start()
    fd = os.open(f, os.O_RDONLY)
    try:
        os.fsync(fd)  # returns once everything queued for it is published and folded
    finally:
        os.close(fd)
    assert f.read_bytes() == b"old\n"
    assert f.stat().st_mode & 0o777 == 0o644
    seen = other.repo / "f.txt"
    wait_until(
        lambda: read_or_none(seen) == b"old\n" and seen.stat().st_mode & 0o777 == 0o644,
        what="the other mount to show the truncate and the chmod back",
    )
    # ...and stays so (nothing still in flight lands after).
    time.sleep(1.0)
    assert f.read_bytes() == read_or_none(seen) == b"old\n"


def test_a_daemon_logs_under_mesa_home_without_log_file(
    shared_server: NatsServer, repo_name: str, tmp_path: Path
) -> None:
    from tests.integration.conftest import TEST_HOME

    deployment = Deployment([shared_server.url])
    mountpoint = tmp_path / "daemon"
    mountpoint.mkdir()
    argv = [sys.executable, "-m", "mesa", "mount", str(mountpoint), "--org", ORG]
    started = subprocess.run(
        [*argv, "--repo", repo_name, "--daemonize", "--debug"],
        cwd=ROOT,
        env=deployment.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    try:
        (mountpoint / ORG / repo_name / "x.txt").write_text("x\n")
        logs = list((TEST_HOME / "logs").glob("mount-*.log"))
        assert logs, "no default log file"
        assert any("pyfuse3" in log.read_text() or "mesa" in log.read_text() for log in logs)
    finally:
        done = subprocess.run(
            [sys.executable, "-m", "mesa", "unmount", str(mountpoint)],
            cwd=ROOT,
            env=deployment.env(),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stderr


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_huge_sizes_fail_cleanly_and_holes_cost_no_memory(
    two: tuple[FuseMount, FuseMount],
) -> None:
    m1, m2 = two
    # Past the maximum file size: EFBIG, and nothing changes.
    result = _sh("truncate -s 999999999999999 f", m1.repo)
    assert result.returncode != 0
    assert "File too large" in result.stderr, result.stderr
    result = _sh("dd if=/dev/zero of=g bs=1 count=1 seek=1T 2>&1", m1.repo)
    assert result.returncode != 0
    assert "File too large" in result.stdout, result.stdout
    # A 256 MiB file that is one hole: the mount process does not hold it in memory.
    before_kb = _rss_kb(m1.proc.pid)
    assert _sh("truncate -s 256M sparse && printf end >> sparse", m1.repo).returncode == 0
    grown_kb = _rss_kb(m1.proc.pid) - before_kb
    assert grown_kb < 64 * 1024, f"the mount grew by {grown_kb} KiB for a sparse file"
    assert (m1.repo / "sparse").stat().st_size == 256 * 1024 * 1024 + 3
    with open(m1.repo / "sparse", "rb") as f:
        f.seek(256 * 1024 * 1024 - 2)
        assert f.read() == b"\0\0end"
    wait_until(
        lambda: (
            (m2.repo / "sparse").exists()
            and (m2.repo / "sparse").stat().st_size == 256 * 1024 * 1024 + 3
        ),
        timeout_s=120,
        what="the sparse file on m2",
    )


def test_appends_from_two_mounts_all_survive_once_and_unmixed(
    two: tuple[FuseMount, FuseMount],
) -> None:
    """``>>`` from two mounts at once: appends never conflict and never tear (rule 8)."""
    m1, m2 = two
    (m1.repo / "log.txt").write_text("start\n")
    wait_until(lambda: read_or_none(m2.repo / "log.txt") == b"start\n", what="log on m2")
    scripts = [
        (m, f'for i in $(seq 1 15); do echo "{name}-$i" >> log.txt; done')
        for m, name in ((m1, "one"), (m2, "two"))
    ]
    procs = [
        subprocess.Popen(["bash", "-c", script], cwd=m.repo, stderr=subprocess.PIPE)
        for m, script in scripts
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    expected = {f"{name}-{i}" for name in ("one", "two") for i in range(1, 16)}

    def settled() -> list[str] | None:
        a, b = read_or_none(m1.repo / "log.txt"), read_or_none(m2.repo / "log.txt")
        if a is None or a != b:
            return None
        lines = a.decode().splitlines()
        return lines if set(lines[1:]) >= expected else None

    lines = wait_until(settled, timeout_s=30, what="every append on both mounts")
    assert lines[0] == "start"
    assert sorted(lines[1:]) == sorted(expected), lines  # each exactly once, no extras
    for name in ("one", "two"):  # each writer's appends in its own order
        mine = [line for line in lines if line.startswith(name)]
        assert mine == [f"{name}-{i}" for i in range(1, 16)]
    assert "<<<<<<<" not in "\n".join(lines)


def _records(tag: bytes, count: int) -> bytes:
    """``count`` 64-byte lines, each naming ``tag`` and its number (a cut one shows)."""
    return b"".join(tag + b":%06d:" % i + b"." * (64 - len(tag) - 9) + b"\n" for i in range(count))


def test_a_reader_open_across_another_mounts_publish_never_reads_a_cut_version(
    two: tuple[FuseMount, FuseMount],
) -> None:
    """Torture seed 1170238483: a reader on m2 read the old bytes cut at the new size.

    The reader opened the file before m1 published a shorter version that keeps its
    first pages. The fold on m2 dropped the kernel's pages and attributes; a stat
    (any process) told the kernel the new size; the reader's next read refilled the
    pages from its handle's old bytes, and the kernel cut them at the new size: a
    version no close published. Whatever the reader gets must be a published
    version: the old one whole, or (its first page read before) the new one.
    """
    m1, m2 = two
    old = _records(b"old", 2048)  # 128 KiB
    new = old[: 40 * 64] + _records(b"new", 600)  # the first 2,560 bytes kept, 40,960 in all
    (m1.repo / "f.txt").write_bytes(old)
    wait_until(lambda: read_or_none(m2.repo / "f.txt") == old, what="the old version on m2")
    fd = os.open(m2.repo / "f.txt", os.O_RDONLY)
    try:
        first = os.read(fd, 2048)
        (m1.repo / "f.txt").write_bytes(new)
        # A stat on m2 (here: this process) fetches the new size once the fold's
        # invalidation reached the kernel.
        wait_until(
            lambda: os.stat(m2.repo / "f.txt").st_size == len(new), what="the new size on m2"
        )
        time.sleep(0.2)  # the invalidation's page drop follows its attribute drop
        rest = b""
        while chunk := os.read(fd, 1 << 20):
            rest += chunk
    finally:
        os.close(fd)
    got = first + rest
    assert got in (old, new), (
        f"read {len(got)} bytes: {got[-70:]!r} at the end; old is {len(old)} bytes, new {len(new)}"
    )
    assert read_or_none(m2.repo / "f.txt") == new


def test_a_file_open_for_writing_shows_one_version_until_it_closes(
    two: tuple[FuseMount, FuseMount],
) -> None:
    """While m2 holds a file open for writing, its readers get that buffer whole.

    Another mount's publish folds meanwhile: the size m2 reports stays the buffer's
    (every open reads the buffer while a writer holds it), so no read cuts the buffer
    at the new size; once the writer closes without writing, the new version shows.
    """
    m1, m2 = two
    old = _records(b"old", 2048)
    new = _records(b"new", 100)
    (m1.repo / "f.txt").write_bytes(old)
    wait_until(lambda: read_or_none(m2.repo / "f.txt") == old, what="the old version on m2")
    writer = os.open(m2.repo / "f.txt", os.O_RDWR)
    try:
        (m1.repo / "f.txt").write_bytes(new)
        (m1.repo / "mark").write_bytes(b"x")  # published after f.txt, folded after it
        wait_until(lambda: read_or_none(m2.repo / "mark") == b"x", what="m2 folding")
        # m2 folded the new version; its readers still get the writer's buffer, whole.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert os.stat(m2.repo / "f.txt").st_size == len(old)
            assert (m2.repo / "f.txt").read_bytes() == old
            time.sleep(0.1)
    finally:
        os.close(writer)
    wait_until(lambda: read_or_none(m2.repo / "f.txt") == new, what="the new version on m2")
    assert os.stat(m2.repo / "f.txt").st_size == len(new)
