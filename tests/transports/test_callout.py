"""The NATS auth callout service against a real nats-server and real nats-py clients.

One nats-server (JetStream, loopback, port chosen by the server) runs per module with the
config `callout_config` writes; each test starts its own `CalloutService` instances on
connections of the bypass user ``callout`` and stops them. The authorizer under test reads
EdDSA tokens (pyjwt) whose claims say what to grant; ``admin`` is a second bypass user that
watches subjects. Tests that only build values (config text, keys, response JWTs) need no
server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import nats
import nats.errors
import nkeys
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nats.aio.client import Client as NatsClient

from tests.integration.natsutil import NatsServer
from transports.jetstream.callout import (
    AUTH_CALLOUT_SUBJECT,
    MAX_CONTROL_LINE_BYTES,
    AuthRequest,
    CalloutService,
    Denied,
    Grant,
    callout_config,
    new_issuer,
)

SERVICE_USER, SERVICE_PASSWORD = "callout", "callout-secret"
ADMIN_USER, ADMIN_PASSWORD = "admin", "admin-secret"
BOOM_TOKEN = "boom-token-secret-4711"
SLOW_TOKEN = "slow-token"
AUTH_VIOLATION = "nats: 'Authorization Violation'"
CONNECT_TIMEOUT_S = 5


class CalloutNatsServer(NatsServer):
    """A `NatsServer` whose config ends with extra text (the callout block)."""

    def __init__(self, workdir: Path, extra_config: str) -> None:
        super().__init__(workdir)
        self.extra_config = extra_config

    def _config(self) -> str:
        return super()._config() + self.extra_config


class Server:
    """The module's nats-server and the callout issuer its config trusts."""

    def __init__(self, nats_server: CalloutNatsServer, issuer_seed: str) -> None:
        self.nats = nats_server
        self.url = nats_server.url
        self.issuer_seed = issuer_seed


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    seed, public = new_issuer()
    config = callout_config(
        public, SERVICE_USER, SERVICE_PASSWORD, bypass_users=[(ADMIN_USER, ADMIN_PASSWORD)]
    )
    nats_server = CalloutNatsServer(tmp_path_factory.mktemp("callout") / "nats", config)
    nats_server.start()
    try:
        yield Server(nats_server, seed)
    finally:
        nats_server.stop()


class TokenPolicy:
    """The authorizer under test: EdDSA tokens whose claims are the grant.

    Claims: ``name``, ``exp``, ``pub`` and ``subs`` (allow lists). `BOOM_TOKEN` makes it
    raise a RuntimeError quoting the token; `SLOW_TOKEN` makes it wait until cancelled.
    """

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.calls: list[AuthRequest] = []
        self.slow_ended = asyncio.Event()

    def token(self, *, pub: list[str], subs: list[str], ttl_s: int = 300, name: str = "t") -> str:
        claims = {"name": name, "exp": int(time.time()) + ttl_s, "pub": pub, "subs": subs}
        return jwt.encode(claims, self.key, algorithm="EdDSA")

    async def __call__(self, request: AuthRequest) -> Grant:
        self.calls.append(request)
        if request.token is None:
            raise Denied("no token")
        if request.token == BOOM_TOKEN:
            raise RuntimeError(f"cannot parse {request.token}")
        if request.token == SLOW_TOKEN:
            try:
                await asyncio.sleep(3600)
            finally:
                self.slow_ended.set()
        try:
            claims = jwt.decode(request.token, self.key.public_key(), algorithms=["EdDSA"])
        except jwt.InvalidTokenError as exc:
            raise Denied(f"bad token: {type(exc).__name__}") from exc
        return Grant(
            name=claims["name"],
            pub_allow=tuple(claims["pub"]),
            sub_allow=tuple(claims["subs"]),
            expires_at_s=claims["exp"],
            tags=("key:test",),
        )


@asynccontextmanager
async def running_service(
    server: Server, policy: TokenPolicy, **options: Any
) -> AsyncIterator[CalloutService]:
    nc = await nats.connect(server.url, user=SERVICE_USER, password=SERVICE_PASSWORD)
    service = CalloutService(nc, server.issuer_seed, policy, **options)
    try:
        await service.start()
        yield service
    finally:
        await service.aclose()
        await nc.close()


