"""The auth callout's values without a server: response JWTs, grants, config text, keys.

The server-side behaviour is in test_callout.py; these check what the service signs and
what `callout_config` writes, byte for byte where the server would read it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import nkeys
import pytest

from tests.transports.calloututil import FakeMsg, forged_request, jwt_parts, public_key_valid
from transports.jetstream.callout import (
    MAX_CONTROL_LINE_BYTES,
    AuthRequest,
    CalloutService,
    Grant,
    callout_config,
    new_issuer,
)


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
            Grant(name="a", pub_allow="x.>", sub_allow=(), expires_at_s=None),  # type: ignore[arg-type]
        ]
    )

    async def authorizer(request: AuthRequest) -> Grant:
        return next(grants)

    replies: list[bytes] = []

    class FakeConnection:
        async def publish(self, subject: str, payload: bytes) -> None:
            replies.append(payload)

    service = CalloutService(FakeConnection(), seed, authorizer)
    for _ in range(4):
        await service._handle(forged_request(server_kp, issuer).encode(), "r")
    errors = [jwt_parts(reply.decode())[1]["nats"].get("error") for reply in replies]
    assert errors == ["grant expired", "invalid grant", "invalid grant", "invalid grant"]
    assert (service.served, service.denied, service.errors) == (0, 1, 3)


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
