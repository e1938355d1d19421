"""The server enforces every token: raw NATS clients, read-only tokens, expiry, revocation.

Every test runs against `secured`: a real nats-server whose config sends each connection
to the auth callout, and a real mesa service process. The attacker is a raw nats-py
client that holds a token (as a sandboxed agent would) and tries every route the SDK
would never take. Each refusal is checked twice: the server says so (a permissions
violation, an authorization error) and, by effect, the other repo reads exactly what
it read before (a forged entry on its log would make its mounts raise
`LogCorruptError`).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from mesa.errors import AuthenticationError, AuthorizationError
from mesa_sdk import Mesa
from tests.integration.secured import SecuredDeployment
from transports.auth import Keyring
from transports.jetstream import (
    JetStreamTransport,
    blob_bucket,
    inbox_prefix,
    index_bucket,
    kv_bucket,
    kv_stream,
    log_subject,
    stream_name,
)
from transports.keys import generate_key

pytestmark = pytest.mark.integration

#: How long a request the server drops (no permission) is given before it counts as refused.
REFUSED_WAIT_S = 1.0


class RawClient:
    """A nats-py connection presenting a token, recording what the server said to it."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Any = None
        self.closed = asyncio.Event()

    async def connect(self, url: str, token: str, *, inbox: str | None = None) -> RawClient:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        async def on_closed() -> None:
            if self.nc is not None and self.nc.last_error is not None:
                self.errors.append(str(self.nc.last_error))
            self.closed.set()

        self.nc = NatsClient()
        try:
            await self.nc.connect(
                url,
                token=token,
                inbox_prefix=inbox or inbox_prefix(token),
                error_cb=on_error,
                closed_cb=on_closed,
                allow_reconnect=False,
                connect_timeout=3,
            )
        except BaseException:
            await self.nc.close()  # a refused connect leaves its socket open otherwise
            raise
        return self

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]

    async def refused_request(self, subject: str, payload: bytes = b"") -> None:
        """Assert that a request to ``subject`` gets no answer and a permissions violation."""
        before = len(self.violations())
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await self.nc.request(subject, payload, timeout=REFUSED_WAIT_S)
        await self.nc.flush()
        await _until(lambda: len(self.violations()) > before, f"violation for {subject}")

    async def refused_publish(self, subject: str, payload: bytes = b"x") -> None:
        """Assert that a publish to ``subject`` is refused (the server says so)."""
        before = len(self.violations())
        await self.nc.publish(subject, payload)
        await self.nc.flush()
        await _until(lambda: len(self.violations()) > before, f"violation for {subject}")

    async def refused_subscribe(self, subject: str) -> None:
        before = len(self.violations())
        await self.nc.subscribe(subject)
        await self.nc.flush()
        await _until(lambda: len(self.violations()) > before, f"violation for {subject}")

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()


