"""Real FUSE mounts for tests: ``python -m mesa mount`` in a subprocess.

`FuseMount.start` runs the mount command against a test's nats-server (through
``MESA_NATS_URL`` and ``MESA_API_KEY``, see `Deployment`), waits until the mount
point is mounted and the process printed its ``mounted`` line, and `FuseMount.stop`
always unmounts (``fusermount3 -u``, lazily if busy) and kills the process. Fixtures
call `stop` in a finalizer, whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.conftest import ROOT, Deployment

ORG = "acme"
MOUNT_TIMEOUT_S = 30.0

CREATE_REPOS = """
import asyncio, sys
from mesa import Mesa, ConflictError
async def main():
    mesa = Mesa(org=sys.argv[1])
    window = int(sys.argv[2])
    options = {"race_window_ms": window} if window else {}
    for name in sys.argv[3:]:
        try:
            await mesa.repos.create(name, **options)
        except ConflictError:
            pass
    await mesa.transport.aclose()
asyncio.run(main())
"""


def fuse_unusable() -> str | None:
    """Return why FUSE mounts cannot run here, or None if they can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist (no FUSE in this kernel or container)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt install fuse3)"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        return f"pyfuse3 is not importable ({exc}): pip install 'mesafs[fuse]'"
    return None


def create_repos(deployment: Deployment, *names: str, race_window_ms: int = 0) -> None:
    """Create repos (ignoring existing ones) from a short-lived process.

    ``race_window_ms`` 0 keeps the default window.
    """
    subprocess.run(
        [sys.executable, "-c", CREATE_REPOS, ORG, str(race_window_ms), *names],
        cwd=ROOT,
        env=deployment.env(),
        check=True,
        timeout=60,
    )


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is listed in /proc/mounts (true for a dead FUSE mount too)."""
    target = os.path.realpath(path)
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


@dataclass
class FuseMount:
    """One ``mesa mount`` process and its mount point."""

    mountpoint: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def repo(self) -> Path:
        """The first repo's directory, ``MOUNTPOINT/acme/app`` by default."""
        return self.mountpoint / ORG / self.extra.get("repo", "app")

    def log(self) -> str:
        """The process's output so far."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    @classmethod
    def start(
        cls,
        mountpoint: Path,
        deployment: Deployment,
        repos: tuple[str, ...] = ("app",),
        *args: str,
    ) -> FuseMount:
        """Mount ``repos`` at ``mountpoint`` and return once it serves requests."""
        mountpoint.mkdir(parents=True, exist_ok=True)
        log_path = mountpoint.parent / f"{mountpoint.name}.log"
        argv = [sys.executable, "-m", "mesa", "mount", str(mountpoint), "--org", ORG]
        for repo in repos:
            argv += ["--repo", repo]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*argv, *args],
                cwd=ROOT,
                env=deployment.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        mount = cls(mountpoint, proc, log_path, extra={"repo": repos[0].partition("@")[0]})
        try:
            mount.wait_ready()
        except BaseException:
            mount.stop()
            raise
        return mount

    def wait_ready(self, timeout_s: float = MOUNT_TIMEOUT_S) -> None:
        """Wait for the ``mounted`` line and the mount point."""
        deadline = time.monotonic() + timeout_s
        while not ("mounted " in self.log() and os.path.ismount(self.mountpoint)):
            if self.proc.poll() is not None:
                raise AssertionError(f"mesa mount exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not mounted within {timeout_s}s:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Unmount (lazily if busy) and end the process; safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        if is_mounted(self.mountpoint):
            result = subprocess.run(
                ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, check=False
            )
            if result.returncode != 0:
                subprocess.run(
                    ["fusermount3", "-uz", str(self.mountpoint)], capture_output=True, check=False
                )
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def wait_until(
    predicate: Callable[[], Any], timeout_s: float = 15.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = predicate()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s (last: {last!r})")
        time.sleep(0.02)


def read_or_none(path: Path) -> bytes | None:
    """The bytes of ``path``, or None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
