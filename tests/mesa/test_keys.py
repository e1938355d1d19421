"""API keys the server knows and tokens for sandboxes, on the strict memory transport.

The memory transport verifies every call with the same `transports.auth` code a server
runs: these tests check what a key or token reaches by its effect (the log, the KV),
not by what the client believes.
"""

from __future__ import annotations

import errno

import jwt
import pytest

from mesa.errors import (
    AuthenticationError,
    AuthorizationError,
    InvalidOptionsError,
    NotFoundError,
)
from mesa_sdk import Mesa
from tests.mesa.conftest import KEY, ORG
from transports.auth import Claims, Keyring, generate_key, key_id, public_key, sign
from transports.base import ManualClock, TokenRejectedError
from transports.keys import unb64
from transports.memory import MemoryTransport


def client(transport: MemoryTransport, clock: ManualClock, key: str, org: str = ORG) -> Mesa:
    return Mesa(org=org, api_key=key, transport=transport, clock=clock)


async def log_length(transport: MemoryTransport) -> int:
    return sum(len(s.changes.get(c, [])) for s in transport._streams.values() for c in s.changes)


async def test_an_admin_key_creates_lists_and_revokes_keys(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    created = await mesa.api_keys.create(name="ci", scopes=["read", "write"], repos=["app"])
    assert created.key is not None
    assert created.key.startswith("mesa_")
    assert created.id == key_id(created.key)
    assert (created.name, created.scopes, created.repos) == ("ci", ["read", "write"], ["app"])
    assert created.key not in repr(created)
    listed = {k.id: k for k in await mesa.api_keys.list()}
    assert created.id in listed
    assert listed[created.id].key is None
    # The server stores the public half only.
    record = transport._keyring.get(created.id)
    assert record is not None
    assert record.public_key == public_key(created.key)
    assert created.key[5:] not in record.encode().decode()

    ci = client(transport, clock, created.key)
    async with ci.fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/a.txt", b"a")
    await mesa.api_keys.revoke(created.id)
    assert {k.id: k for k in await mesa.api_keys.list()}[created.id].revoked
    before = await log_length(transport)
    with pytest.raises(AuthenticationError):
        async with ci.fs.mount(repos=["app"]):
            pass
    assert await log_length(transport) == before
    with pytest.raises(NotFoundError):
        await mesa.api_keys.revoke("mk0000000000000000")


async def test_revoking_refuses_a_live_mount_at_once(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    created = await mesa.api_keys.create(scopes=["read", "write"])
    assert created.key is not None
    async with client(transport, clock, created.key).fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/a.txt", b"a")
        await mesa.api_keys.revoke(created.id)
        before = await log_length(transport)
        with pytest.raises(AuthenticationError, match="revoked"):
            await fs.write("/acme/app/b.txt", b"b")
        assert await log_length(transport) == before


async def test_only_an_admin_key_manages_keys(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    plain = await mesa.api_keys.create(scopes=["read", "write"])
    assert plain.key is not None
    worker = client(transport, clock, plain.key)
    with pytest.raises(AuthorizationError):
        await worker.api_keys.create()
    with pytest.raises(AuthorizationError):
        await worker.api_keys.list()
    with pytest.raises(AuthorizationError):
        await worker.api_keys.revoke(plain.id)
    # An admin restricted to one repo cannot hand out more than it has.
    narrow = await mesa.api_keys.create(scopes=["read", "admin"], repos=["app"])
    assert narrow.key is not None
    with pytest.raises(AuthorizationError):
        await client(transport, clock, narrow.key).api_keys.create(scopes=["write"])
    with pytest.raises(AuthorizationError):
        await client(transport, clock, narrow.key).api_keys.create(scopes=["read"], repos=None)
    # An admin of another org manages nothing of acme.
    other = generate_key()
    transport._keyring.add(other, "other")
    with pytest.raises(AuthenticationError):
        await client(transport, clock, other).api_keys.list()


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [
        ({"scopes": []}, "scopes"),
        ({"scopes": ["root"]}, "scopes"),
        ({"scopes": "read"}, "scopes"),
        ({"repos": []}, "repos"),
        ({"repos": ["a/b"]}, "repo"),
        ({"expires_in_seconds": 0}, "expires_in_seconds"),
    ],
)
async def test_bad_key_options(mesa: Mesa, kwargs: dict[str, object], what: str) -> None:
    with pytest.raises(InvalidOptionsError, match=what):
        await mesa.api_keys.create(**kwargs)  # type: ignore[arg-type]


async def test_an_expired_key_is_refused(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    created = await mesa.api_keys.create(expires_in_seconds=60)
    assert created.key is not None
    assert created.expires_at == clock.now_ms() // 1000 + 60
    await client(transport, clock, created.key).repos.list()
    clock.advance(61_000)
    with pytest.raises(AuthenticationError, match="expired"):
        await client(transport, clock, created.key).repos.list()


async def test_a_token_for_a_sandbox(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    await mesa.repos.create("docs")
    made = mesa.tokens.create(repos=["app"], scopes=["read", "write"], ttl_seconds=120)
    assert made.expires_at == clock.now_ms() // 1000 + 120
    assert (made.scopes, made.repos) == (["read", "write"], ["app"])
    assert made.token not in repr(made)
    sandbox = client(transport, clock, made.token)
    async with sandbox.fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/s.txt", b"s")
    assert await mesa.repos.get("app")
    before = await log_length(transport)
    with pytest.raises(AuthorizationError):
        async with sandbox.fs.mount(repos=["docs"]):
            pass
    mesa_other = client(transport, clock, made.token, org="other")
    with pytest.raises(AuthorizationError):
        async with mesa_other.fs.mount(repos=["app"]):
            pass
    # A token manages no keys and signs no tokens.
    with pytest.raises(AuthorizationError):
        await sandbox.api_keys.create()
    with pytest.raises(AuthorizationError):
        sandbox.tokens.create(repos=["app"])
    # Even forged as a management call, the server refuses it.
    with pytest.raises(AuthorizationError):
        await sandbox._ctx.gateway.list_keys(made.token, ORG)
    assert await log_length(transport) == before
    clock.advance(121_000)
    with pytest.raises(AuthenticationError):
        async with sandbox.fs.mount(repos=["app"]):
            pass


async def test_a_read_only_token_cannot_write(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    made = mesa.tokens.create(repos=["app"], scopes=["read"])
    async with client(transport, clock, made.token).fs.mount(repos=["app"]) as fs:
        before = await log_length(transport)
        with pytest.raises(OSError, match="Read-only") as info:
            await fs.write("/acme/app/x", b"x")
        assert info.value.errno == errno.EROFS
        assert await log_length(transport) == before
    # Nor by any route around the SDK.
    with pytest.raises(AuthorizationError):
        await client(transport, clock, made.token).repos.create("x")


@pytest.mark.parametrize("ttl", [0, 86_401, -1, 1.5, True])
async def test_token_ttl_bounds(mesa: Mesa, ttl: object) -> None:
    with pytest.raises(InvalidOptionsError, match="ttl_seconds"):
        mesa.tokens.create(repos=["app"], ttl_seconds=ttl)  # type: ignore[arg-type]


async def test_tokens_are_signed_without_the_network(clock: ManualClock) -> None:
    class Offline(MemoryTransport):
        def __getattribute__(self, name: str) -> object:
            if name in ("kv_get", "kv_put", "append", "subscribe", "put_key"):
                raise AssertionError(f"{name} called")
            return super().__getattribute__(name)

    keyring = Keyring()
    keyring.add(KEY, ORG)
    made = client(Offline(keyring, clock), clock, KEY).tokens.create(repos=["app"])
    assert keyring.verify(made.token, clock.now_ms()).repos == {"app": "rw"}


async def test_a_token_is_clamped_to_its_key_now(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    await mesa.repos.create("docs")
    reader = await mesa.api_keys.create(scopes=["read"], repos=["app"])
    assert reader.key is not None
    # The key signs read-write for both repos; the server grants app read-only.
    token = sign(
        reader.key,
        Claims(ORG, {"*": "rw"}, clock.now_ms() // 1000, clock.now_ms() // 1000 + 60, "m"),
    )
    claims = transport._keyring.verify(token, clock.now_ms())
    assert claims.repos == {"app": "ro"}
    assert claims.scopes == ("read",)
    before = await log_length(transport)
    async with client(transport, clock, reader.key).fs.mount(repos=["app"]) as fs:
        with pytest.raises((OSError, AuthorizationError)):
            await fs.write("/acme/app/y", b"y")
    with pytest.raises(AuthorizationError):
        async with client(transport, clock, reader.key).fs.mount(repos=["docs"]):
            pass
    assert await log_length(transport) == before


def _forge(payload: dict[str, object], key: object, alg: str, kid: str) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})  # type: ignore[arg-type]


async def test_forged_and_garbage_credentials_are_refused(
    mesa: Mesa, transport: MemoryTransport, clock: ManualClock
) -> None:
    now = clock.now_ms() // 1000
    payload = {"org": ORG, "repos": {"*": "rw"}, "iat": now, "exp": now + 60, "mid": "x"}
    kid = key_id(KEY)
    hs_secret = unb64(public_key(KEY))  # HS256 keyed with the public key: alg confusion
    forged = [
        _forge(payload, generate_key_private(), "EdDSA", kid),  # the right kid, another key
        jwt.encode(payload, None, algorithm="none", headers={"kid": kid}),
        _forge(payload, hs_secret * 2, "HS256", kid),
        _forge({**payload, "aud": "nats"}, _priv(KEY), "EdDSA", kid),
        "not.a.token",
        "x" * 20_000,
        "",
    ]
    before = await log_length(transport)
    for credential in forged:
        # The server's verifier refuses each, whatever the client would do with it.
        with pytest.raises(TokenRejectedError):
            transport._keyring.verify(credential, clock.now_ms())
        with pytest.raises(TokenRejectedError):
            await transport.kv_get(credential, "acme.app.repo")
        with pytest.raises((AuthenticationError, InvalidOptionsError)):
            async with client(transport, clock, credential or "x").fs.mount(repos=["app"]):
                pass
    assert await log_length(transport) == before
    # The verifier keeps serving.
    async with mesa.fs.mount(repos=["app"]) as fs:
        await fs.write("/acme/app/ok", b"ok")


def _priv(key: str) -> object:
    from transports.keys import private_key

    return private_key(key)


def generate_key_private() -> object:
    return _priv(generate_key())


def test_key_records_round_trip() -> None:
    key = generate_key()
    keyring = Keyring()
    record = keyring.add(key, ORG, scopes=("read",), repos=("app",), expires_at=5, name="n")
    from transports.keys import KeyRecord

    assert KeyRecord.decode(record.encode()) == record
    with pytest.raises(ValueError, match="does not match"):
        KeyRecord.decode(record.encode().replace(record.key_id.encode(), b"mk0000000000000000"))