async def _until(check: Any, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def world(
    secured: SecuredDeployment, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[dict[str, Any]]:
    """Org acme with repos a and b (b holds secret.txt), org other with repo c."""
    monkeypatch.setenv("MESA_NATS_URL", secured.urls[0])
    acme = Mesa(org="acme", api_key=secured.api_key)
    other = Mesa(org="other", api_key=secured.api_key)
    for name in ("a", "b"):
        await acme.repos.create(name)
    await other.repos.create("c")
    async with acme.fs.mount(repos=["b"]) as fs:
        await fs.write("/acme/b/secret.txt", b"b's secret\n")
    async with other.fs.mount(repos=["c"]) as fs:
        await fs.write("/other/c/c.txt", b"c\n")
    try:
        yield {"deployment": secured, "acme": acme, "other": other, "url": secured.urls[0]}
    finally:
        await acme.transport.aclose()


async def _snapshot(mesa: Mesa, repo: str) -> dict[str, bytes]:
    """Every file of ``repo`` as a fresh mount reads it."""
    org = mesa.org
    files: dict[str, bytes] = {}
    async with mesa.fs.mount(repos=[repo]) as fs:
        for name in await fs.readdir(f"/{org}/{repo}"):
            path = f"/{org}/{repo}/{name}"
            files[path] = await fs.read(path)
    return files


async def _log_length(deployment: SecuredDeployment, org: str, repo: str) -> int:
    """How many entries the repo's log stream holds (read with the service's login)."""
    nc = await nats.connect(deployment.trusted_urls()[0])
    try:
        info = await nc.jetstream().stream_info(stream_name(org, repo))
        return int(info.state.messages)
    finally:
        await nc.close()


async def test_a_token_for_repo_a_reaches_nothing_of_repo_b_nor_of_another_org(
    world: dict[str, Any],
) -> None:
    acme: Mesa = world["acme"]
    other: Mesa = world["other"]
    deployment: SecuredDeployment = world["deployment"]
    before_b = await _snapshot(acme, "b")
    before_c = await _snapshot(other, "c")
    entries_b = await _log_length(deployment, "acme", "b")
    token = acme.tokens.create(repos=["a"], scopes=["read", "write"], ttl_seconds=300).token
    raw = await RawClient().connect(world["url"], token)
    try:
        change_b = (await acme.changes.list("b"))[0].change_id
        from transports.base import LogId

        b_log = log_subject(LogId("acme", "b", change_b))
        kv_b, blobs_b = kv_bucket("acme", "b"), blob_bucket("acme", "b")
        # Write B's log, records and blobs, every route.
        await raw.refused_publish(b_log, b"forged entry")
        await raw.refused_request(b_log, b"forged entry")
        await raw.refused_publish(f"$KV.{kv_b}.acme.b.repo", b"{}")
        await raw.refused_publish(f"$O.{blobs_b}.C.x", b"chunk")
        await raw.refused_request(f"$JS.API.STREAM.PURGE.OBJ_{blobs_b}", b"{}")
        await raw.refused_request(f"$JS.API.STREAM.PURGE.{stream_name('acme', 'b')}", b"{}")
        await raw.refused_request(f"$JS.API.STREAM.DELETE.{stream_name('acme', 'b')}")
        # Read B's log, records and blobs, every route.
        for stream in (stream_name("acme", "b"), kv_stream(kv_b), f"OBJ_{blobs_b}"):
            await raw.refused_request(f"$JS.API.STREAM.MSG.GET.{stream}", b'{"seq":1}')
            await raw.refused_request(f"$JS.API.DIRECT.GET.{stream}", b'{"seq":1}')
            await raw.refused_request(f"$JS.API.STREAM.INFO.{stream}")
            consumer = {"stream_name": stream, "config": {"deliver_subject": "x"}}
            await raw.refused_request(
                f"$JS.API.CONSUMER.CREATE.{stream}", json.dumps(consumer).encode()
            )
        # No stream of anyone's can be created, sourced or changed.
        mirror = {"name": "STEAL", "sources": [{"name": stream_name("acme", "b")}]}
        await raw.refused_request("$JS.API.STREAM.CREATE.STEAL", json.dumps(mirror).encode())
        # The org's index (an org-wide grant) and another org.
        await raw.refused_request(f"$JS.API.STREAM.INFO.{kv_stream(index_bucket('acme'))}")
        await raw.refused_request(f"$JS.API.STREAM.MSG.GET.{stream_name('other', 'c')}")
        await raw.refused_publish(f"mesa.other.c.log.{'k' * 32}")
        # Another connection's replies, and everyone's.
        await raw.refused_subscribe("_INBOX.>")
        await raw.refused_subscribe(f"{inbox_prefix('another token')}.>")
        await raw.refused_subscribe(">")
        # Its own repo works on the same connection (the refusals were not a dead link).
        reply = await raw.nc.request(
            f"$JS.API.STREAM.INFO.{stream_name('acme', 'a')}", b"", timeout=5
        )
        assert json.loads(reply.data)["config"]["name"] == stream_name("acme", "a")
    finally:
        await raw.close()
    # By effect: B and C read exactly what they read before; nothing reached B's log.
    assert await _snapshot(acme, "b") == before_b == {"/acme/b/secret.txt": b"b's secret\n"}
    assert await _snapshot(other, "c") == before_c
    assert await _log_length(deployment, "acme", "b") == entries_b


async def test_the_sdk_with_a_token_for_a_cannot_mount_b_or_list_the_org(
    world: dict[str, Any],
) -> None:
    acme: Mesa = world["acme"]
    token = acme.tokens.create(repos=["a"], scopes=["read", "write"], ttl_seconds=300).token
    agent = Mesa(org="acme", api_key=token)
    try:
        async with agent.fs.mount(repos=["a"]) as fs:
            await fs.write("/acme/a/ok.txt", b"ok")
        with pytest.raises(AuthorizationError):
            async with agent.fs.mount(repos=["b"]):
                pass
        with pytest.raises(AuthorizationError):
            await agent.api_keys.list()
        with pytest.raises(AuthorizationError):
            await agent.repos.delete("b")
    finally:
        await agent.transport.aclose()
    assert await _snapshot(acme, "a") == {"/acme/a/ok.txt": b"ok"}


async def test_a_read_only_token_publishes_nothing_by_any_route(world: dict[str, Any]) -> None:
    acme: Mesa = world["acme"]
    deployment: SecuredDeployment = world["deployment"]
    entries_b = await _log_length(deployment, "acme", "b")
    token = acme.tokens.create(repos=["b"], scopes=["read"], ttl_seconds=300).token
    agent = Mesa(org="acme", api_key=token)
    try:
        async with agent.fs.mount(repos=["b"]) as fs:
            assert await fs.read("/acme/b/secret.txt") == b"b's secret\n"
            with pytest.raises(OSError, match=r"(?i)read.only") as info:
                await fs.write("/acme/b/secret.txt", b"overwritten")
            assert info.value.errno == errno.EROFS
    finally:
        await agent.transport.aclose()
    raw = await RawClient().connect(world["url"], token)
    try:
        change_b = (await acme.changes.list("b"))[0].change_id
        from transports.base import LogId

        kv_b, blobs_b = kv_bucket("acme", "b"), blob_bucket("acme", "b")
        await raw.refused_publish(log_subject(LogId("acme", "b", change_b)), b"forged")
        await raw.refused_publish(f"$KV.{kv_b}.acme.b.repo", b"{}")
        await raw.refused_publish(f"$O.{blobs_b}.M.x", b"{}")
        await raw.refused_request(f"$JS.API.STREAM.PURGE.OBJ_{blobs_b}", b"{}")
        # Reading is allowed: the log stream answers.
        reply = await raw.nc.request(
            f"$JS.API.STREAM.INFO.{stream_name('acme', 'b')}", b"", timeout=5
        )
        assert "error" not in json.loads(reply.data)
    finally:
        await raw.close()
    assert await _log_length(deployment, "acme", "b") == entries_b
    assert await _snapshot(acme, "b") == {"/acme/b/secret.txt": b"b's secret\n"}


async def test_an_expired_token_is_disconnected_by_the_server_and_cannot_reconnect(
    world: dict[str, Any],
) -> None:
    acme: Mesa = world["acme"]
    token = acme.tokens.create(repos=["a"], scopes=["read"], ttl_seconds=2).token
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    raw = await RawClient().connect(world["url"], token)
    try:
        await asyncio.wait_for(raw.closed.wait(), timeout=exp - time.time() + 3)
        closed_after = time.time() - exp
        assert closed_after < 2.5, f"closed {closed_after:.1f}s after expiry"
        assert any("expired" in e.lower() for e in raw.errors), raw.errors
    finally:
        await raw.close()
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
        await RawClient().connect(world["url"], token)


async def test_wrong_foreign_and_revoked_keys_cannot_mount_and_revocation_closes_a_mount(
    world: dict[str, Any],
) -> None:
    acme: Mesa = world["acme"]
    other: Mesa = world["other"]
    unknown = Mesa(org="acme", api_key=generate_key())
    foreign_key = await other.api_keys.create(name="o", scopes=["read", "write"])
    foreign = Mesa(org="acme", api_key=foreign_key.key)
    worker_key = await acme.api_keys.create(name="w", scopes=["read", "write"], repos=["a"])
    worker = Mesa(org="acme", api_key=worker_key.key)
    try:
        for client in (unknown, foreign):
            with pytest.raises(AuthenticationError):
                async with client.fs.mount(repos=["a"]):
                    pass
        async with worker.fs.mount(repos=["a"]) as fs:
            await fs.write("/acme/a/w.txt", b"1")
            revoked_at = time.monotonic()
            await acme.api_keys.revoke(worker_key.id)
            # The live mount's connection is closed by the server within seconds.
            refused: AuthenticationError | None = None
            acknowledged = b"1"
            while refused is None:
                attempt = str(int(acknowledged) + 1).encode()
                try:
                    await fs.write("/acme/a/w.txt", attempt)
                    acknowledged = attempt
                except AuthenticationError as exc:
                    refused = exc
                    break
                assert time.monotonic() - revoked_at < 5, "a revoked key kept writing"
                await asyncio.sleep(0.05)
            assert "revoked" in str(refused)
            refused_attempt = str(int(acknowledged) + 1).encode()
            # Refused from now on, at once, and nothing more lands.
            with pytest.raises(AuthenticationError, match="revoked"):
                await fs.write("/acme/a/w.txt", b"never")
        with pytest.raises(AuthenticationError):
            async with worker.fs.mount(repos=["a"]):
                pass
        # Its tokens are refused at the door too, by the server itself.
        token = worker.tokens.create(repos=["a"], scopes=["read"], ttl_seconds=60).token
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
            await RawClient().connect(world["url"], token)
    finally:
        for client in (unknown, foreign, worker):
            await client.transport.aclose()
    # Every acknowledged write is kept. The write that failed was in flight when the
    # server closed the connection, so it may have been stored (its error says so);
    # nothing after it was.
    assert (await _snapshot(acme, "a"))["/acme/a/w.txt"] in (acknowledged, refused_attempt)


def _forged_tokens(api_key: str) -> dict[str, str]:
    """Credentials the callout must refuse, each for a different reason."""
    now = int(time.time())
    claims = {"org": "acme", "repos": {"*": "rw"}, "scp": ["read", "write", "admin"]}
    claims |= {"iat": now, "exp": now + 300, "mid": "m"}

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"alg":"none","typ":"JWT"}')
    kid = "mk" + "0" * 16
    from transports.keys import private_key, public_key

    return {
        "not a jwt": "hello",
        "alg none": f"{header}.{b64(json.dumps(claims).encode())}.",
        "hs256 with the public key": jwt.encode(
            claims, public_key(api_key), algorithm="HS256", headers={"kid": kid}
        ),
        "unknown key": jwt.encode(claims, private_key(generate_key()), algorithm="EdDSA"),
        "wrong audience": jwt.encode(
            {**claims, "aud": "somebody"}, private_key(api_key), algorithm="EdDSA"
        ),
        "oversize": "x" * 20_000,
        "expired": jwt.encode({**claims, "exp": now - 10}, private_key(api_key), algorithm="EdDSA"),
    }


async def test_the_callout_refuses_garbage_and_keeps_serving(world: dict[str, Any]) -> None:
    acme: Mesa = world["acme"]
    deployment: SecuredDeployment = world["deployment"]
    for reason, token in _forged_tokens(deployment.api_key).items():
        with pytest.raises(nats.errors.Error):
            await RawClient().connect(world["url"], token)
        good = acme.tokens.create(repos=["a"], scopes=["read"], ttl_seconds=60).token
        client = await RawClient().connect(world["url"], good)
        await client.close()
        assert all(proc.poll() is None for proc in deployment.services), reason


async def test_new_connections_wait_for_a_service_and_open_ones_keep_working(
    world: dict[str, Any],
) -> None:
    acme: Mesa = world["acme"]
    deployment: SecuredDeployment = world["deployment"]
    token = acme.tokens.create(repos=["a"], scopes=["read", "write"], ttl_seconds=300).token
    agent = Mesa(org="acme", api_key=token)
    try:
        async with agent.fs.mount(repos=["a"]) as fs:
            await fs.write("/acme/a/x.txt", b"1")
            deployment.stop_services()
            await fs.write("/acme/a/x.txt", b"2")  # the open connection is not affected
            fresh = acme.tokens.create(repos=["a"], scopes=["read"], ttl_seconds=60).token
            with pytest.raises(nats.errors.Error):
                await RawClient().connect(world["url"], fresh)
            deployment.start_service()
            client = await RawClient().connect(world["url"], fresh)
            await client.close()
    finally:
        await agent.transport.aclose()
    assert (await _snapshot(acme, "a"))["/acme/a/x.txt"] == b"2"


async def test_the_names_of_a_repo_are_an_interface() -> None:
    from transports.base import LogId

    assert stream_name("acme", "app") == "MESA_acme_app"
    assert kv_bucket("acme", "app") == "mesa_acme_app_kv"
    assert kv_stream(kv_bucket("acme", "app")) == "KV_mesa_acme_app_kv"
    assert blob_bucket("acme", "app") == "mesa_acme_app_blobs"
    assert index_bucket("acme") == "mesa_acme_repos"
    assert log_subject(LogId("acme", "app", "k" * 32)) == f"mesa.acme.app.log.{'k' * 32}"
    assert stream_name("acme", "My_App") == "MESA_acme__my___app"
    assert inbox_prefix("t") == inbox_prefix("t") != inbox_prefix("u")


async def test_a_raw_client_reads_its_repo_as_documented(world: dict[str, Any]) -> None:
    """docs/operations.md: connect with the token, read the log stream of the repo."""
    acme: Mesa = world["acme"]
    token = acme.tokens.create(repos=["b"], scopes=["read"], ttl_seconds=60).token
    nc = await nats.connect(world["url"], token=token, inbox_prefix=inbox_prefix(token))
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream_name("acme", "b"))
        assert info.state.messages >= 1
        kv = await js.key_value(kv_bucket("acme", "b"))
        entry = await kv.get("acme.b.repo")
        assert json.loads(entry.value)["name"] == "b"
    finally:
        await nc.close()


