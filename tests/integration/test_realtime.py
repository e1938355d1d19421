"""Realtime across real OS processes on a real nats-server (issue 3, item 5).

Each test runs its own nats-server (fsync always) and mount processes
(``tests/integration/mountproc.py``); the test process only drives them and checks
what they report. "Acknowledged" means the writer's SDK call returned.
"""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from typing import Any

import pytest

from tests.integration.conftest import Deployment, MountProcess, SpawnMount
from tests.integration.mountproc import sha256, workload_bytes
from tests.integration.natsutil import NatsServer

pytestmark = pytest.mark.integration

EVENT_TIMEOUT_S = 20.0
CONFLICT_HEADER = b"<<<<<<< conflict 1 of 1\n"


def acked(child: MountProcess) -> dict[str, str]:
    """Return path -> sha256 of every write the child reported acknowledged."""
    return {m["path"]: m["sha256"] for m in child.of_type("ack")}


def assert_all_visible(acks: dict[str, str], dump: dict[str, Any], who: str) -> None:
    """Every acknowledged write reads back with exactly its bytes in ``dump``."""
    tree = dump["tree"]
    missing = sorted(p for p in acks if p not in tree)
    assert not missing, f"{who}: {len(missing)} acknowledged writes missing, e.g. {missing[:5]}"
    wrong = sorted(p for p, digest in acks.items() if tree[p].get("sha256") != digest)
    assert not wrong, f"{who}: {len(wrong)} acknowledged writes read back wrong: {wrong[:5]}"


def assert_same_tree(dumps: dict[str, dict[str, Any]]) -> None:
    """All mounts list the same tree with the same bytes, at the same log position."""
    (first_name, first), *rest = dumps.items()
    for name, dump in rest:
        assert dump["tree"] == first["tree"], f"{name} and {first_name} list different trees"
        assert dump["seq"] == first["seq"], f"{name} and {first_name} folded different prefixes"
        assert dump["hash"] == first["hash"], f"{name} and {first_name} hold different trees"


def workload_done(child: MountProcess, prefix: str) -> Any:
    return lambda messages: next(
        (m for m in messages if m.get("type") == "workload-done" and m["prefix"] == prefix), None
    )


async def test_subscriber_process_reads_new_bytes_in_its_handler(
    nats_server: NatsServer, spawn_mount: SpawnMount
) -> None:
    """A writes; B's subscription handler runs for each change and reads A's new bytes."""
    deployment = Deployment([nats_server.url])
    a = await spawn_mount("A", deployment, create=True)
    b = await spawn_mount("B", deployment)
    assert a.mounted["change_id"] == b.mounted["change_id"]
    await b.call("subscribe")

    big = workload_bytes("big", 300_000)  # a blob, not inline
    steps: list[tuple[str, bytes | None]] = [
        ("notes.md", b"first version\n"),
        ("notes.md", b"second version\n"),
        ("big.bin", big),
        ("notes.md", None),  # removed
    ]
    for name, data in steps:
        path = f"/acme/app/{name}"
        if data is None:
            await a.call("rm", path=name)
        else:
            await a.write(name, data)
        # A waits for B before the next step, so B's handler cannot read a later version.

        def arrived(
            messages: list[dict[str, Any]], path: str = path, data: bytes | None = data
        ) -> Any:
            for m in messages:
                if m.get("type") != "event" or m["path"] != path:
                    continue
                if data is None and m.get("missing"):
                    return m
                if data is not None and base64.b64decode(m.get("data", "")) == data:
                    return m
            return None

        event = await b.wait_for(arrived, EVENT_TIMEOUT_S, f"B's handler reading {path}")
        assert event["recursive"] is False
        assert "error" not in event, event


def conflict_block(first: bytes, base: bytes, second: bytes) -> bytes:
    """The jj "snapshot" block of a two-sided conflict (docs/conflicts.md)."""
    return (
        CONFLICT_HEADER
        + b"+++++++ side #1\n"
        + first
        + b"------- base\n"
        + base
        + b"+++++++ side #2\n"
        + second
        + b">>>>>>> conflict 1 of 1 ends\n"
    )


