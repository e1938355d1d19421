"""``mesa.api_keys`` and ``mesa.tokens``: API keys the server knows, tokens for sandboxes.

- ``await mesa.api_keys.create(...)`` makes a new Ed25519 key locally and registers
  only its public half (a `transports.keys.KeyRecord`) with the server; the returned
  `ApiKey` carries the secret ``key`` once. Creating, listing and revoking keys needs a
  client holding an admin API key; a new key never gets scopes or repos its creator
  lacks.
- ``mesa.tokens.create(...)`` signs a short-lived token from the client's key locally,
  with no network. A token is accepted wherever a key is (``Mesa(api_key=TOKEN)``),
  is clamped by the server to its key's current scopes and repos, and cannot create
  keys or tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from mesa._context import Context
from mesa.errors import AuthorizationError, InvalidOptionsError
from transports.auth import (
    READ,
    READ_ONLY,
    READ_WRITE,
    SCOPES,
    WRITE,
    KeyRecord,
    check_scopes,
    generate_key,
)
from transports.base import InvalidNameError, validate_repo

#: A token's lifetime when none is given, and the bounds (seconds).
DEFAULT_TOKEN_TTL_S = 3600
MAX_TOKEN_TTL_S = 86_400


@dataclass(frozen=True)
class ApiKey:
    """An API key as `ApiKeys` returns it; ``key`` is the secret, only from ``create``."""

    id: str
    name: str
    scopes: list[str]
    repos: list[str] | None
    expires_at: int | None
    created_at: int
    revoked: bool = False
    key: str | None = None

    def __repr__(self) -> str:
        shown = "<secret>" if self.key else None
        return (
            f"ApiKey(id={self.id!r}, name={self.name!r}, scopes={self.scopes!r}, "
            f"repos={self.repos!r}, expires_at={self.expires_at!r}, revoked={self.revoked!r}, "
            f"key={shown})"
        )


@dataclass(frozen=True)
class Token:
    """A token from `Tokens.create`: give ``token`` to a sandbox as its API key."""

    token: str
    expires_at: int
    scopes: list[str]
    repos: list[str]

    def __repr__(self) -> str:
        return (
            f"Token(expires_at={self.expires_at!r}, scopes={self.scopes!r}, "
            f"repos={self.repos!r}, token=<secret>)"
        )


def _scopes(scopes: Sequence[str], allowed: tuple[str, ...]) -> tuple[str, ...]:
    if not isinstance(scopes, str | Sequence):
        raise InvalidOptionsError(
            f"scopes must be a list of scope names, not {type(scopes).__name__}"
        )
    try:
        found = check_scopes(list(scopes) if not isinstance(scopes, str) else scopes)
    except (ValueError, TypeError) as exc:  # TypeError: an unhashable item
        raise InvalidOptionsError(f"invalid scopes {scopes!r}: {exc}") from exc
    extra = [s for s in found if s not in allowed]
    if extra:
        raise InvalidOptionsError(f"scopes {extra} are not allowed here (only {list(allowed)})")
    return found


def _repos(repos: Sequence[str] | None, *, required: bool) -> tuple[str, ...] | None:
    if repos is None:
        if required:
            raise InvalidOptionsError("repos must be a non-empty list of repo names")
        return None
    if isinstance(repos, str | bytes) or not isinstance(repos, Sequence) or not repos:
        raise InvalidOptionsError("repos must be a non-empty list of repo names")
    names: list[str] = []
    for repo in repos:
        try:
            names.append(validate_repo(repo))
        except (InvalidNameError, TypeError) as exc:
            raise InvalidOptionsError(f"invalid repo name {repo!r}") from exc
    return tuple(dict.fromkeys(names))


def _public(record: KeyRecord, key: str | None = None) -> ApiKey:
    return ApiKey(
        id=record.key_id,
        name=record.name,
        scopes=list(record.scopes),
        repos=None if record.repos is None else list(record.repos),
        expires_at=record.expires_at,
        created_at=record.created_at,
        revoked=record.revoked,
        key=key,
    )


class ApiKeys:
    """``mesa.api_keys``: create, list and revoke the org's API keys (an admin key's job)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    async def create(
        self,
        name: str | None = None,
        scopes: Sequence[str] = (READ, WRITE),
        repos: Sequence[str] | None = None,
        expires_in_seconds: int | None = None,
    ) -> ApiKey:
        """Create a key of this org; the returned ``.key`` is the only copy of the secret.

        Raises:
            InvalidOptionsError: bad scopes, repos, name or expiry.
            AuthorizationError: the client's key is not an admin key, is a token, or
                lacks the scopes or repos asked for.
            AuthenticationError: the client's key is unknown, revoked or expired.
        """
        chosen = _scopes(scopes, SCOPES)
        names = _repos(repos, required=False)
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise InvalidOptionsError("name must be a string of at most 200 characters")
        if expires_in_seconds is not None and (
            isinstance(expires_in_seconds, bool)
            or not isinstance(expires_in_seconds, int)
            or expires_in_seconds < 1
        ):
            raise InvalidOptionsError("expires_in_seconds must be a positive int or None")
        if self._ctx.holds_token:
            raise AuthorizationError("a token cannot create keys")
        now = self._ctx.clock.now_ms() // 1000
        secret = generate_key()
        record = KeyRecord.for_key(
            secret,
            self._ctx.org,
            scopes=chosen,
            repos=names,
            name=name or "",
            expires_at=None if expires_in_seconds is None else now + expires_in_seconds,
            created_at=now,
        )
        await self._ctx.gateway.put_key(self._ctx.management_token(), record)
        return _public(record, secret)

    async def list(self) -> list[ApiKey]:
        """Return the org's keys (revoked ones too), without their secrets."""
        if self._ctx.holds_token:
            raise AuthorizationError("a token cannot list keys")
        token = self._ctx.management_token()
        return [_public(r) for r in await self._ctx.gateway.list_keys(token, self._ctx.org)]

    async def revoke(self, key_id: str) -> None:
        """Revoke a key: its tokens are refused from now on.

        Raises:
            NotFoundError: the org has no such key.
        """
        if not isinstance(key_id, str) or not key_id:
            raise InvalidOptionsError("key_id must be a non-empty string")
        if self._ctx.holds_token:
            raise AuthorizationError("a token cannot revoke keys")
        token = self._ctx.management_token()
        await self._ctx.gateway.revoke_key(token, self._ctx.org, key_id)


