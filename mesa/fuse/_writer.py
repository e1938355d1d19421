"""Write-behind: the FUSE mount's log writer, one ordered queue per repo.

What the mount shows is ahead of the log. A file created, a directory made, a
file's bytes at close, a chmod or utimens: each returns to the kernel once this
mount shows it (`mesa.fuse._inodes` pending nodes, `mesa.fuse._handles` buffers,
`Inode.set_mode`/``set_times``) and *schedules* its inode here. One worker per repo
then appends, in the order the inodes were scheduled, the entries that make the log
hold what the mount shows (`RepoMount.publish`: each entry once the one before it
was acknowledged, without waiting for the fold), and a settler waits for each job's
entries to fold before it reconciles the inode with the tree (binding a pending
inode to its node, dropping the overrides the tree now holds).

Ordering: entries land in the log in the order their syscalls returned. Other
mutations (unlink, rmdir, rename, symlink, mknod, truncate of a file with no open
buffer) first wait at `LogWriter.barrier` until everything scheduled before them is
folded, then run as before (checked against the tree, durable and folded when they
return). So another mount never sees an effect before its cause, and a sync op
always sees this mount's earlier writes in the tree.

Durability: as on a local filesystem, ``close`` is not a durability point and
``fsync`` is: fsync returns once everything this mount scheduled before it is
durable in the log and folded here.

Failures, never silent:

- *The server is unreachable*: the job's entries are retried, each under its own
  message id, however long the server is away (`RepoMount.publish` with
  ``unreachable``; `engine.driver.RetryPolicy.persistent_delay_ms`), so they land
  exactly once when it is back. Meanwhile a barrier (fsync, or an op that must wait
  for the queue) waits up to the SDK's retry budget and then raises ``EIO`` ("the
  server is unreachable"); the queue keeps its order and goes on by itself.
- *A job fails for any other reason* (a refused append, a bug): that job is dropped,
  the failure is logged with its reason and kept (`LogWriter.failures`), the next
  fsync of that inode raises ``EIO`` once, and the queue goes on with the next job. A
  failing job never wedges the queue.
- *The mount closed or broke*: nothing more can be appended; what was queued is
  reported as not published.

A FUSE process killed before its queue drained loses what it had not appended, as a
crash loses a page cache; an orderly unmount drains the queue first and reports every
path it could not publish (`LogWriter.close`). ``MAX_QUEUED`` jobs per repo bound the
queue: a syscall that would exceed it waits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine import driver
from mesa._mount import RepoMount
from mesa.errors import MesaError
from mesa.fuse._inodes import Inode

log = logging.getLogger("mesa.fuse")

#: Jobs queued per repo before a scheduling syscall waits for the writer.
MAX_QUEUED = 4096
#: How long a barrier waits on an unreachable server before it raises EIO.
UNREACHABLE_EIO_S = driver.DEFAULT_RETRY.budget_ms / 1000


@dataclass(frozen=True)
class Failure:
    """A write this mount could not publish: where, and why."""

    path: str
    reason: str


def describe(exc: BaseException) -> str:
    """Return a reason that is never empty: the type, and the message if there is one."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Published:
    """What a job appended: its last sequence (None: nothing) and what to do once folded."""

    seq: int | None
    settle: Callable[[], None]


#: A job appends what the mount shows of an inode; it reports an unreachable server
#: through the callback (and keeps trying) and raises for anything else.
Job = Callable[[Inode, Callable[[MesaError], None]], Awaitable[Published]]


@dataclass(eq=False)
class _Queue:
    repo: RepoMount
    jobs: collections.deque[Inode] = field(default_factory=collections.deque)
    #: jobs scheduled so far / whose entries were appended / folded and settled
    scheduled: int = 0
    appended: int = 0
    settled: int = 0
    #: The server is unreachable since this loop time (None: it is not).
    unreachable: MesaError | None = None
    unreachable_since: float = 0.0
    closed: BaseException | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    folding: asyncio.Queue[tuple[int, Published]] = field(default_factory=asyncio.Queue)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def advance(self) -> None:
        """Wake whoever waits for progress (or for an error)."""
        self.progress.set()
        self.progress = asyncio.Event()


