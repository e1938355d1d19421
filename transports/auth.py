"""API keys and access tokens: Ed25519 keys, EdDSA JWTs, and the one copy of every check.

- An **API key** is a secret the user holds: ``mesa_`` + the base64url (unpadded)
  32-byte Ed25519 seed. Its **id** (``mk`` + 16 hex chars of the sha256 of the public
  key) and its public key are all a server stores, in a `KeyRecord` (org, name, scopes,
  repos, expiry, revoked): nothing a server holds can mint a token.
- A **token** is an EdDSA JWT signed locally from a key; its header's ``kid`` names the
  key. Claims: the org, the repos it grants with ``rw`` or ``ro`` (the repo ``*`` grants
  every repo of the org), the scopes (``read``, ``write``, ``admin``), ``iat``/``exp``
  in seconds, the mount id (``mid``), and ``dlg`` for a token handed to someone else
  (`mesa.tokens.create`), which never manages keys or tokens.
- `Keyring.verify` checks a token against the key records: the key is known, not
  revoked and not expired, the signature holds (only EdDSA is accepted), the token is
  not expired; then it **clamps** the grant to the key's current scopes and repos.
  Expiry is checked against the verifier's injected clock, never pyjwt's own, so tests
  and simulations control time.
"""

from __future__ import annotations

import binascii
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from transports.base import (
    InvalidNameError,
    PermissionDeniedError,
    TokenRejectedError,
    UnavailableError,
    validate_kv_key,
    validate_org,
    validate_repo,
)
from transports.keys import (
    ADMIN,
    ANY_ORG,
    KEY_PREFIX,
    READ,
    SCOPES,
    WRITE,
    KeyRecord,
    check_scopes,
    generate_key,
    is_api_key,
    key_id,
    key_id_of_public,
    private_key,
    public_key,
    unb64,
)

__all__ = [
    "ADMIN",
    "ALGORITHM",
    "ALL_REPOS",
    "ANY_ORG",
    "KEY_PREFIX",
    "READ",
    "READ_ONLY",
    "READ_WRITE",
    "SCOPES",
    "WRITE",
    "Claims",
    "KeyRecord",
    "Keyring",
    "authenticate",
    "authorize",
    "authorize_admin",
    "authorize_key",
    "authorize_new_key",
    "check",
    "check_scopes",
    "clamp",
    "generate_key",
    "is_api_key",
    "key_id",
    "key_id_of_public",
    "may_read_key",
    "public_key",
    "sign",
    "unverified_claims",
    "verify_signature",
]

ALGORITHM = "EdDSA"
ALL_REPOS = "*"
READ_WRITE = "rw"
READ_ONLY = "ro"
#: The longest token a verifier looks at, in characters.
MAX_TOKEN_CHARS = 16_384


@dataclass(frozen=True, slots=True)
class Claims:
    """What a token grants (after `Keyring.verify`, clamped to its key)."""

    org: str
    repos: dict[str, str]
    iat: int
    exp: int
    mount_id: str
    scopes: tuple[str, ...] = (READ, WRITE)
    delegated: bool = False
    key_id: str = field(default="", compare=False)

    def access(self, repo: str) -> str | None:
        """Return ``rw``, ``ro`` or None for ``repo``."""
        return self.repos.get(repo, self.repos.get(ALL_REPOS))


def sign(api_key: str, claims: Claims) -> str:
    """Sign ``claims`` with ``api_key`` (EdDSA, ``kid`` in the header)."""
    payload: dict[str, Any] = {
        "org": claims.org,
        "repos": dict(claims.repos),
        "scp": list(claims.scopes),
        "iat": claims.iat,
        "exp": claims.exp,
        "mid": claims.mount_id,
    }
    if claims.delegated:
        payload["dlg"] = True
    return jwt.encode(
        payload, private_key(api_key), algorithm=ALGORITHM, headers={"kid": key_id(api_key)}
    )


def unverified_claims(token: str) -> Claims:
    """Return a token's claims without checking its signature (the holder's own view).

    Raises:
        TokenRejectedError: it is not a token.
    """
    try:
        header = jwt.get_unverified_header(token)
        payload = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise TokenRejectedError(f"malformed token: {exc}") from exc
    return _claims_from(payload, str(header.get("kid", "")))


#: How many verified tokens a keyring remembers (a mount uses one token for its life).
VERIFIED_CACHE_SIZE = 1024