class Tokens:
    """``mesa.tokens``: short-lived tokens for sandboxes, signed locally."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def create(
        self,
        repos: Sequence[str],
        scopes: Sequence[str] = (READ, WRITE),
        ttl_seconds: int = DEFAULT_TOKEN_TTL_S,
    ) -> Token:
        """Sign a token for ``repos`` (``read``: read-only; with ``write``: read-write).

        No network: the server verifies it on use and clamps it to the key's current
        scopes and repos.

        Raises:
            InvalidOptionsError: bad repos or scopes, or ``ttl_seconds`` outside 1..86400.
            AuthorizationError: the client holds a token, not an API key.
        """
        names = _repos(repos, required=True)
        assert names is not None
        chosen = _scopes(scopes, (READ, WRITE))
        if (
            isinstance(ttl_seconds, bool)
            or not isinstance(ttl_seconds, int)
            or not 1 <= ttl_seconds <= MAX_TOKEN_TTL_S
        ):
            raise InvalidOptionsError(
                f"ttl_seconds must be an int in 1..{MAX_TOKEN_TTL_S}, not {ttl_seconds!r}"
            )
        if self._ctx.holds_token:
            raise AuthorizationError("a token cannot create tokens")
        access = READ_WRITE if WRITE in chosen else READ_ONLY
        token, claims = self._ctx.sign_token(
            dict.fromkeys(names, access),
            ttl_seconds,
            "t" + secrets.token_hex(8),
            scopes=chosen,
            delegated=True,
        )
        return Token(token, claims.exp, list(chosen), list(names))