class LogWriter:
    """The write-behind queues of one FUSE mount (see module docstring)."""

    def __init__(self, run: Job, path_of: Callable[[Inode], str]) -> None:
        self._run = run
        self._path_of = path_of
        self._queues: dict[int, _Queue] = {}
        #: Jobs dropped because they failed for a reason other than the server.
        self.failures: list[Failure] = []

    def _queue(self, repo: RepoMount) -> _Queue:
        q = self._queues.get(id(repo))
        if q is None:
            q = _Queue(repo)
            self._queues[id(repo)] = q
            q.tasks = [
                asyncio.create_task(self._work(q), name=f"mesa-fuse-writer-{repo.name}"),
                asyncio.create_task(self._settle(q), name=f"mesa-fuse-settler-{repo.name}"),
            ]
        return q

    def schedule(self, inode: Inode) -> None:
        """Queue ``inode`` (once: a queued job publishes its state when it runs)."""
        assert inode.repo is not None
        q = self._queue(inode.repo)
        if q.closed is not None:
            raise OSError(errno.EIO, f"the mount's writer stopped: {q.closed}")
        q.scheduled += 1
        if inode.queued:
            # Its queued job covers this too; count it so barriers wait for that job.
            q.jobs.append(_NOTHING)
        else:
            inode.queued = True
            q.jobs.append(inode)
        q.wake.set()

    async def throttle(self, repo: RepoMount) -> None:
        """Wait while the repo's queue is full."""
        q = self._queue(repo)
        while len(q.jobs) > MAX_QUEUED and q.closed is None:
            await q.progress.wait()

    def queued(self, repo: RepoMount) -> int:
        """Jobs scheduled and not settled yet."""
        q = self._queues.get(id(repo))
        return 0 if q is None else q.scheduled - q.settled

    async def barrier(self, repo: RepoMount) -> None:
        """Wait until every job scheduled so far is appended, folded and settled.

        Raises:
            OSError: ``EIO`` while the writer fails to append (or once it stopped).
        """
        q = self._queues.get(id(repo))
        if q is None:
            return
        target = q.scheduled
        loop = asyncio.get_running_loop()
        while q.settled < target:
            if q.closed is not None:
                raise OSError(errno.EIO, f"writing to the log failed: {describe(q.closed)}")
            if q.unreachable is not None:
                waited = loop.time() - q.unreachable_since
                if waited >= UNREACHABLE_EIO_S:
                    raise OSError(
                        errno.EIO,
                        f"the server is unreachable ({describe(q.unreachable)}); "
                        "the writes stay queued and are published when it is back",
                    )
                progress = q.progress
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), UNREACHABLE_EIO_S - waited)
                continue
            await q.progress.wait()

    async def close(self, timeout_s: float) -> list[Failure]:
        """Drain every queue (at most ``timeout_s``), stop the workers; return what was lost.

        The list names every write that was not published: jobs dropped on a failure
        (with their reason) and jobs still queued when the time ran out or the mount
        closed. Empty when everything reached the log.
        """
        lost = list(self.failures)
        for q in list(self._queues.values()):
            try:
                await asyncio.wait_for(self.barrier(q.repo), timeout_s)
            except (OSError, TimeoutError) as exc:
                reason = describe(exc) if str(exc) else f"gave up after {timeout_s:g} s"
                lost.extend(Failure(self._path_of(i), reason) for i in q.jobs if i is not _NOTHING)
                left = q.scheduled - q.settled
                log.error("%d writes to %s were not published: %s", left, q.repo.name, reason)
            for task in q.tasks:
                task.cancel()
            await asyncio.gather(*q.tasks, return_exceptions=True)
        self._queues.clear()
        return lost

    async def _work(self, q: _Queue) -> None:
        loop = asyncio.get_running_loop()

        def unreachable(exc: MesaError) -> None:
            if q.unreachable is None:
                q.unreachable_since = loop.time()
                log.warning("%s: the server is unreachable, retrying: %s", q.repo.name, exc)
            q.unreachable = exc
            q.advance()

        while True:
            while not q.jobs:
                q.wake.clear()
                await q.wake.wait()
            inode = q.jobs[0]
            if inode is _NOTHING:
                published = Published(None, _noop)
            else:
                inode.queued = False
                try:
                    published = await self._run(inode, unreachable)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if _final(q.repo):
                        inode.queued = True
                        self._stop(q, exc)
                        return
                    self._failed(inode, exc)
                    published = Published(None, _noop)
            if q.unreachable is not None:
                log.warning("%s: the server is reachable again", q.repo.name)
                q.unreachable = None
            q.jobs.popleft()
            q.appended += 1
            q.folding.put_nowait((q.appended, published))

    def _failed(self, inode: Inode, exc: Exception) -> None:
        """A job failed for good: keep the reason, tell the next fsync, go on."""
        failure = Failure(self._path_of(inode), describe(exc))
        self.failures.append(failure)
        inode.write_error = failure.reason
        log.error("publishing %s failed, not retried: %s", failure.path, failure.reason)

    async def _settle(self, q: _Queue) -> None:
        while True:
            ticket, published = await q.folding.get()
            if published.seq is not None:
                try:
                    await q.repo.wait_folded(published.seq)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._stop(q, exc)
                    return
            try:
                published.settle()
            except Exception as exc:
                log.exception("settling a published write failed: %s", describe(exc))
            q.settled = ticket
            q.advance()

    def _stop(self, q: _Queue, exc: BaseException) -> None:
        """The mount is closed or broken: nothing more can be appended."""
        left = q.scheduled - q.settled
        if left:
            log.error("%d writes to %s cannot be published: %s", left, q.repo.name, describe(exc))
        self.failures.extend(
            Failure(self._path_of(i), describe(exc)) for i in q.jobs if i is not _NOTHING
        )
        q.closed = exc
        q.jobs.clear()
        q.advance()


def _final(repo: RepoMount) -> bool:
    """Whether a failure of ``repo`` is final (closed, expired or broken), not transient."""
    try:
        repo.check_alive()
    except Exception:
        return True
    return False


def _noop() -> None:
    """Settle nothing."""


#: A placeholder job: the inode was already queued when it was scheduled again.
_NOTHING = Inode(0, None, None)
