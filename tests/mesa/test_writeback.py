"""Rule 6 through the SDK: a conflict block written back keeps the conflict, wherever its bytes go.

docs/conflicts.md, rule 6: writing a conflicted file's block back with its markers intact
(unchanged, or edited inside the sections) keeps the conflict with the edited sides. The
fold never reads blobs, so the mount parses the block and logs the terms
(`engine.driver.writeback`). Before that, a write-back whose bytes went to a blob (a
server refusing the entry as too large, or a block over the inline threshold) resolved
the conflict into a file holding the marker text (known bug ``spilled-writeback``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine import conflicts
from engine.content import Content
from engine.tree import FileNode
from mesa_sdk import Mesa, MesaFileSystem
from tests.mesa.conftest import KEY, ORG
from transports.auth import Keyring
from transports.base import ManualClock
from transports.memory import MemoryTransport

P = f"/{ORG}/app/f"


async def race(a: MesaFileSystem, b: MesaFileSystem, x: bytes, y: bytes) -> bytes:
    """Make ``P`` a two-sided add/add conflict of ``x`` and ``y``; return its block."""
    await asyncio.gather(a.write(P, x), b.write(P, y))
    await a.wait_synced()
    await b.wait_synced()
    block = await a.read(P)
    assert block in (
        conflicts.materialize([x, y], [b""]),
        conflicts.materialize([y, x], [b""]),
    )
    return block


def sides_of(fs: MesaFileSystem) -> int:
    node = fs.repo_mounts[0].replica.state.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    return len(node.value.adds)


@pytest.mark.parametrize(
    ("size", "max_payload_bytes"),
    [
        (10, 1024 * 1024),  # inline
        (8 * 1024, 6 * 1024),  # refused as too large, spilled to blobs (seed 358)
        (70 * 1024, 1024 * 1024),  # over the inline threshold: blobs from the start
    ],
    ids=["inline", "spilled", "blob"],
)
async def test_an_edited_block_written_back_keeps_the_conflict(
    keyring: Keyring, clock: ManualClock, size: int, max_payload_bytes: int
) -> None:
    transport = MemoryTransport(keyring, clock, max_payload_bytes=max_payload_bytes)
    try:
        mesa = Mesa(org=ORG, api_key=KEY, transport=transport, clock=clock)
        await mesa.repos.create("app")
        x, y = b"x" * size + b"\n", b"y" * size + b"\n"
        async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
            block = await race(a, b, x, y)
            clock.advance(5_000)  # sequential, whatever the window

            # Saved unchanged: still the same conflict.
            await a.write(P, block)
            await b.wait_synced()
            assert await a.read(P) == await b.read(P) == block
            assert sides_of(a) == 2

            # Edited inside side #2 (an editor keeping the markers): the edit is a side.
            edited = block.replace(y, b"Y" * size + b"\n")
            await b.write(P, edited)
            await a.wait_synced()
            assert await a.read(P) == await b.read(P) == edited
            assert sides_of(a) == sides_of(b) == 2

            # A block with a marker deleted is plain bytes: it resolves the conflict.
            broken = edited.replace(b">>>>>>>", b"", 1)
            await a.write(P, broken)
            await b.wait_synced()
            assert await b.read(P) == broken
            assert sides_of(b) == 1
        # A fresh mount folds the log to the same file.
        async with mesa.fs.mount(repos=["app"]) as c:
            assert await c.read(P) == broken
    finally:
        await transport.aclose()


async def test_a_write_landing_while_the_block_is_parsed_races_it(
    mesa: Mesa, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with mesa.fs.mount(repos=["app"]) as a, mesa.fs.mount(repos=["app"]) as b:
        block = await race(a, b, b"x\n", b"y\n")
        repo_a = a.repo_mounts[0]
        reading, release = asyncio.Event(), asyncio.Event()
        original = repo_a.blobs.content_bytes

        async def slow_read(content: Any) -> bytes:
            reading.set()
            await release.wait()
            return await original(content)

        monkeypatch.setattr(repo_a.blobs, "content_bytes", slow_read)
        save = asyncio.create_task(a.write(P, block.replace(b"y\n", b"Y\n")))
        await reading.wait()  # a parses the block it read...
        await b.write(P, b"z\n")  # ...while b resolves the conflict
        await a.wait_synced()
        release.set()
        await save
        await b.wait_synced()
        node = a.repo_mounts[0].replica.state.tree.lookup(("f",))
        assert isinstance(node, FileNode)
        # a had not seen b's write: it races, and b's bytes survive as a side.
        assert Content.of(b"z\n") in node.value.adds
        assert await a.read(P) == await b.read(P)
