"""A versioning call that raises leaves no record behind (issue 13, item 3).

Failures are injected at each step of ``fs.changes.checkpoint`` and
``fs.changes.new``; afterwards every change and bookmark record (and each change's
message) is as it was, and the mount is still on its change. Snapshot records are
left out of the comparison on purpose: a seal stores a valid snapshot of a state the
log holds, a cache that later mounts may use (docs/versioning.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from mesa import _bookmarks, _changes
from mesa_sdk import Mesa, MesaFileSystem
from tests.mesa.conftest import ORG
from transports.memory import MemoryTransport


class BoomError(Exception):
    """The injected failure."""


async def records(mesa: Mesa, transport: MemoryTransport) -> dict[str, bytes]:
    token = mesa.management_token()
    out: dict[str, bytes] = {}
    for key in await transport.kv_keys(token, f"{ORG}."):
        if ".snapshot." in key or ".snapat." in key:
            continue
        entry = await transport.kv_get(token, key)
        assert entry is not None
        out[key] = entry.value
    return out


async def prepared(fs: MesaFileSystem) -> None:
    await fs.write("/acme/app/f", b"x")
    await fs.bookmarks.create("app", "second")  # two bookmarks on the change: main, second


def failing(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, *, after: int = 0) -> None:
    """Make the ``after``+1-th call of ``module.name`` raise `BoomError` (that call only)."""
    original = getattr(module, name)
    calls = 0

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == after + 1:
            raise BoomError(name)
        return await original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize(
    ("module", "name", "after"),
    [
        (_changes, "describe", 0),  # the message
        (_bookmarks, "cas_move", 0),  # the first bookmark
        (_bookmarks, "cas_move", 1),  # the second bookmark, the first already moved
        (_changes, "open_live", 0),  # the switch to the new change
    ],
)
async def test_a_failing_checkpoint_leaves_every_record_as_it_was(
    mesa: Mesa,
    transport: MemoryTransport,
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    name: str,
    after: int,
) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await prepared(fs)
        saved = fs.repo_mounts[0].change_id
        before = await records(mesa, transport)
        with monkeypatch.context() as patch:
            failing(patch, module, name, after=after)
            with pytest.raises(BoomError):
                await fs.changes.checkpoint("app", message="MSG")
        assert await records(mesa, transport) == before
        assert fs.repo_mounts[0].change_id == saved
        assert (await fs.changes.current("app")).message != "MSG"
        # And the same checkpoint goes through once nothing fails.
        result = await fs.changes.checkpoint("app", message="MSG")
        assert result.saved_change_id == saved
        assert (await mesa.changes.get("app", saved)).message == "MSG"


@pytest.mark.parametrize(
    ("module", "name"), [(_changes, "open_live"), (_changes, "put_new_change")]
)
async def test_a_failing_new_change_leaves_no_record(
    mesa: Mesa,
    transport: MemoryTransport,
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    name: str,
) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await prepared(fs)
        saved = fs.repo_mounts[0].change_id
        before = await records(mesa, transport)
        with monkeypatch.context() as patch:
            failing(patch, module, name)
            with pytest.raises(BoomError):
                await fs.changes.new("app", bookmark="main", message="child")
        assert await records(mesa, transport) == before
        assert fs.repo_mounts[0].change_id == saved


async def test_a_message_of_the_wrong_type_is_refused_before_anything_is_written(
    mesa: Mesa, transport: MemoryTransport
) -> None:
    async with mesa.fs.mount(repos=["app"]) as fs:
        await prepared(fs)
        before = await records(mesa, transport)
        with pytest.raises(TypeError, match="message"):
            await fs.changes.checkpoint("app", message=42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="message"):
            await fs.changes.new("app", bookmark="main", message=b"x")  # type: ignore[arg-type]
        assert await records(mesa, transport) == before