async def test_the_jetstream_transport_in_token_mode_refuses_a_forged_token(
    world: dict[str, Any],
) -> None:
    transport = await JetStreamTransport.connect(
        [world["url"]], keyring=Keyring(), present_tokens=True
    )
    try:
        from transports.base import TokenRejectedError

        started = time.monotonic()
        with pytest.raises(TokenRejectedError):
            await transport.kv_get(_forged_tokens(generate_key())["unknown key"], "acme.a.repo")
        assert time.monotonic() - started < 3, "a refused token must fail fast"
    finally:
        await transport.aclose()


async def test_a_token_mount_survives_a_server_restart_through_the_callout(
    world: dict[str, Any],
) -> None:
    """A crash of the server does not strand mounts: they reconnect through the callout."""
    acme: Mesa = world["acme"]
    deployment: SecuredDeployment = world["deployment"]
    assert deployment.server is not None
    token = acme.tokens.create(repos=["a"], scopes=["read", "write"], ttl_seconds=300).token
    agent = Mesa(org="acme", api_key=token)
    try:
        async with agent.fs.mount(repos=["a"]) as fs:
            await fs.write("/acme/a/r.txt", b"before")
            await asyncio.to_thread(deployment.server.kill)
            await asyncio.to_thread(deployment.server.start)
            # The service's own connection reconnects too; the mount's reconnect is
            # authorized again and its next write lands (retried across the outage).
            deadline = time.monotonic() + 30
            while True:
                try:
                    await fs.write("/acme/a/r.txt", b"after")
                    break
                except Exception:
                    assert time.monotonic() < deadline, "the mount never came back"
                    await asyncio.sleep(0.2)
    finally:
        await agent.transport.aclose()
    assert (await _snapshot(acme, "a"))["/acme/a/r.txt"] == b"after"
