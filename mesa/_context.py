"""The narrow context every SDK service below the facades works with.

A `Context` is what a service needs of a client, and nothing more: the org, the
transport behind its `mesa._gateway.Gateway`, the clock, how to sign tokens, and the
snapshot cadence. The `Mesa` client builds one and hands it down; nothing below the
facades sees the client itself, so no module below `mesa._client` imports it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from engine.ids import change_id_from_bytes
from mesa._gateway import Gateway
from mesa.errors import AuthenticationError
from transports.auth import (
    ALL_REPOS,
    READ,
    READ_WRITE,
    SCOPES,
    WRITE,
    Claims,
    is_api_key,
    sign,
    unverified_claims,
)
from transports.base import Clock, TransportError

#: Lifetime of the tokens a client signs for repo and record management.
MANAGEMENT_TOKEN_TTL_S = 300


@dataclass(frozen=True)
class Context:
    """One org's view of a deployment (see module docstring).

    Attributes:
        org: the organization slug.
        gateway: where logs, blobs and records live; failures are public errors.
        clock: wall clock for token times and record timestamps.
        api_key: the secret tokens are signed with (never shown in reprs), or a token
            (`mesa.tokens.create`) the client presents as it is.
        snapshot_every: a mount stores a snapshot of a change each time its log grows
            by this many entries; None never.
    """

    org: str
    gateway: Gateway
    clock: Clock
    api_key: str = field(repr=False)
    snapshot_every: int | None
    # The management token in use and when (ms) to sign the next one.
    _management: list[tuple[str, int]] = field(
        default_factory=list, repr=False, compare=False, hash=False
    )

    @property
    def holds_token(self) -> bool:
        """Whether the client was given a token instead of an API key."""
        return not is_api_key(self.api_key)

    def given_claims(self) -> Claims:
        """Return what the client's token says it grants (not verified: the server does).

        Raises:
            AuthenticationError: the credential is neither an API key nor a token.
        """
        try:
            return unverified_claims(self.api_key)
        except TransportError as exc:
            raise AuthenticationError(
                "the credential is neither an API key (mesa_...) nor a token"
            ) from exc

    def sign_token(
        self,
        repos: dict[str, str],
        ttl_s: int,
        mount_id: str,
        *,
        scopes: tuple[str, ...] = (READ, WRITE),
        delegated: bool = False,
    ) -> tuple[str, Claims]:
        """Sign a token granting ``repos`` for ``ttl_s`` seconds from now.

        A client holding a token returns that token and what it says it grants.

        Raises:
            AuthenticationError: the credential is malformed.
        """
        if self.holds_token:
            return self.api_key, self.given_claims()
        iat = self.clock.now_ms() // 1000
        claims = Claims(
            org=self.org,
            repos=repos,
            iat=iat,
            exp=iat + ttl_s,
            mount_id=mount_id,
            scopes=scopes,
            delegated=delegated,
        )
        try:
            return sign(self.api_key, claims), claims
        except ValueError as exc:
            raise AuthenticationError(f"malformed API key: {exc}") from exc

    def management_token(self) -> str:
        """Return a short-lived token for repo, record and key management.

        It asks for every scope; the server clamps it to what the key has. One token
        serves until half its lifetime has passed (a token-mode transport opens one
        connection per token, so signing one per call would open one per call).
        """
        now = self.clock.now_ms()
        if self._management and now < self._management[0][1]:
            return self._management[0][0]
        token = self.sign_token(
            {ALL_REPOS: READ_WRITE}, MANAGEMENT_TOKEN_TTL_S, "client", scopes=SCOPES
        )[0]
        self._management[:] = [(token, now + MANAGEMENT_TOKEN_TTL_S * 500)]
        return token

    def new_change_id(self) -> str:
        """Return a fresh random change id."""
        return change_id_from_bytes(secrets.token_bytes(16))
