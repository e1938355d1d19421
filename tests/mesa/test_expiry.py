"""A mount whose token expired stops delivering and says why (issue 13, item 6)."""

from __future__ import annotations

import asyncio

import pytest

from mesa_sdk import AuthenticationError, Mesa, WatchEvent
from tests.mesa.test_sdk import Recorder
from transports.base import ManualClock

P = "/acme/app"


async def test_an_open_subscription_stops_at_the_tokens_expiry(
    mesa: Mesa, clock: ManualClock
) -> None:
    async with (
        mesa.fs.mount(repos=["app"], ttl=60) as short,
        mesa.fs.mount(repos=["app"], ttl=86_400) as long,
    ):
        seen = Recorder()
        sub = short.subscribe(seen)
        await long.write(f"{P}/before", b"1")
        await seen.wait_event(WatchEvent(f"{P}/before", False))
        clock.advance(61_000)
        await long.write(f"{P}/after", b"2")
        await asyncio.sleep(0.05)  # give the short mount's pump the delivery
        assert WatchEvent(f"{P}/after", False) not in seen.events
        with pytest.raises(AuthenticationError, match="expired"):
            await short.read(f"{P}/before")
        with pytest.raises(AuthenticationError, match="expired"):
            await short.wait_synced()
        assert await long.read(f"{P}/after") == b"2"
        await sub.unsubscribe()
