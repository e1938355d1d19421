"""Key management and repo deletion: done here when trusted, asked of the service when not.

A trusted transport (NATS credentials) checks the token with its keyring and acts with
its own connection; a token-mode transport sends the request to the service
(`transports.jetstream._control`), which makes the same checks with the same functions
of `transports.auth`.
"""

from __future__ import annotations

from transports.auth import KeyRecord, Keyring, authorize_admin
from transports.base import Clock, validate_org, validate_repo
from transports.jetstream._connection import _Connection
from transports.jetstream._control import call
from transports.jetstream._keys import _Keys
from transports.jetstream._provision import delete_repo_storage
from transports.jetstream._session import _TokenSessions


class _Admin:
    """The management calls of one transport (module docstring)."""

    def __init__(
        self,
        conn: _Connection,
        keys: _Keys,
        keyring: Keyring,
        clock: Clock,
        tokens: _TokenSessions | None,
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._keyring = keyring
        self._clock = clock
        self._tokens = tokens

    async def put_key(self, token: str, record: KeyRecord, max_payload_bytes: int) -> None:
        """Register a new key's record if ``token`` may (`Transport.put_key`)."""
        if self._tokens is not None:
            session = await self._tokens.get(token)
            await call(session.conn, "put_key", token, record=record.encode().decode())
            return
        await self._keys.create(token, record, max_payload_bytes)

    async def list_keys(self, token: str, org: str) -> list[KeyRecord]:
        """Return the records of ``org``'s keys (`Transport.list_keys`)."""
        if self._tokens is not None:
            session = await self._tokens.get(token)
            raws = await call(session.conn, "list_keys", token, org=org)
            return [KeyRecord.decode(str(raw).encode()) for raw in raws]
        return await self._keys.list(token, org)

    async def revoke_key(self, token: str, org: str, key_id: str, max_payload_bytes: int) -> None:
        """Revoke the key ``key_id`` of ``org`` (`Transport.revoke_key`)."""
        if self._tokens is not None:
            session = await self._tokens.get(token)
            await call(session.conn, "revoke_key", token, org=org, key_id=key_id)
            return
        await self._keys.revoke(token, org, key_id, max_payload_bytes)

    async def delete_repo_storage(self, token: str, org: str, repo: str) -> None:
        """Delete the log stream, KV bucket and blob store of ``org/repo`` (an admin's token).

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token is not an admin's of the org.
            UnavailableError: the server did not answer in time.
        """
        validate_org(org)
        validate_repo(repo)
        if self._tokens is not None:
            session = await self._tokens.get(token)
            await call(session.conn, "delete_repo", token, org=org, repo=repo)
            return
        await self._keys.refresh(token)
        now, closed = self._clock.now_ms(), self._conn.closed
        authorize_admin(self._keyring, now, token, org, closed=closed)
        await self._conn.ready(f"delete {org}/{repo}")
        await delete_repo_storage(self._conn, org, repo)
