"""Fixtures for the transport contract suite.

`transport_env` yields a `TransportEnv` for every factory in `TRANSPORT_FACTORIES`;
the contract tests in test_contract.py run once per factory. To run the suite against
another transport, write one async context manager yielding a `TransportEnv` and add
it to `TRANSPORT_FACTORIES` as a ``pytest.param`` (with marks such as
``pytest.mark.integration`` when it needs a real server).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.natsutil import start_nats
from transports.auth import Claims, KeyRecord, Keyring, generate_key, sign
from transports.base import ManualClock, SystemClock, Transport
from transports.jetstream import JetStreamTransport
from transports.jetstream.callout import new_issuer
from transports.jetstream.daemon import ServiceCredentials, run_service, service_config
from transports.memory import MemoryTransport


@dataclass
class TransportEnv:
    """A transport under test and the means to drive it.

    Attributes:
        transport: the transport, fresh for each test.
        org: the org its signing key is bound to.
        sign: makes a token of ``org`` for ``repos`` ({repo: "rw" | "ro"}, "*" for all).
        clock_advance: moves the transport's clock by ms, or None for real-time
            transports (tests then wait on real time where they must).
    """

    transport: Transport
    org: str
    sign: Callable[..., str]
    clock_advance: Callable[[int], None] | None


TransportFactory = Callable[[], AbstractAsyncContextManager[TransportEnv]]


def random_api_key() -> str:
    """Return an API key long enough for HS256 (pyjwt warns below 32 bytes)."""
    return generate_key()


@asynccontextmanager
async def memory_env() -> AsyncIterator[TransportEnv]:
    """A `MemoryTransport` on a manual clock."""
    org = "acme"
    api_key = random_api_key()
    keyring = Keyring()
    keyring.add(api_key, org)
    clock = ManualClock()

    def make_token(repos: dict[str, str], ttl_s: int = 3600) -> str:
        iat = clock.now_ms() // 1000
        return sign(api_key, Claims(org, dict(repos), iat, iat + ttl_s, "test-mount"))

    transport = MemoryTransport(keyring, clock)
    try:
        yield TransportEnv(transport, org, make_token, clock.advance)
    finally:
        await transport.aclose()


@asynccontextmanager
async def jetstream_env() -> AsyncIterator[TransportEnv]:
    """A `JetStreamTransport` on a fresh nats-server (JetStream, temporary store).

    Time is real (``clock_advance`` is None): the server stamps entries, and tests that
    need a token to expire sign a short ttl and wait.
    """
    org = "acme"
    api_key = random_api_key()
    keyring = Keyring()
    keyring.add(api_key, org)
    clock = SystemClock()

    def make_token(repos: dict[str, str], ttl_s: int = 3600) -> str:
        iat = clock.now_ms() // 1000
        return sign(api_key, Claims(org, dict(repos), iat, iat + ttl_s, "test-mount"))

    with tempfile.TemporaryDirectory(prefix="mesa-nats-") as tmp:
        server = await asyncio.to_thread(start_nats, Path(tmp))
        try:
            transport = await JetStreamTransport.connect([server.url], keyring=keyring)
            try:
                yield TransportEnv(transport, org, make_token, None)
            finally:
                await transport.aclose()
        finally:
            await asyncio.to_thread(server.stop)


@asynccontextmanager
async def callout_env() -> AsyncIterator[TransportEnv]:
    """A token-mode `JetStreamTransport` on a nats-server behind the auth callout.

    The mesa service runs in this process (`run_service`); the signing key is registered
    with the service's login, as an operator would. Every token the tests sign is
    presented on its own connection and enforced by the server.
    """
    org = "acme"
    api_key = random_api_key()
    clock = SystemClock()

    def make_token(repos: dict[str, str], ttl_s: int = 3600) -> str:
        iat = clock.now_ms() // 1000
        return sign(api_key, Claims(org, dict(repos), iat, iat + ttl_s, "test-mount"))

    seed, public = new_issuer()
    extra = service_config(public, "svc", "svcpw", "sys", "syspw")
    with tempfile.TemporaryDirectory(prefix="mesa-nats-") as tmp:
        server = await asyncio.to_thread(start_nats, Path(tmp), extra_config=extra)
        credentials = ServiceCredentials((server.url,), "svc", "svcpw", "sys", "syspw", seed)
        ready = asyncio.Event()
        service = asyncio.ensure_future(run_service(credentials, ready=ready.set))
        try:
            await asyncio.wait_for(ready.wait(), 30)
            trusted_url = server.url.replace("nats://", "nats://svc:svcpw@")
            trusted = await JetStreamTransport.connect([trusted_url], keyring=Keyring())
            try:
                await trusted.bootstrap_key(KeyRecord.for_key(api_key, org))
            finally:
                await trusted.aclose()
            transport = await JetStreamTransport.connect(
                [server.url], keyring=Keyring(), present_tokens=True
            )
            try:
                yield TransportEnv(transport, org, make_token, None)
            finally:
                await transport.aclose()
        finally:
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service
            await asyncio.to_thread(server.stop)


TRANSPORT_FACTORIES = [
    pytest.param(memory_env, id="memory"),
    pytest.param(jetstream_env, id="jetstream", marks=pytest.mark.integration),
    pytest.param(callout_env, id="callout", marks=pytest.mark.integration),
]


@pytest.fixture(params=TRANSPORT_FACTORIES)
async def transport_env(request: pytest.FixtureRequest) -> AsyncIterator[TransportEnv]:
    """Yield a fresh `TransportEnv` of each registered transport."""
    factory: TransportFactory = request.param
    async with factory() as env:
        yield env
