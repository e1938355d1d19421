"""``mesa status`` names the change each live FUSE mount serves (issue 15, item 2).

Real ``mesa mount`` processes: one of two repos following ``main``, one pinned to a
change by id. ``mesa status --mount PATH`` reports the change the mount at PATH serves
(and follows it across a merge that moves ``main``); plain ``mesa status`` lists every
live mount of the repo with its change. Every mount is unmounted by the fixture.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fuse.conftest import StartFuse
from tests.fuse.fuseutil import ORG, create_repos, wait_until
from tests.integration.conftest import ROOT, Deployment
from tests.integration.natsutil import NatsServer


def mesa(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``mesa ARGS``; check the exit code and that stderr holds no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "mesa", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


def fails(env: dict[str, str], code: int, *args: str) -> str:
    """Run a command that must fail with ``code``; return its one stderr line."""
    lines = mesa(env, *args, code=code).stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def change_of(env: dict[str, str], revision: str = "@") -> str:
    """The full id of the change ``revision`` of ``app`` names."""
    first = mesa(env, "show", "-R", "app", revision, "--no-patch").stdout.splitlines()[0]
    assert first.startswith("Change ID: "), first
    return first.split()[-1]


def test_status_names_the_change_each_live_fuse_mount_serves(
    nats_server: NatsServer, start_fuse: StartFuse, tmp_path: Path
) -> None:
    deployment = Deployment([nats_server.url])
    create_repos(deployment, "app", "docs")
    env = {**deployment.env(), "MESA_ORG": ORG}
    main = change_of(env)
    feature = mesa(env, "new", "-R", "app", "-m", "feature").stdout.strip()
    m1 = start_fuse(deployment, ("app", "docs"), name="m1")
    m2 = start_fuse(deployment, (f"app@{feature}",), name="m2")

    status = mesa(env, "status", "--mount", str(m1.mountpoint), "-R", "app").stdout
    lines = status.splitlines()
    assert lines[0] == "Repo:      app"
    assert lines[1] == (
        f"Mount:     {m1.mountpoint}/{ORG}/app (pid {m1.proc.pid}), follows bookmark main"
    )
    assert lines[2].startswith(f"Change:    {main[:12]} ")
    # A path inside the mount names its repo; the mount's own write shows as changed.
    (m1.repo / "a.txt").write_text("a\n")
    inside = str(m1.repo / "a.txt")
    wait_until(
        lambda: "  A a.txt" in mesa(env, "status", "--mount", inside).stdout,
        what="a.txt in the status of m1",
    )
    pinned = mesa(env, "status", "--mount", str(m2.mountpoint)).stdout.splitlines()
    assert pinned[1] == (
        f"Mount:     {m2.mountpoint}/{ORG}/app (pid {m2.proc.pid}), pinned to this change"
    )
    assert pinned[2] == f"Change:    {feature[:12]} feature"

    # Plain status lists every live mount of the repo with the change it serves.
    plain = mesa(env, "status", "-R", "app").stdout
    assert f"Mounts:    {m1.mountpoint}/{ORG}/app: {main[:12]} (follows main, this change)\n" in (
        plain
    )
    assert f"           {m2.mountpoint}/{ORG}/app: {feature[:12]} (pinned)\n" in plain
    assert f"{m1.mountpoint}/{ORG}/docs" not in plain

    # main moves (a merge of the feature written through m2): m1 follows, and says so.
    fd = os.open(m2.repo / "f.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"feature\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    mesa(env, "bookmark", "create", "-R", "app", "feature", "-r", feature)
    mesa(env, "merge", "-R", "app", "feature", "-m", "merge feature")
    merged = change_of(env)
    assert merged not in (main, feature)
    wait_until(
        lambda: f"Change:    {merged[:12]} " in mesa(env, "status", "--mount", str(m1.repo)).stdout,
        what="m1's record naming the merge change",
    )
    assert (m1.repo / "f.txt").read_bytes() == b"feature\n"
    after = mesa(env, "status", "-R", "app").stdout
    assert f"{m1.mountpoint}/{ORG}/app: {merged[:12]} (follows main, this change)\n" in after
    assert f"{m2.mountpoint}/{ORG}/app: {feature[:12]} (pinned)\n" in after

    # Paths that are no live mount, or not in a repo it serves: one line, exit 1.
    line = fails(env, 1, "status", "--mount", str(tmp_path))
    assert line.startswith(f"mesa status: error: {tmp_path}: no live mesa mount there"), line
    assert str(m1.mountpoint) in line
    line = fails(env, 1, "status", "--mount", str(m1.mountpoint / "other" / "x"))
    assert f"its paths are {m1.mountpoint}/<org>/<repo>/..." in line
    assert "(mounted there: acme/app, acme/docs)" in line
    line = fails(env, 1, "status", "--mount", str(m2.mountpoint), "-R", "docs")
    assert "repo acme/docs is not mounted there (mounted there: acme/app)" in line
    line = fails(env, 2, "status", "--mount", str(m1.mountpoint))
    assert "serves acme/app, acme/docs: pass -R/--repo" in line
    assert "not both" in fails(env, 2, "status", "--mount", str(m1.repo), "-r", "main")

    # An unmounted mount is no longer listed.
    m2.stop()
    gone = mesa(env, "status", "-R", "app").stdout
    assert str(m2.mountpoint) not in gone
    assert f"{m1.mountpoint}/{ORG}/app: {merged[:12]}" in gone
