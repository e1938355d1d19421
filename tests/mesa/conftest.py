"""Fixtures for the SDK tests: a `Mesa` client on a `MemoryTransport` with a manual clock.

The transport and the client share one `ManualClock`, so token expiry and the race
window are driven by the test, never by wall time. ``mesa`` is bound to org ``acme``
and already has the repo ``app`` (bookmark ``main`` on an empty change).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesa_sdk import Mesa
from transports.auth import Keyring, generate_key
from transports.base import ManualClock
from transports.memory import MemoryTransport

ORG = "acme"
#: The org's API key (an Ed25519 seed), registered in the transport's keyring.
KEY = generate_key()


@pytest.fixture(autouse=True)
def _no_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's environment out of the tests."""
    monkeypatch.delenv("MESA_API_KEY", raising=False)
    monkeypatch.delenv("MESA_ORG", raising=False)


@pytest.fixture
def clock() -> ManualClock:
    """The one clock of the test: the sequencer's and the client's."""
    return ManualClock()


@pytest.fixture
def keyring() -> Keyring:
    """A keyring accepting `KEY` for `ORG`."""
    ring = Keyring()
    ring.add(KEY, ORG)
    return ring


@pytest.fixture
async def transport(keyring: Keyring, clock: ManualClock) -> AsyncIterator[MemoryTransport]:
    """A fresh in-memory transport, closed after the test."""
    memory = MemoryTransport(keyring, clock)
    try:
        yield memory
    finally:
        await memory.aclose()


@pytest.fixture
async def mesa(transport: MemoryTransport, clock: ManualClock) -> Mesa:
    """A client of org ``acme`` whose repo ``app`` exists."""
    client = Mesa(org=ORG, api_key=KEY, transport=transport, clock=clock)
    await client.repos.create("app")
    return client
