"""Scale-out on a real three-node JetStream cluster, one node killed mid-workload (issue 3, item 4).

Three clustered nats-servers on loopback (docs/operations.md's configuration, fsync
always); streams and buckets with three replicas (``MESA_REPLICAS=3``); three mount
processes, one per node (each process's ``MESA_NATS_URL`` names only its own node, so
where it starts is known; it learns the other nodes from the cluster, as nats-py does);
two of them run a workload. The node leading the repo's stream is SIGKILLed while the
workload runs, so writes also go through a leader election. Then: every acknowledged
write reads back with its exact bytes on every mount, the mount whose node died is
connected to another node, and all mounts hold the same tree.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import pytest

from tests.integration.conftest import Deployment, MountProcess, SpawnMount
from tests.integration.natsutil import NatsServer
from tests.integration.test_realtime import (
    acked,
    assert_all_visible,
    assert_same_tree,
    workload_done,
)
from transports.jetstream import stream_name

pytestmark = pytest.mark.integration

WRITES_PER_WRITER = 150
KILL_AFTER_ACKS = 50


def _netloc(url: str) -> str:
    return url.removeprefix("nats://")


async def _stream_info(urls: list[str], stream: str) -> Any:
    nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=2)
    try:
        return await nc.jetstream(timeout=5).stream_info(stream)
    finally:
        await nc.close()


def _count(kind: str, at_least: int) -> Any:
    return lambda messages: len([m for m in messages if m.get("type") == kind]) >= at_least


async def test_node_killed_mid_workload_loses_no_acknowledged_write(
    nats_cluster: list[NatsServer], spawn_mount: SpawnMount
) -> None:
    servers = {server.name: server for server in nats_cluster}
    urls = [server.url for server in nats_cluster]
    deployment = Deployment(urls, replicas=3)
    n1, n2, n3 = nats_cluster
    w1 = await spawn_mount("W1", deployment, urls=[n1.url], create=True)
    w2, reader = await asyncio.gather(
        spawn_mount("W2", deployment, urls=[n2.url]),
        spawn_mount("R", deployment, urls=[n3.url]),
    )
    mounts: dict[str, MountProcess] = {"n1": w1, "n2": w2, "n3": reader}
    for node, child in mounts.items():
        assert child.mounted["url"] == _netloc(servers[node].url), (node, child.mounted)
    await reader.call("subscribe")

    info = await _stream_info(urls, stream_name("acme", "app"))
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert len(info.cluster.replicas or []) == 2
    leader = info.cluster.leader
    victim = mounts[leader]
    survivors = {node: child for node, child in mounts.items() if node != leader}

    await w1.call("workload", prefix="w1", count=WRITES_PER_WRITER, pause_ms=5)
    await w2.call("workload", prefix="w2", count=WRITES_PER_WRITER, pause_ms=5)
    await asyncio.gather(
        w1.wait_for(_count("ack", KILL_AFTER_ACKS), 30, f"{KILL_AFTER_ACKS} acks"),
        w2.wait_for(_count("ack", KILL_AFTER_ACKS), 30, f"{KILL_AFTER_ACKS} acks"),
    )
    await asyncio.to_thread(servers[leader].kill)
    killed_at = time.time()

    dones = await asyncio.gather(
        w1.wait_for(workload_done(w1, "w1"), 60, "W1's workload"),
        w2.wait_for(workload_done(w2, "w2"), 60, "W2's workload"),
    )
    for child, done in zip((w1, w2), dones, strict=True):
        assert done["failed"] == 0, f"{child.name} gave up on writes: {done}"
        acks = child.of_type("ack")
        assert len(acks) == WRITES_PER_WRITER
        assert len([m for m in acks if m["t"] < killed_at]) < WRITES_PER_WRITER, (
            f"{child.name} finished before the kill"
        )
        assert any(m["t"] > killed_at for m in acks), f"{child.name} wrote nothing after the kill"

    # The mount whose node died is now connected to a surviving node.
    moved_to = await victim.where()
    assert moved_to != _netloc(servers[leader].url)
    assert moved_to in {_netloc(s.url) for name, s in servers.items() if name != leader}

    acks = {**acked(w1), **acked(w2)}
    assert len(acks) == 2 * WRITES_PER_WRITER
    names = [child.name for child in mounts.values()]
    dumps = dict(
        zip(names, await asyncio.gather(*(c.dump(60) for c in mounts.values())), strict=True)
    )
    for name, dump in dumps.items():
        assert_all_visible(acks, dump, name)
    assert_same_tree(dumps)

    # The reader's subscription kept delivering across the failover.
    events = {m["path"] for m in reader.of_type("event")}
    assert {f"/acme/app/{path}" for path in acks} <= events
    # A process mounting now through a surviving node sees the same change.
    node = next(iter(survivors))
    late = await spawn_mount("late", deployment, urls=[servers[node].url])
    dump = await late.dump(60)
    assert_all_visible(acks, dump, "late")
    assert_same_tree({**dumps, "late": dump})
