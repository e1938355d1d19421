"""Snapshots: a mount starts from the newest one and folds only the tail."""

from __future__ import annotations

import pytest

from engine.snapshot import decode_snapshot
from mesa import _snapshots
from mesa._records import SnapshotRecord, snapshot_key
from mesa_sdk import InvalidOptionsError, Mesa
from transports.auth import Keyring, generate_key
from transports.base import ManualClock
from transports.memory import MemoryTransport

KEY = generate_key()


class CountingTransport(MemoryTransport):
    """Counts deliveries, to prove a mount from a snapshot folds only the tail."""

    delivered = 0

    async def subscribe(self, token, log, *, after_seq):  # type: ignore[no-untyped-def]
        sub = await super().subscribe(token, log, after_seq=after_seq)
        outer = self

        class Counted:
            def __aiter__(self):  # type: ignore[no-untyped-def]
                return self

            async def __anext__(self):  # type: ignore[no-untyped-def]
                item = await sub.__anext__()  # type: ignore[attr-defined]
                outer.delivered += 1
                return item

            async def aclose(self) -> None:
                await sub.aclose()

        return Counted()


def make(snapshot_every: int | None) -> tuple[Mesa, CountingTransport]:
    clock = ManualClock()
    keyring = Keyring()
    keyring.add(KEY, "acme")
    transport = CountingTransport(keyring, clock)
    return Mesa(
        "acme", KEY, transport=transport, clock=clock, snapshot_every=snapshot_every
    ), transport


async def test_a_mount_starts_from_the_newest_snapshot_and_folds_the_tail() -> None:
    mesa, transport = make(snapshot_every=10)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as writer:
        for i in range(25):
            await writer.write(f"/acme/app/f{i % 7}", f"v{i}".encode())
        change = writer._repos["app"].change_id
        token = writer._repos["app"].token
    # The writer crossed 10 and 20 entries: the record names the state after entry 20.
    entry = await transport.kv_get(token, snapshot_key("acme", "app", change))
    assert entry is not None
    record = SnapshotRecord.decode(entry.value)
    assert record.entries == 20
    state = decode_snapshot(await transport.get_blob(token, "acme", "app", record.digest))
    assert state.seq == record.seq
    transport.delivered = 0
    async with mesa.fs.mount(repos=["app"]) as reader:
        assert transport.delivered == 5  # only the tail after the snapshot
        for i in range(18, 25):
            assert await reader.read(f"/acme/app/f{i % 7}") == f"v{i}".encode()
        assert reader._repos["app"].entries == 25


async def test_without_snapshots_the_whole_log_is_folded() -> None:
    mesa, transport = make(snapshot_every=None)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as writer:
        for i in range(12):
            await writer.write(f"/acme/app/f{i}", b"x")
    transport.delivered = 0
    async with mesa.fs.mount(repos=["app"]) as reader:
        assert transport.delivered == 12
        assert sorted(await reader.readdir("/acme/app")) == sorted(f"f{i}" for i in range(12))


async def test_a_corrupt_snapshot_is_ignored_not_trusted() -> None:
    mesa, transport = make(snapshot_every=5)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as writer:
        for i in range(5):
            await writer.write(f"/acme/app/f{i}", b"x")
        change = writer._repos["app"].change_id
        token = writer._repos["app"].token
    key = snapshot_key("acme", "app", change)
    entry = await transport.kv_get(token, key)
    assert entry is not None
    record = SnapshotRecord.decode(entry.value)
    bogus = await transport.put_blob(token, "acme", "app", b"not a snapshot")
    broken = SnapshotRecord(record.seq, record.entries, bogus, 14, record.created_at_ms)
    await transport.kv_put(token, key, broken.encode())
    transport.delivered = 0
    async with mesa.fs.mount(repos=["app"]) as reader:
        assert transport.delivered == 5
        assert len(await reader.readdir("/acme/app")) == 5


async def test_a_snapshot_record_only_moves_forward() -> None:
    mesa, transport = make(snapshot_every=None)
    await mesa.repos.create("app")
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/a", b"1")
        repo = fs._repos["app"]
        data = _snapshots.encode(repo.replica.state)
        args = (transport, repo.token, "acme", "app", repo.change_id)
        assert await _snapshots.store(*args, data=data, seq=repo.replica.seq, entries=1, now_ms=1)
        assert not await _snapshots.store(
            *args, data=data, seq=repo.replica.seq, entries=1, now_ms=2
        )


def test_snapshot_every_is_validated() -> None:
    with pytest.raises(InvalidOptionsError):
        make(snapshot_every=0)
