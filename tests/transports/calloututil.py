"""Authorization requests and JWTs for the auth callout tests: forged, broken, taken apart."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import nkeys

from transports.jetstream.callout import AUTH_CALLOUT_SUBJECT


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, claims, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(
        base64.urlsafe_b64decode(pad(claims))
    )


class FakeMsg:
    """What the service reads of a nats-py message."""

    def __init__(self, data: bytes, reply: str) -> None:
        self.data = data
        self.reply = reply
        self.subject = AUTH_CALLOUT_SUBJECT


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
