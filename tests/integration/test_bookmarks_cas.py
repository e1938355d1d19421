"""Bookmark compare-and-set from two OS processes on a real nats-server (issue 6, item 5).

Each test runs its own nats-server (fsync always). The racing processes run this very
module (``python -m tests.integration.test_bookmarks_cas <mode> ...``, see `child`):
they print JSON lines on stdout and wait for ``go`` on stdin, so the test can line
both up before either writes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import pytest

from mesa import (
    Bookmark,
    ConflictError,
    Mesa,
    RepoConfig,
    ValidationError,
    _bookmarks,
    _changes,
    instruments,
)
from tests.integration.conftest import ROOT, Deployment
from tests.integration.natsutil import NatsServer

pytestmark = pytest.mark.integration

REPO = "app"
LIMIT_S = 60.0


# -- the child process -------------------------------------------------------------------


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def child_cas(mesa: Mesa, change_id: str) -> None:
    """Read ``main``, report its revision, wait for ``go``, then compare-and-set it."""
    scope = await instruments.repo_store(mesa, REPO)
    found = await _bookmarks.get_record(scope, "main")
    assert found is not None
    emit({"type": "ready", "revision": found[1]})
    await asyncio.to_thread(sys.stdin.readline)
    try:
        await _bookmarks.cas_move(scope, "main", change_id, found[1])
    except ConflictError as exc:
        emit({"type": "done", "ok": False, "error": type(exc).__name__})
        return
    emit({"type": "done", "ok": True})


async def child_advance(mesa: Mesa, rounds: int, name: str) -> None:
    """``rounds`` times: fork a change off main's change and fast-forward main onto it.

    A lost race (ConflictError, or a move that is no longer a fast-forward because the
    other process moved main first) is retried from a fresh read.
    """
    emit({"type": "ready"})
    await asyncio.to_thread(sys.stdin.readline)
    moved: list[str] = []
    retries = 0
    while len(moved) < rounds:
        current = (await mesa.bookmarks.get(REPO, "main")).change_id
        child = await mesa.changes.create(REPO, base_change_id=current, message=name)
        try:
            await mesa.bookmarks.move(REPO, "main", change_id=child.change_id)
        except (ConflictError, ValidationError):
            retries += 1
            continue
        moved.append(child.change_id)
    emit({"type": "done", "moved": moved, "retries": retries})


async def child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["cas", "advance"])
    parser.add_argument("--change")
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--name", default="")
    args = parser.parse_args(argv)
    mesa = Mesa(org="acme", api_key=os.environ["MESA_API_KEY"])
    if args.mode == "cas":
        await child_cas(mesa, args.change)
    else:
        await child_advance(mesa, args.rounds, args.name)
    await mesa.transport.aclose()
    return 0


# -- the test side -----------------------------------------------------------------------


class Child:
    """A racing process: JSON lines out, ``go`` in."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, deployment: Deployment, *argv: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.test_bookmarks_cas",
            *argv,
            cwd=ROOT,
            env=deployment.env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def expect(self, kind: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), LIMIT_S)
            if not line:
                assert self.proc.stderr is not None
                err = await self.proc.stderr.read()
                raise AssertionError(f"child exited before {kind}:\n{err.decode()[-4000:]}")
            message = json.loads(line)
            if message["type"] == kind:
                return dict(message)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@pytest.fixture
def deployment(nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    """This process and the children on ``nats_server`` with one fresh API key."""
    deployment = Deployment([nats_server.url])
    for key, value in deployment.env().items():
        if key.startswith("MESA_"):
            monkeypatch.setenv(key, value)
    return deployment


async def test_two_processes_compare_and_set_one_bookmark_at_once(
    deployment: Deployment,
) -> None:
    """Both read main at one revision, then both write: one wins, one gets ConflictError."""
    mesa = Mesa(org="acme", api_key=deployment.api_key)
    await mesa.repos.create(REPO)
    main = (await mesa.bookmarks.get(REPO, "main")).change_id
    ours = (await mesa.changes.create(REPO, base_change_id=main)).change_id
    theirs = (await mesa.changes.create(REPO, base_change_id=main)).change_id
    a = await Child.start(deployment, "cas", "--change", ours)
    b = await Child.start(deployment, "cas", "--change", theirs)
    try:
        ready = [await a.expect("ready"), await b.expect("ready")]
        assert ready[0]["revision"] == ready[1]["revision"]  # both read the same state
        a.go()
        b.go()
        done = {"a": await a.expect("done"), "b": await b.expect("done")}
    finally:
        await a.close()
        await b.close()
    winners = [who for who, d in done.items() if d["ok"]]
    assert len(winners) == 1, done
    loser = next(d for d in done.values() if not d["ok"])
    assert loser["error"] == "ConflictError"
    final = (await mesa.bookmarks.get(REPO, "main")).change_id
    assert final == {"a": ours, "b": theirs}[winners[0]]  # the winner's move stands
    await mesa.transport.aclose()


async def test_two_processes_advancing_main_lose_no_update(deployment: Deployment) -> None:
    """Both processes fast-forward main repeatedly, retrying lost races; every move that
    succeeded stays in main's history (a lost update would fork it off)."""
    rounds = 8
    mesa = Mesa(org="acme", api_key=deployment.api_key)
    await mesa.repos.create(REPO)
    children = [
        await Child.start(deployment, "advance", "--rounds", str(rounds), "--name", name)
        for name in ("a", "b")
    ]
    try:
        for c in children:
            await c.expect("ready")
        for c in children:
            c.go()
        done = [await c.expect("done") for c in children]
    finally:
        for c in children:
            await c.close()
    moved = [change for d in done for change in d["moved"]]
    assert len(moved) == len(set(moved)) == 2 * rounds
    final = (await mesa.bookmarks.get(REPO, "main")).change_id
    scope = await instruments.repo_store(mesa, REPO)
    history = await _changes.ancestry(scope, final)
    missing = [change for change in moved if change not in history]
    assert not missing, f"lost updates: {missing} (retries: {[d['retries'] for d in done]})"
    # Every successful move was onto a child of the previous tip: one straight line.
    chain = [c for c, reach in sorted(history.items(), key=lambda kv: kv[1].distance)]
    assert set(chain[: 2 * rounds]) == set(moved)
    await mesa.transport.aclose()


async def test_a_mount_pinned_to_main_follows_a_move_made_by_another_process(
    deployment: Deployment,
) -> None:
    mesa = Mesa(org="acme", api_key=deployment.api_key)
    await mesa.repos.create(REPO)
    main = (await mesa.bookmarks.get(REPO, "main")).change_id
    ahead = (await mesa.changes.create(REPO, base_change_id=main)).change_id
    async with mesa.fs.mount(repos=[RepoConfig(REPO, bookmark="main")]) as fs:
        switched = asyncio.Event()
        fs._repos[REPO].add_switch_listener(lambda _: switched.set())
        mover = await Child.start(deployment, "cas", "--change", ahead)
        try:
            await mover.expect("ready")
            started = time.monotonic()
            mover.go()
            assert (await mover.expect("done"))["ok"]
            await asyncio.wait_for(switched.wait(), 10)
        finally:
            await mover.close()
        assert fs._repos[REPO].change_id == ahead
        assert time.monotonic() - started < 10
        assert isinstance(await mesa.bookmarks.get(REPO, "main"), Bookmark)
    await mesa.transport.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(child(sys.argv[1:])))