class Client:
    """A nats-py connection and the errors the server sent it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.closed = asyncio.Event()
        self.nc: Any = None

    async def connect(self, url: str, **options: Any) -> Client:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        async def on_closed() -> None:
            self.closed.set()

        options.setdefault("allow_reconnect", False)
        # Not nats.connect: when the connect fails it leaves the socket open.
        self.nc = NatsClient()
        try:
            await self.nc.connect(
                url,
                error_cb=on_error,
                closed_cb=on_closed,
                connect_timeout=CONNECT_TIMEOUT_S,
                max_reconnect_attempts=0,
                **options,
            )
        except BaseException:
            await self.nc.close()
            raise
        return self

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


async def connect_error(url: str, **options: Any) -> tuple[str, float]:
    """Connect expecting a refusal; return the error text and how long it took."""
    client = Client()
    start = time.monotonic()
    with pytest.raises(Exception) as caught:  # noqa: PT011 (the text is checked by callers)
        await client.connect(url, **options)
    await client.close()
    return str(caught.value), time.monotonic() - start


async def admin(server: Server) -> Any:
    return await nats.connect(server.url, user=ADMIN_USER, password=ADMIN_PASSWORD)


async def collect(nc: Any, subject: str) -> list[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []

    async def on_msg(msg: Any) -> None:
        got.append((msg.subject, msg.data))

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return got


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, claims, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(
        base64.urlsafe_b64decode(pad(claims))
    )


# --- with a server ------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_granted_client_publishes_and_subscribes_only_where_allowed(
    server: Server,
) -> None:
    policy = TokenPolicy()
    token = policy.token(pub=["allowed.>"], subs=["allowed.>", "_INBOX.>"], name="agent-7")
    watcher = await admin(server)
    seen = await collect(watcher, ">")
    async with running_service(server, policy) as service:
        client = await Client().connect(server.url, token=token, name="sandbox")
        try:
            await client.nc.publish("allowed.a", b"1")
            await client.nc.publish("denied.b", b"2")
            await client.nc.flush()
            got = await collect(client.nc, "allowed.in")
            await collect(client.nc, "denied.in")
            await client.nc.flush()
            await watcher.publish("allowed.in", b"3")
            await watcher.publish("denied.in", b"4")
            await watcher.flush()
            await asyncio.sleep(0.3)
            assert [m for m in seen if m[0] in ("allowed.a", "denied.b")] == [("allowed.a", b"1")]
            assert got == [("allowed.in", b"3")]
            assert client.errors == [
                'nats: permissions violation for publish to "denied.b"',
                'nats: permissions violation for subscription to "denied.in"',
            ]
            request = policy.calls[-1]
            assert request.token == token
            assert request.client_name == "sandbox"
            assert request.client_host == "127.0.0.1"
            assert request.user_nkey.startswith("U")
            assert request.server_id.startswith("N")
            assert (service.served, service.denied, service.errors) == (1, 0, 0)
            connz = await asyncio.to_thread(connz_of, server, "sandbox")
            assert connz["authorized_user"] == "agent-7"
        finally:
            await client.close()
            await watcher.close()


def connz_of(server: Server, name: str) -> dict[str, Any]:
    url = f"{server.nats.http_url}/connz?auth=true&subs=true"
    with urllib.request.urlopen(url, timeout=5) as response:
        connections = json.load(response)["connections"]
    matching = [c for c in connections if c.get("name") == name]
    assert len(matching) == 1, connections
    return dict(matching[0])


@pytest.mark.integration
async def test_an_empty_allow_list_allows_nothing(server: Server) -> None:
    policy = TokenPolicy()
    token = policy.token(pub=[], subs=[])
    watcher = await admin(server)
    seen = await collect(watcher, "anything.>")
    async with running_service(server, policy):
        client = await Client().connect(server.url, token=token)
        try:
            await client.nc.publish("anything.x", b"1")
            got = await collect(client.nc, "anything.y")
            await watcher.publish("anything.y", b"2")
            await watcher.flush()
            await asyncio.sleep(0.3)
            assert seen == [("anything.y", b"2")]  # the watcher's own, not the client's
            assert got == []
            assert client.errors == [
                'nats: permissions violation for publish to "anything.x"',
                'nats: permissions violation for subscription to "anything.y"',
            ]
        finally:
            await client.close()
            await watcher.close()


@pytest.mark.integration
async def test_a_client_allowed_everything_never_sees_auth_requests(server: Server) -> None:
    policy = TokenPolicy()
    wide = policy.token(pub=[">"], subs=[">"])
    async with running_service(server, policy) as service:
        client = await Client().connect(server.url, token=wide)
        try:
            seen = await collect(client.nc, ">")
            sys_seen = await collect(client.nc, "$SYS.>")
            other = await Client().connect(server.url, token=policy.token(pub=[], subs=[]))
            await other.close()
            await client.nc.publish(AUTH_CALLOUT_SUBJECT, b"forged")
            await client.nc.flush()
            await asyncio.sleep(0.3)
            assert service.served == 2
            assert [s for s, _ in seen if s.startswith("$SYS")] == []
            assert sys_seen == []
            assert service.errors == 0  # the forged publish never reached the service
            assert client.errors == [
                'nats: permissions violation for subscription to "$sys.>"',
                f'nats: permissions violation for publish to "{AUTH_CALLOUT_SUBJECT.lower()}"',
            ]
        finally:
            await client.close()


@pytest.mark.integration
async def test_a_bypass_user_of_the_global_account_never_sees_auth_requests(
    server: Server,
) -> None:
    policy = TokenPolicy()
    watcher = Client()
    await watcher.connect(server.url, user=ADMIN_USER, password=ADMIN_PASSWORD)
    try:
        seen = await collect(watcher.nc, ">")
        await collect(watcher.nc, "$SYS.>")
        async with running_service(server, policy) as service:
            client = await Client().connect(server.url, token=policy.token(pub=["x"], subs=[]))
            await client.nc.publish("x", b"1")
            await client.nc.flush()
            await client.close()
        await asyncio.sleep(0.2)
        assert service.served == 1
        assert seen == [("x", b"1")]
        assert watcher.errors == ['nats: permissions violation for subscription to "$sys.>"']
    finally:
        await watcher.close()


@pytest.mark.integration
async def test_with_a_callout_account_grants_place_clients_in_the_app_account(
    tmp_path: Path,
) -> None:
    seed, public = new_issuer()
    config = callout_config(
        public,
        SERVICE_USER,
        SERVICE_PASSWORD,
        bypass_users=[(ADMIN_USER, ADMIN_PASSWORD)],
        account="AUTH",
        app_account="APP",
    )
    nats_server = CalloutNatsServer(tmp_path / "nats", config)
    await asyncio.to_thread(nats_server.start)
    try:
        server = Server(nats_server, seed)
        base = TokenPolicy()

        async def in_app(request: AuthRequest) -> Grant:
            grant = await base(request)
            return Grant(
                name=grant.name,
                pub_allow=grant.pub_allow,
                sub_allow=grant.sub_allow,
                expires_at_s=grant.expires_at_s,
                account="APP",
            )

        watcher = await admin(server)
        seen = await collect(watcher, ">")
        policy: Any = in_app
        async with running_service(server, policy) as service:
            token = base.token(pub=["app.>", "$JS.API.>"], subs=["_INBOX.>"])
            client = await Client().connect(server.url, token=token)
            try:
                js = client.nc.jetstream()
                await js.add_stream(name="APPSTREAM", subjects=["app.>"])
                ack = await js.publish("app.one", b"1")
                assert (ack.stream, ack.seq) == ("APPSTREAM", 1)
            finally:
                await client.close()
            assert service.served == 1
        await asyncio.sleep(0.2)
        # The watcher shares the app account with the client, not the callout account.
        assert ("app.one", b"1") in seen
        assert [s for s, _ in seen if s.startswith("$SYS")] == []
        await watcher.close()
    finally:
        await asyncio.to_thread(nats_server.stop)


@pytest.mark.integration
async def test_a_denied_token_gets_an_authorization_violation_at_connect(server: Server) -> None:
    policy = TokenPolicy()
    other_key_token = TokenPolicy().token(pub=[">"], subs=[">"])
    async with running_service(server, policy) as service:
        error, _ = await connect_error(server.url, token=other_key_token)
        assert error == AUTH_VIOLATION
        error, _ = await connect_error(server.url)  # no token at all
        assert error == AUTH_VIOLATION
        assert (service.served, service.denied, service.errors) == (0, 2, 0)
        assert [c.token for c in policy.calls] == [other_key_token, None]


@pytest.mark.integration
async def test_the_server_closes_the_connection_at_expiry_and_the_token_is_then_refused(
    server: Server,
) -> None:
    policy = TokenPolicy()
    token = policy.token(pub=["x"], subs=["x"], ttl_s=2)
    async with running_service(server, policy) as service:
        client = await Client().connect(server.url, token=token)
        connected_at = time.monotonic()
        try:
            await asyncio.wait_for(client.closed.wait(), timeout=4)
            lifetime_s = time.monotonic() - connected_at
        finally:
            await client.close()
        # exp is whole seconds: the connection lives between 1 and 2 s, plus scheduling.
        assert 0.9 < lifetime_s < 3.0, lifetime_s
        # nats-py closes the connection itself on this -ERR (no reconnect, no error_cb).
        assert str(client.nc.last_error) == "nats: user authentication expired"
        await asyncio.sleep(max(0.0, 2.1 - lifetime_s))
        error, _ = await connect_error(server.url, token=token)
        assert error == AUTH_VIOLATION
        assert (service.served, service.denied) == (1, 1)


@pytest.mark.integration
async def test_garbage_requests_get_an_empty_reply_and_the_service_serves_on(
    server: Server,
) -> None:
    # nats-server lets no client publish to $SYS.REQ.USER.AUTH, not even a user that
    # bypasses the callout ("Publish Violation"), so the garbage goes to the service's
    # message handler directly, as its subscription would deliver it; replies travel over
    # NATS to a real inbox.
    policy = TokenPolicy()
    nc = await nats.connect(server.url, user=SERVICE_USER, password=SERVICE_PASSWORD)
    replies: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_reply(msg: Any) -> None:
        await replies.put(msg.data)

    await nc.subscribe("garbage.replies", cb=on_reply)
    server_kp = nkeys.from_seed(nkeys.encode_seed(b"\x07" * 32, nkeys.PREFIX_BYTE_SERVER))
    async with running_service(server, policy) as service:
        forged = forged_request(server_kp, service.issuer_public)
        garbage = [
            b"",
            b"garbage",
            b"a.b.c",
            b"\xff\xfe.\x00.\x01",
            deeply_nested(forged),
            none_alg(forged),
            resign(forged, server_kp, claims={"aud": "someone-else"}),
            resign(forged, server_kp, claims={"sub": new_issuer()[1]}),
            resign(forged, server_kp, claims={"exp": int(time.time()) - 5}),
            resign(forged, server_kp, claims={"nats": "no"}),
            resign(forged, server_kp, nats={"user_nkey": "UNOTAKEY"}),
            resign(forged, server_kp, nats={"type": "user"}),
            resign(forged, server_kp, header={"typ": "JWT", "alg": "HS256"}),
            tamper(forged),
        ]
        for payload in garbage:
            await service._on_message(FakeMsg(payload, "garbage.replies"))
            assert await asyncio.wait_for(replies.get(), 5) == b"", payload[:80]
        await service._on_message(FakeMsg(forged.encode(), ""))  # nowhere to answer
        assert service.errors == len(garbage) + 1
        # A well-formed request signed by any server key is answered (the control: the
        # empty replies above are refusals, not a service that answers nothing).
        await service._on_message(FakeMsg(forged.encode(), "garbage.replies"))
        _, response = jwt_parts((await asyncio.wait_for(replies.get(), 5)).decode())
        assert response["nats"]["error"] == "no token"
        # A real client still gets in.
        client = await Client().connect(server.url, token=policy.token(pub=["x"], subs=["x"]))
        await client.close()
        assert (service.served, service.denied, service.errors) == (1, 1, len(garbage) + 1)
        # And no client may publish to the callout subject itself.
        await nc.publish(AUTH_CALLOUT_SUBJECT, forged.encode())
        await nc.flush()
        await asyncio.sleep(0.2)
        assert service.errors == len(garbage) + 1
    await nc.close()


class FakeMsg:
    """What the service reads of a nats-py message."""

    def __init__(self, data: bytes, reply: str) -> None:
        self.data = data
        self.reply = reply
        self.subject = AUTH_CALLOUT_SUBJECT


@pytest.mark.integration
async def test_malformed_and_oversize_tokens_are_refused_and_the_service_serves_on(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    policy = TokenPolicy()
    good = policy.token(pub=["x"], subs=["x"])
    claims = jwt_parts(good)[1]
    public_raw = policy.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    bad_tokens = {
        "not a jwt": "not-a-jwt",
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "hs256 with the public key": jwt.encode(claims, public_raw, algorithm="HS256"),
        "truncated": good[:-10],
        "raises": BOOM_TOKEN,
        "over max_token_bytes": good + "A" * 9000,
    }
    caplog.set_level(logging.DEBUG, logger="transports.jetstream.callout")
    async with running_service(server, policy, max_token_bytes=8192) as service:
        for label, token in bad_tokens.items():
            error, _ = await connect_error(server.url, token=token)
            assert error == AUTH_VIOLATION, label
        huge = "A" * (MAX_CONTROL_LINE_BYTES + 1000)
        error, _ = await connect_error(server.url, token=huge)
        assert error == "nats: 'maximum control line exceeded'"
        client = await Client().connect(server.url, token=good)
        await client.close()
        # The oversize token never reached the authorizer; the huge one never the service.
        assert len(policy.calls) == len(bad_tokens) - 1 + 1
        assert (service.served, service.denied, service.errors) == (1, 5, 1)
    assert BOOM_TOKEN not in caplog.text
    assert "RuntimeError: cannot parse <redacted>" in caplog.text


@pytest.mark.integration
async def test_a_slow_authorizer_does_not_hold_up_other_connections(server: Server) -> None:
    policy = TokenPolicy()
    async with running_service(server, policy) as service:
        slow = asyncio.create_task(connect_error(server.url, token=SLOW_TOKEN))
        await asyncio.sleep(0.2)
        assert [c.token for c in policy.calls] == [SLOW_TOKEN]
        start = time.monotonic()
        client = await Client().connect(server.url, token=policy.token(pub=["x"], subs=["x"]))
        fast_s = time.monotonic() - start
        await client.close()
        assert not slow.done()
        assert fast_s < 1.0
        error, _ = await slow
        assert error == AUTH_VIOLATION
        assert service.served == 1
    # The service gave up on the slow authorizer at the request's deadline (+1 s).
    assert service.errors == 1


@pytest.mark.integration
async def test_beyond_max_concurrency_a_request_is_refused_at_once(server: Server) -> None:
    policy = TokenPolicy()
    async with running_service(server, policy, max_concurrency=1) as service:
        slow = asyncio.create_task(connect_error(server.url, token=SLOW_TOKEN))
        await asyncio.sleep(0.2)
        error, elapsed_s = await connect_error(
            server.url, token=policy.token(pub=["x"], subs=["x"])
        )
        assert error == AUTH_VIOLATION
        assert elapsed_s < 1.0
        assert not slow.done()
        assert [c.token for c in policy.calls] == [SLOW_TOKEN]
        assert (service.served, service.errors) == (0, 1)
        await slow
        # The slot is free again once the service gives up the slow request (its deadline).
        await asyncio.wait_for(policy.slow_ended.wait(), 5)
        client = await Client().connect(server.url, token=policy.token(pub=["x"], subs=["x"]))
        await client.close()
        assert (service.served, service.errors) == (1, 2)


@pytest.mark.integration
async def test_two_services_in_one_queue_group_both_serve_and_one_is_enough(
    server: Server,
) -> None:
    policy = TokenPolicy()
    async with (
        running_service(server, policy) as first,
        running_service(server, policy) as second,
    ):
        for _ in range(20):
            client = await Client().connect(server.url, token=policy.token(pub=[], subs=[]))
            await client.close()
        assert first.served + second.served == 20
        assert first.served > 0
        assert second.served > 0
        await first.aclose()
        served_before = first.served
        for _ in range(5):
            client = await Client().connect(server.url, token=policy.token(pub=[], subs=[]))
            await client.close()
        assert first.served == served_before
        assert second.served == 20 - served_before + 5


@pytest.mark.integration
async def test_with_no_service_running_connections_fail_after_the_auth_timeout(
    server: Server,
) -> None:
    error, elapsed_s = await connect_error(server.url, token="anything")
    assert error == AUTH_VIOLATION
    # nats-server waits auth_timeout (2 s by default) for an answer nobody sends.
    assert 1.8 < elapsed_s < 3.5, elapsed_s
    # The bypass users are not affected.
    nc = await admin(server)
    await nc.close()


# --- without a server ---------------------------------------------------------------------


def forged_request(server_kp: Any, issuer_public: str) -> str:
    """A well-formed authorization request, as nats-server would send, signed by server_kp."""
    server_key = server_kp.public_key.decode()
    user_seed = nkeys.encode_seed(b"\x09" * 32, nkeys.PREFIX_BYTE_USER)
    claims = {
        "aud": "nats-authorization-request",
        "exp": int(time.time()) + 60,
        "iat": int(time.time()),
        "iss": server_key,
        "sub": issuer_public,
        "nats": {
            "server_id": {"name": "n", "host": "h", "id": server_key},
            "user_nkey": nkeys.from_seed(user_seed).public_key.decode(),
            "client_info": {"host": "127.0.0.1", "id": 9, "kind": "Client"},
            "connect_opts": {"lang": "python3", "protocol": 1},
            "type": "authorization_request",
            "version": 2,
        },
    }
    return sign_jwt({"typ": "JWT", "alg": "ed25519-nkey"}, claims, server_kp)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_jwt(header: dict[str, Any], claims: dict[str, Any], kp: Any) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(kp.sign(signing_input.encode()))}"


def resign(
    token: str,
    kp: Any,
    *,
    header: dict[str, Any] | None = None,
    claims: dict[str, Any] | None = None,
    nats: dict[str, Any] | None = None,
) -> bytes:
    old_header, old_claims = jwt_parts(token)
    new_claims = {**old_claims, **(claims or {})}
    if nats is not None:
        new_claims["nats"] = {**old_claims["nats"], **nats}
    return sign_jwt({**old_header, **(header or {})}, new_claims, kp).encode()


def none_alg(token: str) -> bytes:
    _, claims = jwt_parts(token)
    header = b64(json.dumps({"typ": "JWT", "alg": "none"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.".encode()


def deeply_nested(token: str) -> bytes:
    header, _, signature = token.split(".")
    return f"{header}.{b64(b'[' * 100_000 + b']' * 100_000)}.{signature}".encode()


def tamper(token: str) -> bytes:
    header, _, signature = token.split(".")
    _, decoded = jwt_parts(token)
    decoded["nats"]["connect_opts"]["auth_token"] = "injected"
    return f"{header}.{b64(json.dumps(decoded).encode())}.{signature}".encode()


def public_key_valid(key: str, prefix: int) -> bool:
    raw = base64.b32decode(key)
    return raw[0] == prefix and nkeys.crc16(raw[:-2]) == int.from_bytes(raw[-2:], "little")


async def test_a_response_carries_a_user_jwt_of_the_grant_signed_by_the_issuer() -> None:
    seed, issuer = new_issuer()
    server_kp = nkeys.from_seed(nkeys.encode_seed(b"\x05" * 32, nkeys.PREFIX_BYTE_SERVER))
    expires_at_s = int(time.time()) + 600

    async def grant_all(request: AuthRequest) -> Grant:
        return Grant(
            name="agent",
            pub_allow=("a.>",),
            pub_deny=("a.secret",),
            sub_allow=("a.>", "_INBOX_x.>"),
            expires_at_s=expires_at_s,
            account="TENANT",
            tags=("key:k1",),
        )

    replies: list[tuple[str, bytes]] = []

    class FakeConnection:
        async def publish(self, subject: str, payload: bytes) -> None:
            replies.append((subject, payload))

    service = CalloutService(FakeConnection(), seed, grant_all)
    request = forged_request(server_kp, issuer)
    await service._handle(request.encode(), "reply.1")  # the message path minus NATS
    [(subject, payload)] = replies
    assert subject == "reply.1"
    header, response = jwt_parts(payload.decode())
    request_claims = jwt_parts(request)[1]
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    assert response["iss"] == issuer
    assert response["sub"] == request_claims["nats"]["user_nkey"]
    assert response["aud"] == server_kp.public_key.decode()
    assert response["nats"]["type"] == "authorization_response"
    assert response["nats"]["version"] == 2
    assert set(response["nats"]) == {"jwt", "type", "version"}
    signing_input, signature = payload.decode().rsplit(".", 1)
    issuer_kp = nkeys.from_seed(seed.encode())
    assert issuer_kp.verify(signing_input.encode(), base64.urlsafe_b64decode(signature + "=="))
    user_header, user = jwt_parts(response["nats"]["jwt"])
    assert user_header == header
    assert user["iss"] == issuer
    assert user["sub"] == response["sub"]
    assert user["aud"] == "TENANT"
    assert user["name"] == "agent"
    assert user["exp"] == expires_at_s
    assert user["nats"] == {
        "pub": {"allow": ["a.>"], "deny": ["$SYS.>", "a.secret"]},
        "sub": {"allow": ["a.>", "_INBOX_x.>"], "deny": ["$SYS.>"]},
        "subs": -1,
        "data": -1,
        "payload": -1,
        "tags": ["key:k1"],
        "type": "user",
        "version": 2,
    }
    assert len(user["jti"]) == 52
    assert (service.served, service.denied, service.errors) == (1, 0, 0)


async def test_an_expired_or_malformed_grant_is_an_error_response_not_a_jwt() -> None:
    seed, issuer = new_issuer()
    server_kp = nkeys.from_seed(nkeys.encode_seed(b"\x05" * 32, nkeys.PREFIX_BYTE_SERVER))
    grants = iter(
        [
            Grant(name="a", pub_allow=("x",), sub_allow=(), expires_at_s=int(time.time()) - 1),
            Grant(name="a", pub_allow=("has space",), sub_allow=(), expires_at_s=None),
            Grant(name="", pub_allow=(), sub_allow=(), expires_at_s=None),
        ]
    )

    async def authorizer(request: AuthRequest) -> Grant:
        return next(grants)

    replies: list[bytes] = []

    class FakeConnection:
        async def publish(self, subject: str, payload: bytes) -> None:
            replies.append(payload)

    service = CalloutService(FakeConnection(), seed, authorizer)
    for _ in range(3):
        await service._handle(forged_request(server_kp, issuer).encode(), "r")
    errors = [jwt_parts(reply.decode())[1]["nats"].get("error") for reply in replies]
    assert errors == ["grant expired", "invalid grant", "invalid grant"]
    assert (service.served, service.denied, service.errors) == (0, 1, 2)


async def test_a_bug_while_handling_a_request_is_logged_counted_and_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed, _ = new_issuer()
    replies: list[tuple[str, bytes]] = []

    class FakeConnection:
        async def publish(self, subject: str, payload: bytes) -> None:
            replies.append((subject, payload))

    async def never(request: AuthRequest) -> Grant:
        raise AssertionError

    service = CalloutService(FakeConnection(), seed, never)
    bad_msg: Any = FakeMsg(b"", "r")
    bad_msg.data = None  # what no nats-py message holds: parsing it raises AttributeError
    await service._on_message(bad_msg)
    await asyncio.sleep(0.05)
    assert replies == [("r", b"")]
    assert service.errors == 1
    assert "request handling failed" in caplog.text
    assert "AttributeError" in caplog.text


def test_new_issuer_returns_an_account_seed_and_its_public_key() -> None:
    seed, public = new_issuer()
    assert seed.startswith("SA")
    assert public.startswith("A")
    assert nkeys.from_seed(seed.encode()).public_key.decode() == public
    assert public_key_valid(public, nkeys.PREFIX_BYTE_ACCOUNT)
    assert new_issuer() != (seed, public)


def test_callout_config_text_in_the_global_account() -> None:
    _, public = new_issuer()
    text = callout_config(public, "svc", "pw", bypass_users=[("adm", "pw2")])
    assert text == (
        f"max_control_line: {MAX_CONTROL_LINE_BYTES}\n"
        "authorization {\n"
        "  users: [\n"
        '    { user: "svc", password: "pw" }\n'
        '    { user: "adm", password: "pw2", permissions: '
        '{ publish: { deny: ["$SYS.>"] }, subscribe: { deny: ["$SYS.>"] } } }\n'
        "  ]\n"
        "  auth_callout {\n"
        f'    issuer: "{public}"\n'
        '    users: ["svc", "adm"]\n'
        "  }\n"
        "}\n"
    )
    assert "max_control_line" not in callout_config(
        public, "svc", "pw", max_control_line_bytes=None
    )


def test_callout_config_text_with_a_callout_account() -> None:
    _, public = new_issuer()
    text = callout_config(
        public, "svc", "pw", bypass_users=[("adm", "pw2")], account="AUTH", app_account="APP"
    )
    assert text == (
        f"max_control_line: {MAX_CONTROL_LINE_BYTES}\n"
        "accounts {\n"
        '  "AUTH": { users: [ { user: "svc", password: "pw" } ] }\n'
        '  "APP": { jetstream: enabled, users: [ { user: "adm", password: "pw2" } ] }\n'
        "}\n"
        "authorization {\n"
        "  auth_callout {\n"
        f'    issuer: "{public}"\n'
        '    users: ["svc", "adm"]\n'
        '    account: "AUTH"\n'
        "  }\n"
        "}\n"
    )


@pytest.mark.parametrize(
    ("issuer", "user", "password", "bypass"),
    [
        ("not-a-key", "svc", "pw", []),
        ("U" + "A" * 55, "svc", "pw", []),
        (None, "svc", 'p"w', []),
        (None, "svc", "p w", []),
        (None, "svc", "p\\w", []),
        (None, "svc", "pw", [("svc", "other")]),
        (None, "", "pw", []),
    ],
)
def test_callout_config_refuses_what_the_config_cannot_hold(
    issuer: str | None, user: str, password: str, bypass: list[tuple[str, str]]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each case has its own message)
        callout_config(issuer or new_issuer()[1], user, password, bypass_users=bypass)


@pytest.mark.parametrize(
    ("account", "app_account"),
    [("AUTH", None), (None, "APP"), ("AUTH", "AUTH"), ("$SYS", "APP"), ("AUTH", "$G")],
)
def test_callout_config_refuses_an_account_layout_it_does_not_know(
    account: str | None, app_account: str | None
) -> None:
    with pytest.raises(ValueError, match="account"):
        callout_config(new_issuer()[1], "svc", "pw", account=account, app_account=app_account)


def test_the_service_needs_an_account_seed() -> None:
    async def never(request: AuthRequest) -> Grant:
        raise AssertionError

    user_seed = nkeys.encode_seed(b"\x01" * 32, nkeys.PREFIX_BYTE_USER).decode()
    for seed in (user_seed, "SAnot-a-seed", ""):
        with pytest.raises(ValueError, match="seed"):
            CalloutService(object(), seed, never)
