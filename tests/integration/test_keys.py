"""API key records on a real nats-server: created, seen by another client, revoked.

The second client is a separate `JetStreamTransport` with its own (empty) keyring, as
another process would be: it knows a key only from the record in the KV.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from mesa.errors import AuthenticationError, AuthorizationError
from mesa_sdk import Mesa
from tests.integration.secured import SecuredDeployment
from transports.auth import Keyring
from transports.jetstream import JetStreamTransport
from transports.jetstream._keys import KEY_REFRESH_S

pytestmark = pytest.mark.integration


async def test_keys_live_on_the_server(
    secured: SecuredDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = secured
    monkeypatch.setenv("MESA_NATS_URL", deployment.urls[0])
    admin = Mesa(org="acme", api_key=deployment.api_key)
    await admin.repos.create("app")
    made = await admin.api_keys.create(name="worker", scopes=["read", "write"], repos=["app"])
    assert made.key is not None
    assert [k.id for k in await admin.api_keys.list()] == [made.id]

    other = await JetStreamTransport.connect(
        deployment.urls, keyring=Keyring(), present_tokens=True
    )
    try:
        worker = Mesa(org="acme", api_key=made.key, transport=other)
        async with worker.fs.mount(repos=["app"]) as fs:
            await fs.write("/acme/app/w.txt", b"w")
            # Another org's key, or a key nobody registered, reaches nothing.
            stranger = Mesa(org="acme", api_key=(await _unregistered()), transport=other)
            with pytest.raises(AuthenticationError):
                await stranger.repos.list()
            with pytest.raises(AuthorizationError):
                await worker.api_keys.list()
            await admin.api_keys.revoke(made.id)
            deadline = time.monotonic() + KEY_REFRESH_S + 5
            while True:
                try:
                    await fs.write("/acme/app/w.txt", b"again")
                except AuthenticationError:
                    break
                assert time.monotonic() < deadline, "a revoked key kept writing"
                await asyncio.sleep(0.1)
        with pytest.raises(AuthenticationError, match="revoked"):
            async with worker.fs.mount(repos=["app"]):
                pass
    finally:
        await other.aclose()
        await admin.transport.aclose()  # this loop's connection of the shared transport


async def _unregistered() -> str:
    from transports.auth import generate_key

    return generate_key()
