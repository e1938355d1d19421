"""NATS JWTs for the auth callout: verify authorization requests, sign responses.

A NATS JWT is base64url (no padding) of a JSON header ``{"typ":"JWT","alg":"ed25519-nkey"}``,
a dot, base64url of the JSON claims, a dot, base64url of the Ed25519 signature of the first
two parts. It is written here because no kept library does it: pyjwt has no
``ed25519-nkey`` algorithm and nats-jwt knows no authorization claims. Keys and signatures
come from ``nkeys`` (PyNaCl); nkeys 0.2.1 cannot read a public key, so `is_public_key`
decodes one (base32: a role byte, 32 key bytes, a CRC-16 little-endian).

Invariant: `parse_request` accepts only what nats-server sends (nats-server 2.10+,
``auth_callout`` without ``xkey``): a well-formed JWT, signed by the server key its ``iss``
names, with ``aud`` ``nats-authorization-request``, ``sub`` the expected issuer, an
unexpired ``exp``, and ``nats.type`` ``authorization_request`` version 2. Anything else
raises `BadRequestError`, never another exception.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

_REQUEST_AUDIENCE = "nats-authorization-request"
_JWT_ALG = "ed25519-nkey"
_JWT_HEADER = {"typ": "JWT", "alg": _JWT_ALG}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_PUBLIC_KEY_CHARS = 56


@dataclass(frozen=True)
class AuthRequest:
    """What the service learned from a verified authorization request.

    Attributes:
        token: the client's ``auth_token`` CONNECT option (None if absent).
        user: the client's ``user`` CONNECT option.
        password: the client's ``pass`` CONNECT option.
        client_name: the connection name the client gave.
        client_host: the client's IP address as the server saw it.
        client_id: the server's connection id (cid) of the client.
        user_nkey: the fresh ``U...`` key the server made for this attempt (the user JWT's sub).
        server_id: the public key (``N...``) of the server asking (the response's aud).
    """

    token: str | None
    user: str | None
    password: str | None
    client_name: str | None
    client_host: str | None
    client_id: int | None
    user_nkey: str
    server_id: str


class BadRequestError(Exception):
    """Raised when an authorization request cannot be verified; its text says why."""


def encode_jwt(
    claims: Mapping[str, Any], nats: Mapping[str, Any], keypair: Any, issuer: str, now_s: int
) -> str:
    """Return a JWT of ``claims`` plus iat, iss and jti, and ``nats``, signed by ``keypair``.

    ``issuer`` is ``keypair``'s public key; ``jti`` is made as nats-io/jwt makes it.
    """
    full = {**claims, "iat": now_s, "iss": issuer}
    full["jti"] = _jti(full)
    full["nats"] = dict(nats)
    signing_input = f"{_b64_json(_JWT_HEADER)}.{_b64_json(full)}"
    signature = keypair.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64(signature)}"


def parse_request(data: bytes, issuer_public: str) -> tuple[AuthRequest, float]:
    """Verify an authorization request JWT; return it and its deadline (exp, epoch seconds).

    Raises:
        BadRequestError: not a JWT, not ``ed25519-nkey``, not signed by the server key it names,
            not an authorization request for ``issuer_public``, expired, or missing fields.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadRequestError("not ASCII (an encrypted request? xkey is not supported)") from exc
    chunks = text.split(".")
    if len(chunks) != 3:
        raise BadRequestError(f"expected 3 JWT chunks, got {len(chunks)}")
    header = _json_chunk(chunks[0], "header")
    if str(header.get("typ", "")).upper() != "JWT" or header.get("alg") != _JWT_ALG:
        raise BadRequestError(f"header must be typ JWT, alg {_JWT_ALG}")
    claims = _json_chunk(chunks[1], "claims")
    server_key = claims.get("iss")
    if not isinstance(server_key, str) or not is_public_key(server_key, nkeys.PREFIX_BYTE_SERVER):
        raise BadRequestError("iss is not a server public key")
    signature = _unb64(chunks[2], "signature")
    verify_key = nacl.signing.VerifyKey(_raw_public_key(server_key))
    try:
        verify_key.verify(f"{chunks[0]}.{chunks[1]}".encode("ascii"), signature)
    except (nacl.exceptions.BadSignatureError, ValueError) as exc:
        raise BadRequestError("bad signature") from exc
    if claims.get("aud") != _REQUEST_AUDIENCE:
        raise BadRequestError(f"aud is not {_REQUEST_AUDIENCE}")
    if claims.get("sub") != issuer_public:
        raise BadRequestError("sub is not this callout's issuer")
    exp = claims.get("exp")
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise BadRequestError("exp missing")
    if time.time() > exp:
        raise BadRequestError("request expired")
    return _request_fields(claims, server_key), float(exp)


def _request_fields(claims: dict[str, Any], server_key: str) -> AuthRequest:
    nats = claims.get("nats")
    if not isinstance(nats, dict):
        raise BadRequestError("nats claims missing")
    if nats.get("type") != "authorization_request" or nats.get("version") != 2:
        raise BadRequestError("not an authorization_request of version 2")
    user_nkey = nats.get("user_nkey")
    if not isinstance(user_nkey, str) or not is_public_key(user_nkey, nkeys.PREFIX_BYTE_USER):
        raise BadRequestError("user_nkey is not a user public key")
    server = _dict_field(nats, "server_id")
    if server.get("id") != server_key:
        raise BadRequestError("server_id.id is not the signing server")
    client = _dict_field(nats, "client_info")
    connect = _dict_field(nats, "connect_opts")
    client_id = client.get("id")
    if not isinstance(client_id, int) or isinstance(client_id, bool):
        client_id = None
    return AuthRequest(
        token=_str_field(connect, "auth_token"),
        user=_str_field(connect, "user"),
        password=_str_field(connect, "pass"),
        client_name=_str_field(connect, "name"),
        client_host=_str_field(client, "host"),
        client_id=client_id,
        user_nkey=user_nkey,
        server_id=server_key,
    )


def _dict_field(parent: dict[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise BadRequestError(f"{key} is not an object")
    return value


def _str_field(parent: dict[str, Any], key: str) -> str | None:
    value = parent.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequestError(f"{key} is not a string")
    return value


def _json_chunk(chunk: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64(chunk, what))
    except (ValueError, RecursionError) as exc:
        raise BadRequestError(f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} is not a JSON object")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_json(value: Mapping[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _unb64(chunk: str, what: str) -> bytes:
    # Strict like Go's RawURLEncoding: the URL alphabet, no padding.
    if not _B64URL.fullmatch(chunk) or len(chunk) % 4 == 1:
        raise BadRequestError(f"{what} is not unpadded base64url")
    try:
        return base64.urlsafe_b64decode(chunk + "=" * (-len(chunk) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError(f"{what} is not unpadded base64url") from exc


def _jti(claims: Mapping[str, Any]) -> str:
    """Return the JWT id as nats-io/jwt makes it: base32 sha512/256 of the standard claims."""
    order = ("aud", "exp", "iat", "iss", "name", "nbf", "sub")
    standard = {key: claims[key] for key in order if claims.get(key)}
    digest = hashlib.new("sha512_256", json.dumps(standard, separators=(",", ":")).encode())
    return base64.b32encode(digest.digest()).decode("ascii").rstrip("=")


def _raw_public_key(key: str) -> bytes:
    return base64.b32decode(key)[1:33]


def is_public_key(key: str, prefix: int) -> bool:
    """Return whether ``key`` is an nkey public key of role ``prefix`` with a valid checksum."""
    if not isinstance(key, str) or len(key) != _PUBLIC_KEY_CHARS:
        return False
    try:
        raw = base64.b32decode(key)
    except (binascii.Error, ValueError):
        return False
    checksum = int.from_bytes(raw[-2:], "little")
    return len(raw) == 35 and raw[0] == prefix and nkeys.crc16(raw[:-2]) == checksum
