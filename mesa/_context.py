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
from transports.auth import ALL_REPOS, READ_WRITE, Claims, sign
from transports.base import Clock

#: Lifetime of the tokens a client signs for repo and record management.
MANAGEMENT_TOKEN_TTL_S = 300


@dataclass(frozen=True)
class Context:
    """One org's view of a deployment (see module docstring).

    Attributes:
        org: the organization slug.
        gateway: where logs, blobs and records live; failures are public errors.
        clock: wall clock for token times and record timestamps.
        api_key: the secret tokens are signed with (never shown in reprs).
        snapshot_every: a mount stores a snapshot of a change each time its log grows
            by this many entries; None never.
    """

    org: str
    gateway: Gateway
    clock: Clock
    api_key: str = field(repr=False)
    snapshot_every: int | None

    def sign_token(self, repos: dict[str, str], ttl_s: int, mount_id: str) -> tuple[str, Claims]:
        """Sign a token granting ``repos`` for ``ttl_s`` seconds from now."""
        iat = self.clock.now_ms() // 1000
        claims = Claims(org=self.org, repos=repos, iat=iat, exp=iat + ttl_s, mount_id=mount_id)
        return sign(self.api_key, claims), claims

    def management_token(self) -> str:
        """Return a short-lived token for repo and record management."""
        return self.sign_token({ALL_REPOS: READ_WRITE}, MANAGEMENT_TOKEN_TTL_S, "client")[0]

    def new_change_id(self) -> str:
        """Return a fresh random change id."""
        return change_id_from_bytes(secrets.token_bytes(16))
