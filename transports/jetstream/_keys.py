"""API key records in the KV: ``_keys.<key id>`` in `KEYS_BUCKET`.

Invariants:

- Key records are reached only through this module, never through ``kv_get``/``kv_put``
  (their keys start with ``_``, which no org does, so no token's grant names them).
- A verifier re-reads the record of a key it sees a token of at most every
  `KEY_REFRESH_S` seconds: a revocation or an expiry reaches it within that time
  (while the server is unreachable nothing is granted anyway; a known record is kept).
- A key seeded into the keyring before connecting (the local server's admin key) stays
  known without a record, unless the KV holds one for it (which then decides).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Final

import jwt

from transports.auth import (
    MAX_TOKEN_CHARS,
    KeyRecord,
    Keyring,
    authorize_admin,
    authorize_new_key,
)
from transports.base import Clock, MissingError, RevisionMismatchError, UnavailableError
from transports.jetstream._kv import _Kv
from transports.jetstream._names import (
    KEY_ID_RE,
    KEY_RECORDS_FILTER,
    KEYS_BUCKET,
    key_record_key,
)

#: How often a transport re-reads the record of a key it verifies tokens of (seconds).
KEY_REFRESH_S: Final = 1.0
_MAX_REMEMBERED: Final = 4096


class _Keys:
    """The key records of a deployment, and a keyring kept up to date from them."""

    def __init__(self, kv: _Kv, keyring: Keyring, clock: Clock, closed: Callable[[], bool]) -> None:
        self._kv = kv
        self._keyring = keyring
        self._clock = clock
        self._closed = closed
        self._seeded = {record.key_id for record in keyring.records()}
        self._fetched: dict[str, float] = {}

    async def refresh(self, token: str) -> None:
        """Bring the record of the key that signed ``token`` up to date (see invariants)."""
        if self._closed() or not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return
        try:
            kid = str(jwt.get_unverified_header(token).get("kid", ""))
        except jwt.PyJWTError:
            return  # the verifier says why
        await self.refresh_id(kid)

    async def refresh_id(self, kid: str, *, force: bool = False) -> None:
        """Bring the record of the key ``kid`` up to date (``force``: even if read just now)."""
        if not KEY_ID_RE.match(kid):
            return
        now = time.monotonic()
        if not force and now - self._fetched.get(kid, -KEY_REFRESH_S) < KEY_REFRESH_S:
            return
        try:
            entry = await self._kv.get(key_record_key(kid))
        except UnavailableError:
            if self._keyring.get(kid) is None:
                raise
            # Unreachable: the call itself waits for the reconnect or fails as usual; the
            # record known is re-read on the next call after it.
            return
        if len(self._fetched) > _MAX_REMEMBERED:
            self._fetched.clear()
        self._fetched[kid] = now
        if entry is not None:
            try:
                self._keyring.put(KeyRecord.decode(entry.value))
            except ValueError:
                self._keyring.forget(kid)  # a record nobody can parse grants nothing
            return
        if kid not in self._seeded:
            self._keyring.forget(kid)

    async def put(self, record: KeyRecord, max_payload_bytes: int, *, create: bool) -> None:
        """Store ``record`` (``create``: only if its id is new, else `ValueError`)."""
        try:
            await self._kv.put(
                key_record_key(record.key_id),
                record.encode(),
                0 if create else None,
                max_payload_bytes=max_payload_bytes,
            )
        except RevisionMismatchError:
            raise ValueError(f"key {record.key_id} exists already") from None
        self._keyring.put(record)

    async def create(self, token: str, record: KeyRecord, max_payload_bytes: int) -> None:
        """Register a new key's record if ``token`` may (`transports.auth.authorize_new_key`)."""
        await self.refresh(token)
        now_ms = self._clock.now_ms()
        authorize_new_key(self._keyring, now_ms, token, record, closed=self._closed())
        await self.put(record, max_payload_bytes, create=True)

    async def list(self, token: str, org: str) -> list[KeyRecord]:
        """Return the records of ``org``'s keys, oldest first (an admin's token only)."""
        await self.refresh(token)
        authorize_admin(self._keyring, self._clock.now_ms(), token, org, closed=self._closed())
        records: list[KeyRecord] = []
        for key in await self._kv.live_keys(KEYS_BUCKET, KEY_RECORDS_FILTER):
            entry = await self._kv.get(key)
            if entry is None:
                continue
            try:
                record = KeyRecord.decode(entry.value)
            except ValueError:
                continue
            if record.org == org:
                records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.key_id))

    async def revoke(self, token: str, org: str, key_id: str, max_payload_bytes: int) -> None:
        """Mark the key ``key_id`` of ``org`` revoked (`MissingError` if it has none)."""
        await self.refresh(token)
        authorize_admin(self._keyring, self._clock.now_ms(), token, org, closed=self._closed())
        entry = await self._kv.get(key_record_key(key_id)) if KEY_ID_RE.match(key_id) else None
        try:
            record = None if entry is None else KeyRecord.decode(entry.value)
        except ValueError:
            record = None
        if entry is None or record is None or record.org != org:
            raise MissingError(f"no key {key_id!r} in org {org!r}")
        revoked = replace(record, revoked=True)
        await self._kv.put(
            key_record_key(key_id),
            revoked.encode(),
            entry.revision,
            max_payload_bytes=max_payload_bytes,
        )
        self._keyring.put(revoked)
