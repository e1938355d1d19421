"""The NATS auth callout service against a real nats-server and real nats-py clients.

One nats-server (JetStream, loopback, port chosen by the server) runs per module with the
config `callout_config` writes; each test starts its own `CalloutService` instances on
connections of the bypass user ``callout`` and stops them. The authorizer under test reads
EdDSA tokens (pyjwt) whose claims say what to grant; ``admin`` is a second bypass user that
watches subjects. Tests of values alone (config text, keys, response JWTs) are in
test_callout_values.py.
"""

from __future__ import annotations

import asyncio
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
from tests.transports.calloututil import (
    FakeMsg,
    deeply_nested,
    forged_request,
    jwt_parts,
    none_alg,
    resign,
    tamper,
)
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