class Keyring:
    """The key records a server knows: verifying a token against them.

    Verifying a signature costs about as much as a JetStream round trip and a mount
    presents the same token on every call, so the signature check is remembered
    (bounded); the key's record (revoked, expiry, scopes, repos) and the token's expiry
    are checked on every call.
    """

    def __init__(self) -> None:
        self._records: dict[str, KeyRecord] = {}
        self._verified: OrderedDict[str, Claims] = OrderedDict()

    def add(self, api_key: str, org: str, **fields: Any) -> KeyRecord:
        """Accept tokens signed by ``api_key`` for ``org``; keeps only its public key."""
        record = KeyRecord.for_key(api_key, org if org == ANY_ORG else validate_org(org), **fields)
        self.put(record)
        return record

    def put(self, record: KeyRecord) -> None:
        """Store (or replace) a key record."""
        self._records[record.key_id] = record

    def forget(self, kid: str) -> None:
        """Drop the record of the key ``kid`` (its tokens are refused from now on)."""
        self._records.pop(kid, None)

    def get(self, kid: str) -> KeyRecord | None:
        """Return the record of the key ``kid``, or None."""
        return self._records.get(kid)

    def records(self) -> list[KeyRecord]:
        """Return every record."""
        return list(self._records.values())

    def org_of(self, api_key: str) -> str | None:
        """Return the org ``api_key`` is bound to, or None if unknown or not a key."""
        try:
            found = self._records.get(key_id(api_key))
        except ValueError:
            return None
        return found.org if found else None

    def __len__(self) -> int:
        return len(self._records)

    def verify(self, token: str, now_ms: int) -> Claims:
        """Return the clamped claims of a valid token, else raise `TokenRejectedError`."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise TokenRejectedError("malformed token")
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_signature(token)
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        record = self._records.get(claims.key_id)
        if record is None:
            raise TokenRejectedError("token signed by an unknown key")
        return clamp(claims, record, now_ms)

    def _verify_signature(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejectedError(f"malformed token: {exc}") from exc
        if header.get("alg") != ALGORITHM:
            raise TokenRejectedError(f"token algorithm {header.get('alg')!r} is not accepted")
        kid = str(header.get("kid", ""))
        record = self._records.get(kid)
        if record is None:
            raise TokenRejectedError("token signed by an unknown key")
        return verify_signature(token, record)


def verify_signature(token: str, record: KeyRecord) -> Claims:
    """Return the claims of ``token`` if ``record``'s key signed it (EdDSA only).

    Raises:
        TokenRejectedError: anything else.
    """
    try:
        if jwt.get_unverified_header(token).get("kid") != record.key_id:
            raise TokenRejectedError("token was not signed by this key")
        public = Ed25519PublicKey.from_public_bytes(unb64(record.public_key))
        payload = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_aud": False,
                "require": ["exp", "iat"],
            },
        )
    except (jwt.PyJWTError, ValueError, binascii.Error) as exc:
        raise TokenRejectedError(f"invalid token: {exc}") from exc
    if "aud" in payload:
        raise TokenRejectedError("token has an audience: it is not a mesa token")
    return _claims_from(payload, record.key_id)


def clamp(claims: Claims, record: KeyRecord, now_ms: int) -> Claims:
    """Return ``claims`` limited by the current ``record`` of its key.

    Raises:
        TokenRejectedError: the key is revoked or expired, its org differs, or the
            token expired.
    """
    if record.revoked:
        raise TokenRejectedError(f"key {record.key_id} is revoked")
    if record.expires_at is not None and now_ms >= record.expires_at * 1000:
        raise TokenRejectedError(f"key {record.key_id} expired")
    if record.org not in (ANY_ORG, claims.org):
        raise TokenRejectedError("token org does not match its signing key")
    if now_ms >= claims.exp * 1000:
        raise TokenRejectedError("token expired")
    scopes = tuple(s for s in claims.scopes if s in record.scopes)
    repos: dict[str, str] = {}
    if READ in scopes or WRITE in scopes:
        for repo, access in claims.repos.items():
            names = [repo] if repo != ALL_REPOS or record.repos is None else list(record.repos)
            for name in names:
                if record.repos is not None and name not in record.repos:
                    continue
                repos[name] = access if WRITE in scopes else READ_ONLY
    return replace(claims, repos=repos, scopes=scopes)


def _claims_from(payload: dict[str, Any], kid: str) -> Claims:
    repos = payload.get("repos")
    if not isinstance(repos, dict) or not all(
        isinstance(k, str) and v in (READ_WRITE, READ_ONLY) for k, v in repos.items()
    ):
        raise TokenRejectedError("token has no valid repo grants")
    try:
        return Claims(
            org=str(payload["org"]),
            repos=dict(repos),
            iat=int(payload["iat"]),
            exp=int(payload["exp"]),
            mount_id=str(payload.get("mid", "")),
            scopes=check_scopes(payload.get("scp", [READ, WRITE])),
            delegated=bool(payload.get("dlg", False)),
            key_id=kid,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenRejectedError(f"token claims are malformed: {exc}") from exc


def check_admin(claims: Claims, org: str) -> None:
    """Raise `PermissionDeniedError` unless ``claims`` may manage the keys of ``org``."""
    if claims.delegated:
        raise PermissionDeniedError("a token cannot manage keys or tokens")
    if ADMIN not in claims.scopes:
        raise PermissionDeniedError("managing keys needs an admin key")
    if claims.org != org:
        raise PermissionDeniedError(f"token is for org {claims.org!r}, not {org!r}")


def check_new_key(claims: Claims, signer: KeyRecord, record: KeyRecord) -> None:
    """Raise unless an admin holding ``signer`` may create ``record`` (never more than it has)."""
    check_admin(claims, record.org)
    if not set(record.scopes) <= set(signer.scopes):
        raise PermissionDeniedError("a new key cannot have scopes its creator lacks")
    if signer.repos is not None and (
        record.repos is None or not set(record.repos) <= set(signer.repos)
    ):
        raise PermissionDeniedError("a new key cannot reach repos its creator cannot")


def check(claims: Claims, org: str, repo: str, *, write: bool) -> None:
    """Raise `PermissionDeniedError` unless ``claims`` grant ``repo`` (for writing if ``write``)."""
    if claims.org != org:
        raise PermissionDeniedError(f"token is for org {claims.org!r}, not {org!r}")
    access = claims.access(repo)
    if access is None:
        raise PermissionDeniedError(f"token does not grant repo {org}/{repo}")
    if write and access != READ_WRITE:
        raise PermissionDeniedError(f"token grants {org}/{repo} read-only")


def key_scope(key: str) -> tuple[str, str]:
    """Return the (org, repo) a KV key belongs to: its first two tokens, validated."""
    parts = key.split(".")
    if len(parts) < 2:
        raise InvalidNameError(f"KV key {key!r} does not start with <org>.<repo>")
    return validate_org(parts[0]), validate_repo(parts[1])


def authenticate(keyring: Keyring, now_ms: int, token: str, *, closed: bool = False) -> Claims:
    """Check a call that names no repo (a KV key listing) and return the token's claims.

    Whether the transport is closed first, then the token; `authorize` checks the same
    way after the names, and the grant after the token.

    Raises:
        UnavailableError, TokenRejectedError: in that order of checks.
    """
    if closed:
        raise UnavailableError("the transport is closed")
    return keyring.verify(token, now_ms)


def may_read_key(claims: Claims, key: str) -> bool:
    """Return whether ``claims`` grant reading the repo of the KV key ``key``.

    A listing leaves out the keys this is False for instead of refusing the call. A key
    that does not start with a valid ``<org>.<repo>`` is not readable.
    """
    try:
        check(claims, *key_scope(key), write=False)
    except (InvalidNameError, PermissionDeniedError):
        return False
    return True


def authorize(
    keyring: Keyring,
    now_ms: int,
    token: str,
    org: str,
    repo: str,
    *,
    write: bool,
    closed: bool = False,
) -> Claims:
    """Check a call the way every transport must, in this order, and return the claims.

    Names first (an invalid name is the caller's bug whatever the token says), then
    whether the transport is closed, then the token, then the grant.

    Raises:
        InvalidNameError, UnavailableError, TokenRejectedError, PermissionDeniedError:
            in that order of checks.
    """
    validate_org(org)
    validate_repo(repo)
    claims = authenticate(keyring, now_ms, token, closed=closed)
    check(claims, org, repo, write=write)
    return claims


def authorize_key(
    keyring: Keyring, now_ms: int, token: str, key: str, *, write: bool, closed: bool = False
) -> Claims:
    """`authorize` for a KV key, whose first two tokens name the org and the repo."""
    validate_kv_key(key)
    org, repo = key_scope(key)
    return authorize(keyring, now_ms, token, org, repo, write=write, closed=closed)


def authorize_new_key(
    keyring: Keyring, now_ms: int, token: str, record: KeyRecord, *, closed: bool = False
) -> None:
    """Check that ``token`` may create ``record`` (an admin key, never more than it has).

    Raises:
        UnavailableError, TokenRejectedError, PermissionDeniedError: in that order.
        ValueError: a key with that id exists already.
    """
    claims = authenticate(keyring, now_ms, token, closed=closed)
    signer = keyring.get(claims.key_id)
    if signer is None:  # verify found it a moment ago
        raise TokenRejectedError("token signed by an unknown key")
    check_new_key(claims, signer, record)
    if keyring.get(record.key_id) is not None:
        raise ValueError(f"key {record.key_id} exists already")


def authorize_admin(
    keyring: Keyring, now_ms: int, token: str, org: str, *, closed: bool = False
) -> Claims:
    """Check that ``token`` may list and revoke the keys of ``org``.

    Raises:
        UnavailableError, TokenRejectedError, PermissionDeniedError: in that order.
    """
    claims = authenticate(keyring, now_ms, token, closed=closed)
    check_admin(claims, validate_org(org))
    return claims
