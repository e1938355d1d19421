"""Access tokens: HS256 JWTs signed from an org's API key, verified on every call.

A token names its org, the repos it grants with ``rw`` or ``ro`` (the repo ``*``
grants every repo of the org: management tokens), ``iat``/``exp`` in seconds and
the mount id (``mid``). The JWT header carries ``kid``, a hash of the API key, so a
server holding several keys knows which one to verify with. Expiry is checked
against the verifier's injected clock, never pyjwt's own, so tests and simulations
control time.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from transports.base import (
    InvalidNameError,
    PermissionDeniedError,
    TokenRejectedError,
    UnavailableError,
    validate_kv_key,
    validate_org,
    validate_repo,
)

ALGORITHM = "HS256"
ALL_REPOS = "*"
READ_WRITE = "rw"
READ_ONLY = "ro"
#: Bind an API key to this to accept it for every org (the local server's admin key).
ANY_ORG = "*"


def key_id(api_key: str) -> str:
    """Return the public id of an API key: the first 16 hex chars of its sha256."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Claims:
    """What a token grants."""

    org: str
    repos: dict[str, str]
    iat: int
    exp: int
    mount_id: str

    def access(self, repo: str) -> str | None:
        """Return ``rw``, ``ro`` or None for ``repo``."""
        return self.repos.get(repo, self.repos.get(ALL_REPOS))


def sign(api_key: str, claims: Claims) -> str:
    """Sign ``claims`` with ``api_key`` (HS256)."""
    payload: dict[str, Any] = {
        "org": claims.org,
        "repos": dict(claims.repos),
        "iat": claims.iat,
        "exp": claims.exp,
        "mid": claims.mount_id,
    }
    return jwt.encode(payload, api_key, algorithm=ALGORITHM, headers={"kid": key_id(api_key)})


#: How many verified tokens a keyring remembers (a mount uses one token for its life).
VERIFIED_CACHE_SIZE = 1024


class Keyring:
    """The API keys a server accepts, each bound to one org.

    Verifying an HS256 token costs about as much as a JetStream round trip, and a
    mount presents the same token on every call, so verified claims are remembered
    (bounded); expiry is still checked against the clock on every call.
    """

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, str]] = {}
        self._verified: OrderedDict[str, Claims] = OrderedDict()

    def add(self, api_key: str, org: str) -> None:
        """Accept tokens signed by ``api_key`` for ``org``."""
        if not api_key:
            raise ValueError("an API key must be non-empty")
        self._keys[key_id(api_key)] = (api_key, org if org == ANY_ORG else validate_org(org))
        self._verified.clear()

    def org_of(self, api_key: str) -> str | None:
        """Return the org ``api_key`` is bound to, or None if unknown."""
        found = self._keys.get(key_id(api_key))
        return found[1] if found and found[0] == api_key else None

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, token: str, now_ms: int) -> Claims:
        """Return the claims of a valid, unexpired token, else raise `TokenRejectedError`."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify_signature(token)
            self._verified[token] = claims
            if len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
        if now_ms >= claims.exp * 1000:
            raise TokenRejectedError("token expired")
        return claims

    def _verify_signature(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenRejectedError(f"malformed token: {exc}") from exc
        found = self._keys.get(str(header.get("kid", "")))
        if found is None:
            raise TokenRejectedError("token signed by an unknown key")
        api_key, org = found
        try:
            payload = jwt.decode(
                token,
                api_key,
                algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenRejectedError(f"invalid token: {exc}") from exc
        claims = _claims_from(payload)
        if org not in (ANY_ORG, claims.org):
            raise TokenRejectedError("token org does not match its signing key")
        return claims


def _claims_from(payload: dict[str, Any]) -> Claims:
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
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenRejectedError(f"token claims are malformed: {exc}") from exc


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