async def test_both_processes_write_one_file_at_once_and_read_the_same_conflict(
    nats_server: NatsServer, spawn_mount: SpawnMount
) -> None:
    """Two processes write one file at the same instant; both read one jj block with both sides.

    The writes race only if neither process had folded the other's entry when it
    issued its own. Both spin until the same wall-clock instant, so that is all but
    certain; if a run still came out sequential (no conflict, which is then correct),
    it is repeated on a fresh file, at most three times in all.
    """
    deployment = Deployment([nats_server.url])
    a = await spawn_mount("A", deployment, create=True)
    b = await spawn_mount("B", deployment)
    base = b"shared notes\n"
    mine, theirs = b"line from process A\n", b"line from process B\n"
    outcomes = []
    for attempt in range(3):
        name = f"notes-{attempt}.md"
        await a.write(name, base)
        await b.call("sync")
        assert await b.read(name) == base
        at_ms = int(time.time() * 1000) + 300
        race_a, race_b = await asyncio.gather(
            a.call("race", path=name, at_ms=at_ms, data=base64.b64encode(mine).decode()),
            b.call("race", path=name, at_ms=at_ms, data=base64.b64encode(theirs).decode()),
        )
        # Both writes were acknowledged: after a sync each process has folded both.
        await asyncio.gather(a.call("sync"), b.call("sync"))
        read_a, read_b = await asyncio.gather(a.read(name), b.read(name))
        assert read_a == read_b, f"A and B read different bytes:\n{read_a!r}\n{read_b!r}"
        skew_ms = abs(race_a["started"] - race_b["started"]) * 1000
        outcomes.append((name, skew_ms, read_a))
        if read_a.startswith(b"<<<<<<<"):
            assert read_a in (
                conflict_block(mine, base, theirs),
                conflict_block(theirs, base, mine),
            ), read_a
            break
        assert read_a in (mine, theirs), read_a  # sequential: the later write won
    else:
        pytest.fail(f"no conflict in {len(outcomes)} simultaneous writes: {outcomes}")
    # Both processes still agree on the whole tree.
    dump_a, dump_b = await asyncio.gather(a.dump(), b.dump())
    assert_same_tree({"A": dump_a, "B": dump_b})


async def test_server_restart_mid_run_loses_no_acknowledged_write(
    nats_server: NatsServer, spawn_mount: SpawnMount
) -> None:
    """nats-server stops (SIGTERM) and restarts on the same port and store mid-workload.

    Both mounts reconnect and keep writing; every acknowledged write, before and after
    the restart, reads back on both mounts, which end with the same tree.
    """
    deployment = Deployment([nats_server.url])
    a = await spawn_mount("A", deployment, create=True)
    b = await spawn_mount("B", deployment)
    count = 150
    await a.call("workload", prefix="a", count=count, pause_ms=10)
    await b.call("workload", prefix="b", count=count, pause_ms=10)
    await a.wait_for(lambda m: len([x for x in m if x.get("type") == "ack"]) >= 40, 30, "40 acks")
    stopped_at = time.time()
    await asyncio.to_thread(nats_server.stop)
    await asyncio.sleep(0.5)  # down for a while: calls fail or wait meanwhile
    await asyncio.to_thread(nats_server.start)
    restarted_at = time.time()

    done_a = await a.wait_for(workload_done(a, "a"), 60, "A's workload")
    done_b = await b.wait_for(workload_done(b, "b"), 60, "B's workload")
    for child, done in ((a, done_a), (b, done_b)):
        assert done["failed"] == 0, f"{child.name} gave up on writes: {done}"
        acks = child.of_type("ack")
        assert len(acks) == count
        before = [m for m in acks if m["t"] < stopped_at]
        after = [m for m in acks if m["t"] > restarted_at]
        assert before, f"{child.name} acknowledged nothing before the restart"
        assert after, f"{child.name} acknowledged nothing after the restart"
    acks = {**acked(a), **acked(b)}
    dumps = dict(zip("AB", await asyncio.gather(a.dump(), b.dump()), strict=True))
    for name, dump in dumps.items():
        assert_all_visible(acks, dump, name)
    assert_same_tree(dumps)
    # A process mounting now, from the restarted server's store, sees the same.
    c = await spawn_mount("C", deployment)
    dump_c = await c.dump()
    assert_all_visible(acks, dump_c, "C")
    assert_same_tree({**dumps, "C": dump_c})


async def test_sigkilled_mount_process_leaves_others_and_the_change_intact(
    nats_server: NatsServer, spawn_mount: SpawnMount
) -> None:
    """A mount process is SIGKILLed mid-workload; the other keeps writing and reading.

    Everything either process had acknowledged (the dead one's acks were printed
    before it died) is visible to the survivor and to a process mounting afterwards.
    """
    deployment = Deployment([nats_server.url])
    a = await spawn_mount("A", deployment, create=True)
    b = await spawn_mount("B", deployment)
    await a.call("workload", prefix="a", count=150, pause_ms=5)
    await b.call("workload", prefix="b", count=150, pause_ms=5)
    await b.wait_for(lambda m: len([x for x in m if x.get("type") == "ack"]) >= 40, 30, "40 acks")
    await b.close()  # SIGKILL, then read what its pipe still held
    killed_at = time.time()
    assert b.proc.returncode == -signal.SIGKILL
    acks_b = acked(b)
    assert 40 <= len(acks_b) < 150

    done_a = await a.wait_for(workload_done(a, "a"), 60, "A's workload")
    assert done_a == {"type": "workload-done", "prefix": "a", "acked": 150, "failed": 0}
    assert any(m["t"] > killed_at for m in a.of_type("ack")), "A wrote nothing after the kill"
    assert not a.of_type("nack"), a.of_type("nack")
    # A still reads and writes.
    await a.write("after-kill.txt", b"still here\n")
    assert await a.read("after-kill.txt") == b"still here\n"

    acks = {**acked(a), **acks_b, "after-kill.txt": sha256(b"still here\n")}
    c = await spawn_mount("C", deployment)
    dumps = dict(zip("AC", await asyncio.gather(a.dump(), c.dump()), strict=True))
    for name, dump in dumps.items():
        assert_all_visible(acks, dump, name)
    assert_same_tree(dumps)
