"""API keys: the secret a user holds, its id, and the record a server stores of it.

An API key is ``mesa_`` + the base64url (unpadded) 32-byte Ed25519 seed. Its id is
``mk`` + 16 hex chars of the sha256 of the public key. A `KeyRecord` holds the public
key and what the key may do; nothing in it can sign a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

#: A key record of this org accepts tokens of every org (the local server's admin key).
ANY_ORG = "*"
#: The prefix of every API key.
KEY_PREFIX = "mesa_"
READ, WRITE, ADMIN = "read", "write", "admin"
SCOPES = (READ, WRITE, ADMIN)


def b64(data: bytes) -> str:
    """Return unpadded base64url text of ``data``."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    """Decode unpadded base64url ``text``."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> str:
    """Return a new API key (a secret: show it once)."""
    return KEY_PREFIX + b64(secrets.token_bytes(32))


def is_api_key(credential: str) -> bool:
    """Return whether ``credential`` looks like an API key (else it may be a token)."""
    return credential.startswith(KEY_PREFIX)


def private_key(api_key: str) -> Ed25519PrivateKey:
    """Return the signing key of ``api_key``; `ValueError` if it is not an API key."""
    if not isinstance(api_key, str) or not api_key.startswith(KEY_PREFIX):
        raise ValueError("an API key starts with 'mesa_'")
    try:
        seed = unb64(api_key[len(KEY_PREFIX) :])
    except (binascii.Error, ValueError) as exc:
        raise ValueError("an API key is 'mesa_' + base64url of 32 bytes") from exc
    if len(seed) != 32:
        raise ValueError("an API key is 'mesa_' + base64url of 32 bytes")
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key(api_key: str) -> str:
    """Return the base64url raw public key of ``api_key``."""
    raw = private_key(api_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return b64(raw)


def key_id_of_public(public: str) -> str:
    """Return the id of the key whose public key is ``public`` (base64url)."""
    return "mk" + hashlib.sha256(unb64(public)).hexdigest()[:16]


def key_id(api_key: str) -> str:
    """Return the public id of an API key."""
    return key_id_of_public(public_key(api_key))


def check_scopes(scopes: Any) -> tuple[str, ...]:
    """Return ``scopes`` as a sorted tuple, or raise `ValueError`."""
    if isinstance(scopes, str) or not isinstance(scopes, list | tuple | set | frozenset):
        raise ValueError("scopes must be a list of 'read', 'write', 'admin'")
    found = set(scopes)
    if not found or not found <= set(SCOPES):
        raise ValueError(f"scopes must be a non-empty subset of {list(SCOPES)}, not {scopes!r}")
    return tuple(s for s in SCOPES if s in found)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What a server stores of an API key: never the secret.

    Attributes:
        key_id: derived from the public key.
        org: the org its tokens are for (`ANY_ORG`: every org).
        public_key: base64url raw Ed25519 public key.
        scopes: a sorted subset of `SCOPES`.
        repos: the repos its tokens may reach, or None for every repo of the org.
        name: a label.
        expires_at: seconds since the epoch after which it is refused, or None.
        created_at: seconds since the epoch.
        revoked: refused from the moment this is set.
    """

    key_id: str
    org: str
    public_key: str
    scopes: tuple[str, ...] = SCOPES
    repos: tuple[str, ...] | None = None
    name: str = ""
    expires_at: int | None = None
    created_at: int = 0
    revoked: bool = False

    @classmethod
    def for_key(cls, api_key: str, org: str, **fields: Any) -> KeyRecord:
        """Return the record of ``api_key`` (the secret is not kept)."""
        public = public_key(api_key)
        return cls(key_id_of_public(public), org, public, **fields)

    def encode(self) -> bytes:
        """Return the record as JSON bytes."""
        return json.dumps(
            {
                "id": self.key_id,
                "org": self.org,
                "pub": self.public_key,
                "scopes": list(self.scopes),
                "repos": None if self.repos is None else list(self.repos),
                "name": self.name,
                "exp": self.expires_at,
                "created": self.created_at,
                "revoked": self.revoked,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> KeyRecord:
        """Parse `encode`'s output; `ValueError` if it is not a record."""
        try:
            data = json.loads(raw)
            repos = data["repos"]
            record = cls(
                key_id=str(data["id"]),
                org=str(data["org"]),
                public_key=str(data["pub"]),
                scopes=check_scopes(data["scopes"]),
                repos=None if repos is None else tuple(str(r) for r in repos),
                name=str(data.get("name", "")),
                expires_at=None if data.get("exp") is None else int(data["exp"]),
                created_at=int(data.get("created", 0)),
                revoked=bool(data.get("revoked", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a key record: {exc}") from exc
        if key_id_of_public(record.public_key) != record.key_id:
            raise ValueError("a key record's id does not match its public key")
        return record
