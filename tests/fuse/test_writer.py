"""The FUSE log writer's queue, with a scripted job (no kernel, no server)."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest

from mesa.errors import MesaConnectionError, MesaError
from mesa.fuse._inodes import Inode
from mesa.fuse._writer import Failure, LogWriter, Published


def path_of(node: Inode) -> str:
    return f"/acme/app/{node.name}"


class FakeRepo:
    """What the writer uses of a RepoMount: a name, liveness and folding."""

    name = "app"

    def __init__(self) -> None:
        self.closed = False
        self.folded = 0
        self.fold_event = asyncio.Event()

    def check_alive(self) -> None:
        if self.closed:
            raise OSError(errno.EBADF, "closed")

    async def wait_folded(self, seq: int) -> None:
        while self.folded < seq:
            self.fold_event.clear()
            await self.fold_event.wait()

    def fold_to(self, seq: int) -> None:
        self.folded = seq
        self.fold_event.set()


def inode(repo: FakeRepo, ino: int) -> Inode:
    return Inode(ino, repo, None, name=f"n{ino}")  # type: ignore[arg-type]


class Script:
    """A job that appends one entry per run.

    While ``unreachable`` is set it behaves as `RepoMount.publish` does with a
    persistent writer: it reports the error and tries again until the server is back.
    ``failing`` makes it raise (a failure other than the server's).
    """

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.settled: list[int] = []
        self.failing: Exception | None = None
        self.unreachable: MesaError | None = None
        self.seq = 0

    async def __call__(self, node: Inode, unreachable: Any) -> Published:
        while self.unreachable is not None:
            unreachable(self.unreachable)
            await asyncio.sleep(0.005)
        if self.failing is not None:
            failing, self.failing = self.failing, None
            raise failing
        self.ran.append(node.ino)
        self.seq += 1
        return Published(self.seq, lambda: self.settled.append(node.ino))


async def wait_for(predicate: Any) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


async def test_jobs_run_in_order_once_each_and_settle_after_their_fold() -> None:
    repo, script = FakeRepo(), Script()
    writer = LogWriter(script, path_of)
    a, b = inode(repo, 1), inode(repo, 2)
    writer.schedule(a)
    writer.schedule(b)
    writer.schedule(a)  # still queued: its one job covers this
    await wait_for(lambda: len(script.ran) == 2)
    assert script.ran == [1, 2]
    assert script.settled == []  # nothing folded yet
    barrier = asyncio.create_task(writer.barrier(repo))  # type: ignore[arg-type]
    await asyncio.sleep(0.01)
    assert not barrier.done()
    repo.fold_to(1)
    await wait_for(lambda: script.settled == [1])
    assert not barrier.done()
    repo.fold_to(2)
    await asyncio.wait_for(barrier, 1)
    assert script.settled == [1, 2]
    assert writer.queued(repo) == 0  # type: ignore[arg-type]
    await writer.close(1)


async def test_a_failing_append_is_retried_and_barriers_report_eio_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mesa.fuse._writer.UNREACHABLE_EIO_S", 0.05)
    repo, script = FakeRepo(), Script()
    writer = LogWriter(script, path_of)
    script.unreachable = MesaConnectionError("server unreachable")
    writer.schedule(inode(repo, 7))
    with pytest.raises(OSError, match="server unreachable") as caught:
        await asyncio.wait_for(writer.barrier(repo), 1)  # type: ignore[arg-type]
    assert caught.value.errno == errno.EIO
    assert script.ran == []
    script.unreachable = None  # the server is back: the same job goes through
    await wait_for(lambda: script.ran == [7])
    repo.fold_to(1)
    await asyncio.wait_for(writer.barrier(repo), 1)  # type: ignore[arg-type]
    assert script.settled == [7]
    await writer.close(1)


async def test_a_closed_mount_stops_the_writer_and_later_schedules_fail() -> None:
    repo, script = FakeRepo(), Script()
    writer = LogWriter(script, path_of)
    repo.closed = True
    script.failing = OSError(errno.EBADF, "closed")
    node = inode(repo, 3)
    writer.schedule(node)
    with pytest.raises(OSError, match="closed") as caught:
        await asyncio.wait_for(writer.barrier(repo), 1)  # type: ignore[arg-type]
    assert caught.value.errno == errno.EIO
    with pytest.raises(OSError, match="stopped") as again:
        writer.schedule(inode(repo, 4))
    assert again.value.errno == errno.EIO
    assert await writer.close(1) == [Failure(path_of(node), "OSError: [Errno 9] closed")]


async def test_a_job_failing_for_another_reason_is_dropped_and_the_queue_goes_on() -> None:
    """A bug or a refused append must never wedge the queue (issue 12, bug 1)."""
    repo, script = FakeRepo(), Script()
    writer = LogWriter(script, path_of)
    bad, good = inode(repo, 5), inode(repo, 6)
    script.failing = AssertionError()  # an empty message, as a bare assert gives
    writer.schedule(bad)
    writer.schedule(good)
    await wait_for(lambda: script.ran == [6])
    repo.fold_to(1)
    await asyncio.wait_for(writer.barrier(repo), 1)  # type: ignore[arg-type]
    assert script.settled == [6]
    # The reason is never empty, and the next fsync of that inode is told, once.
    assert writer.failures == [Failure(path_of(bad), "AssertionError")]
    assert bad.write_error == "AssertionError"
    assert good.write_error is None
    assert await writer.close(1) == [Failure(path_of(bad), "AssertionError")]


async def test_close_reports_every_write_still_queued_when_it_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mesa.fuse._writer.UNREACHABLE_EIO_S", 10.0)
    repo, script = FakeRepo(), Script()
    writer = LogWriter(script, path_of)
    script.unreachable = MesaConnectionError("server unreachable")
    first, second = inode(repo, 8), inode(repo, 9)
    writer.schedule(first)
    writer.schedule(second)
    lost = await writer.close(0.1)
    assert [f.path for f in lost] == [path_of(first), path_of(second)]
    assert all(f.reason for f in lost)
    assert script.ran == []
