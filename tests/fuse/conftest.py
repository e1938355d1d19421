"""Fixtures of the FUSE tests: a nats-server, repos, and ``mesa mount`` processes.

The tests of the mounting modules are integration tests with a real kernel mount.
They are skipped, with the reason, only where FUSE cannot work (no usable /dev/fuse,
no fusermount3, no pyfuse3); everything they start is unmounted and killed in a
finalizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fuse.fuseutil import FuseMount, create_repos, fuse_unusable
from tests.integration.conftest import Deployment, nats_server, secured, spawn_mount
from tests.integration.natsutil import NatsServer, start_nats

__all__ = ["nats_server", "secured", "spawn_mount"]

_REASON = fuse_unusable()
#: The modules that mount for real (test_planner.py needs no kernel).
MOUNTING = frozenset(
    {
        "test_posix.py",
        "test_tools.py",
        "test_realtime.py",
        "test_bench.py",
        "test_edges.py",
        "test_torture.py",
        "test_token_mount.py",
        "test_xattrs.py",
        "test_status.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the mounting tests as integration; skip them where FUSE is unusable."""
    here = Path(__file__).parent
    for item in items:
        path = Path(str(item.fspath))
        if path.parent == here and path.name in MOUNTING:
            item.add_marker(pytest.mark.integration)
            if _REASON is not None:
                item.add_marker(pytest.mark.skip(reason=f"FUSE unavailable: {_REASON}"))


StartFuse = Callable[..., FuseMount]


@pytest.fixture
def start_fuse(tmp_path: Path) -> Iterator[StartFuse]:
    """Yield ``start(deployment, repos=("app",), *args, name="mnt")``; unmounts all at the end."""
    mounts: list[FuseMount] = []

    def start(
        deployment: Deployment, repos: tuple[str, ...] = ("app",), *args: str, name: str = "mnt"
    ) -> FuseMount:
        mount = FuseMount.start(tmp_path / name, deployment, repos, *args)
        mounts.append(mount)
        return mount

    try:
        yield start
    finally:
        for mount in mounts:
            mount.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for a whole module (fsync always)."""
    server = start_nats(tmp_path_factory.mktemp("nats"), sync_always=True)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def shared_mount(
    shared_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FuseMount]:
    """A module-wide mount of ``acme/app`` (read-write) and ``acme/docs`` (read-only)."""
    if _REASON is not None:
        pytest.skip(f"FUSE unavailable: {_REASON}")
    deployment = Deployment([shared_server.url])
    create_repos(deployment, "app", "docs")
    mount = FuseMount.start(
        tmp_path_factory.mktemp("fuse") / "mnt",
        deployment,
        ("app", "docs"),
        "--read-only",
        "docs",
    )
    mount.extra["deployment"] = deployment
    try:
        yield mount
    finally:
        mount.stop()
