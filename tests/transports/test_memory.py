"""What only the in-memory transport promises: its clock handling and its test hooks."""

from __future__ import annotations

import pytest

from engine.ids import change_id_from_bytes
from transports.auth import Claims, Keyring, generate_key, sign
from transports.base import Delivery, LogId, ManualClock, UnavailableError
from transports.memory import MemoryTransport

ORG = "acme"
CHANGE = change_id_from_bytes(bytes(16))
OTHER_CHANGE = change_id_from_bytes(bytes([1]) * 16)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def api_key() -> str:
    return generate_key()


@pytest.fixture
def transport(api_key: str, clock: ManualClock) -> MemoryTransport:
    keyring = Keyring()
    keyring.add(api_key, ORG)
    return MemoryTransport(keyring, clock, max_payload_bytes=16, dedupe_window_ms=1_000)


@pytest.fixture
def token(api_key: str, clock: ManualClock) -> str:
    iat = clock.now_ms() // 1000
    return sign(api_key, Claims(ORG, {"*": "rw"}, iat, iat + 86_400, "m"))


async def test_entry_time_never_goes_backwards(
    transport: MemoryTransport, clock: ManualClock, token: str
) -> None:
    log = LogId(ORG, "main", CHANGE)
    first = await transport.append(token, log, b"1", msg_id="1")
    clock.advance(-60_000)
    second = await transport.append(token, log, b"2", msg_id="2")
    assert second.time_ms == first.time_ms
    clock.advance(60_005)
    third = await transport.append(token, log, b"3", msg_id="3")
    assert third.time_ms == first.time_ms + 5


async def test_dedupe_lasts_for_the_window_across_changes(
    transport: MemoryTransport, clock: ManualClock, token: str
) -> None:
    log = LogId(ORG, "main", CHANGE)
    first = await transport.append(token, log, b"a", msg_id="op")
    clock.advance(999)
    # The window is per stream: the same msg_id on another change of the repo is a repeat.
    assert await transport.append(token, LogId(ORG, "main", OTHER_CHANGE), b"b", msg_id="op") == (
        first
    )
    clock.advance(1)
    again = await transport.append(token, log, b"a", msg_id="op")
    assert again.seq == first.seq + 1
    assert transport.log_entries(ORG, "main", OTHER_CHANGE) == []
    assert [d.seq for d in transport.log_entries(ORG, "main", CHANGE)] == [first.seq, again.seq]


async def test_log_entries_reads_without_a_token(transport: MemoryTransport, token: str) -> None:
    log = LogId(ORG, "main", CHANGE)
    a = await transport.append(token, log, b"a", msg_id="a")
    await transport.append(token, LogId(ORG, "main", OTHER_CHANGE), b"x", msg_id="x")
    b = await transport.append(token, log, b"b", msg_id="b")
    assert transport.log_entries(ORG, "main", CHANGE) == [
        Delivery(a.seq, 0, a.time_ms, b"a"),
        Delivery(b.seq, a.seq, b.time_ms, b"b"),
    ]
    assert transport.log_entries(ORG, "empty", CHANGE) == []


async def test_closed_transport_is_unavailable(transport: MemoryTransport, token: str) -> None:
    await transport.aclose()
    with pytest.raises(UnavailableError):
        await transport.kv_get(token, f"{ORG}.main.k")
    with pytest.raises(UnavailableError):
        await transport.subscribe(token, LogId(ORG, "main", CHANGE), after_seq=0)


def test_limits_must_be_sane(clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="max_payload_bytes"):
        MemoryTransport(Keyring(), clock, max_payload_bytes=0)
    with pytest.raises(ValueError, match="dedupe_window_ms"):
        MemoryTransport(Keyring(), clock, dedupe_window_ms=-1)
