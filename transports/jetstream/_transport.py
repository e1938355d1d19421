"""`JetStreamTransport`: the `Transport` facade that checks every call and delegates it.

Invariants:

- Every call is checked before anything is sent (names, then whether the transport is
  closed, then the token, then the grant), exactly like `transports.memory`: trusted,
  with `transports.auth` and the key records (`_keys`: a key's record read once a
  second at most); in token mode, against what the service says the token grants
  (`_session`), while the server enforces it anyway.
- The injected clock only decides token expiry; entry times come from the server.
- An authorized call made while the connection is down waits for the reconnect at
  most the request timeout, then raises `UnavailableError` having sent nothing.
- The work is done per session (`_session`: a connection and its `_Log`, `_Blobs`,
  `_Kv`); management calls by `_admin`. This module holds no I/O of its own.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Final

from transports.auth import (
    KeyRecord,
    Keyring,
    authenticate,
    authorize,
    key_scope,
)
from transports.base import (
    MAX_BLOB_BYTES,
    Appended,
    Buffer,
    ByteChunks,
    Clock,
    KvEntry,
    LogId,
    MissingError,
    SystemClock,
    validate_kv_key,
    validate_org,
    validate_repo,
)
from transports.jetstream._admin import _Admin
from transports.jetstream._keys import _Keys
from transports.jetstream._names import HEADER_RESERVE, log_subject
from transports.jetstream._session import _Session, _TokenSessions
from transports.jetstream._subscription import JetStreamSubscription

if TYPE_CHECKING:
    from transports.base import Transport

#: ``max_payload_bytes`` in token mode until a connection says (nats-server's default).
DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024 - HEADER_RESERVE


class JetStreamTransport:
    """A `Transport` over NATS JetStream (see the `transports.jetstream` docstring).

    Create it with `connect`. ``max_blob_bytes`` (default `MAX_BLOB_BYTES`) is the
    largest blob accepted; set it lower to refuse smaller blobs.
    """

    max_payload_bytes: int
    max_blob_bytes: int

    def __init__(
        self,
        keyring: Keyring,
        clock: Clock,
        *,
        replicas: int,
        request_timeout_s: float,
        tokens: _TokenSessions | None = None,
    ) -> None:
        self._keyring = keyring
        self._clock = clock
        self._tokens = tokens
        self._trusted = _Session(replicas=replicas, request_timeout_s=request_timeout_s, token=None)
        self._conn = self._trusted.conn
        self.max_payload_bytes = DEFAULT_MAX_PAYLOAD_BYTES
        self.max_blob_bytes = MAX_BLOB_BYTES
        self._kv = self._trusted.kv
        self._keys = _Keys(self._kv, keyring, clock, lambda: self._conn.closed)
        self._admin = _Admin(self._conn, self._keys, keyring, clock, tokens)

    @classmethod
    async def connect(
        cls,
        servers: Sequence[str] | str,
        *,
        keyring: Keyring,
        clock: Clock | None = None,
        replicas: int = 1,
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 5.0,
        user: str | None = None,
        password: str | None = None,
        nats_token: str | None = None,
        name: str = "mesafs",
        present_tokens: bool = False,
    ) -> JetStreamTransport:
        """Connect to NATS and return a transport.

        With ``present_tokens``, nothing connects here: every token the transport is
        handed gets its own connection presenting it, and the server's auth callout and
        the mesa service decide what it may do (`transports.jetstream._session`). Without
        it the transport is trusted: one connection with the NATS credentials given, and
        tokens checked here with ``keyring``.

        Args:
            servers: NATS URLs (``nats://host:port``) of one server or of a cluster.
            keyring: the API keys whose tokens are accepted.
            clock: the clock deciding token expiry (default: the system clock).
            replicas: ``num_replicas`` of the streams and buckets this transport creates.
            connect_timeout_s: the most the initial connection may take.
            request_timeout_s: the most one JetStream request may take.
            user: NATS user name, with ``password``.
            password: NATS password.
            nats_token: NATS authentication token (not a mesa token).
            name: the connection name shown by the server.
            present_tokens: connect once per token, presenting it (see above).

        Raises:
            UnavailableError: no server answered, or JetStream is not enabled, in time.
            ValueError: an argument is out of range.
        """
        server_list = [servers] if isinstance(servers, str) else list(servers)
        if not server_list:
            raise ValueError("at least one NATS server URL is required")
        if not 1 <= replicas <= 5:
            raise ValueError(f"replicas must be between 1 and 5, got {replicas}")
        if connect_timeout_s <= 0 or request_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if present_tokens:
            if user is not None or password is not None or nats_token is not None:
                raise ValueError("present_tokens connects with tokens, not NATS credentials")
            tokens = _TokenSessions(
                server_list,
                replicas=replicas,
                connect_timeout_s=connect_timeout_s,
                request_timeout_s=request_timeout_s,
                name=name,
            )
            return cls(
                keyring,
                clock or SystemClock(),
                replicas=replicas,
                request_timeout_s=request_timeout_s,
                tokens=tokens,
            )
        transport = cls(
            keyring, clock or SystemClock(), replicas=replicas, request_timeout_s=request_timeout_s
        )
        await transport._conn.connect(
            server_list,
            connect_timeout_s,
            name=name,
            user=user,
            password=password,
            token=nats_token,
        )
        transport.max_payload_bytes = transport._conn.payload_limit()
        return transport

    # -- logs -----------------------------------------------------------------

    async def append(self, token: str, log: LogId, payload: bytes, *, msg_id: str) -> Appended:
        """Append ``payload`` to ``log``; deduplicated by ``msg_id``.

        Args:
            token: the caller's token; it must grant ``log``'s repo read-write.
            log: the change's log.
            payload: the entry's bytes, at most ``max_payload_bytes``.
            msg_id: a non-empty id of at most `MAX_MSG_ID_BYTES` bytes without line
                breaks; a repeat within the dedupe window appends nothing.

        Returns:
            The entry's sequence, or the original one for a repeat. ``time_ms`` is None:
            the PubAck carries no time, and the entry's `Delivery` carries the server's.

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo read-write.
            PayloadTooLargeError: ``payload`` exceeds ``max_payload_bytes``.
            ValueError: ``msg_id`` is empty or too long.
            UnavailableError: the server did not answer in time (the append may have
                happened: retry with the same ``msg_id``).
        """
        session = await self._authorize(token, log.org, log.repo, write=True)
        await session.conn.ready(f"append to {log_subject(log)}")
        return await session.log.append(
            log, payload, msg_id, max_payload_bytes=self.max_payload_bytes
        )

    async def last_seq(self, token: str, log: LogId) -> int:
        """Return the sequence of the newest entry of ``log`` (0 when empty).

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            UnavailableError: the server did not answer in time.
        """
        session = await self._authorize(token, log.org, log.repo, write=False)
        if self._absent(session, log.repo):
            return 0
        await session.conn.ready(f"last sequence of {log_subject(log)}")
        return await session.log.last_seq(log)

    async def subscribe(self, token: str, log: LogId, *, after_seq: int) -> JetStreamSubscription:
        """Return an ordered subscription to ``log`` starting after ``after_seq``.

        Errors as `Transport.last_seq`.
        """
        session = await self._authorize(token, log.org, log.repo, write=False, provision=True)
        if self._absent(session, log.repo):
            raise MissingError(f"{log.org}/{log.repo} does not exist")
        await session.conn.ready(f"subscribe to {log_subject(log)}")
        return await session.log.subscribe(log, after_seq)

    # -- blobs ----------------------------------------------------------------

    async def put_blob(self, token: str, org: str, repo: str, data: Buffer) -> str:
        """Store ``data`` once and return its sha256 digest (idempotent).

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo read-write.
            PayloadTooLargeError: ``data`` exceeds ``max_blob_bytes``.
            UnavailableError: the server did not answer in time.
        """
        session = await self._authorize(token, org, repo, write=True)
        await session.conn.ready(f"put a blob of {org}/{repo}")
        return await session.blobs.put(org, repo, data, max_bytes=self.max_blob_bytes)

    async def put_blob_chunks(self, token: str, org: str, repo: str, chunks: ByteChunks) -> str:
        """Store the concatenated ``chunks`` once, streaming, and return their sha256 digest.

        Errors as `Transport.put_blob`.
        """
        session = await self._authorize(token, org, repo, write=True)
        await session.conn.ready(f"put a blob of {org}/{repo}")
        return await session.blobs.put_chunks(org, repo, chunks, max_bytes=self.max_blob_bytes)

    async def get_blob(self, token: str, org: str, repo: str, digest: str) -> bytes:
        """Return the bytes stored under ``digest``.

        Errors as `Transport.put_blob_chunks`.
        """
        session = await self._authorize(token, org, repo, write=False)
        if self._absent(session, repo):
            raise MissingError(f"no blob {digest!r} in {org}/{repo}")
        await session.conn.ready(f"get blob {digest} of {org}/{repo}")
        return await session.blobs.get(org, repo, digest)

    async def get_blob_chunks(
        self, token: str, org: str, repo: str, digest: str
    ) -> AsyncGenerator[bytes, None]:
        """Return a stream of the bytes stored under ``digest``, at most 1 MiB a piece.

        Errors as `Transport.get_blob_chunks`.
        """
        session = await self._authorize(token, org, repo, write=False)
        if self._absent(session, repo):
            raise MissingError(f"no blob {digest!r} in {org}/{repo}")
        await session.conn.ready(f"get blob {digest} of {org}/{repo}")
        return await session.blobs.get_chunks(org, repo, digest)

    # -- KV -------------------------------------------------------------------

    async def kv_get(self, token: str, key: str) -> KvEntry | None:
        """Return the record at ``key``, or None.

        Raises:
            InvalidNameError: ``key`` is not ``<org>.<repo>[.<token>...]``.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the key's repo.
            UnavailableError: the server did not answer in time.
        """
        session = await self._authorize_key(token, key, write=False)
        if self._absent(session, key_scope(key)[1]):
            return None
        await session.conn.ready(f"get {key}")
        return await session.kv.get(key)

    async def kv_put(
        self, token: str, key: str, value: bytes, *, expected_revision: int | None = None
    ) -> int:
        """Store ``value`` at ``key`` and return the new revision.

        Errors as `Transport.kv_put`.
        """
        session = await self._authorize_key(token, key, write=True)
        await session.conn.ready(f"put {key}")
        return await session.kv.put(
            key, value, expected_revision, max_payload_bytes=self.max_payload_bytes
        )

    async def kv_delete(
        self, token: str, key: str, *, expected_revision: int | None = None
    ) -> None:
        """Delete ``key``, as a compare-and-set when ``expected_revision`` is given.

        Errors as `Transport.kv_delete`.
        """
        session = await self._authorize_key(token, key, write=True)
        await session.conn.ready(f"delete {key}")
        await session.kv.delete(key, expected_revision)

    async def kv_keys(self, token: str, prefix: str) -> list[str]:
        """Return the keys starting with ``prefix`` the token may read (others left out)."""
        only: frozenset[str] | None = None
        if self._tokens is not None:
            session, claims, only = await self._tokens.for_listing(token, self._clock.now_ms())
        else:
            session = self._trusted
            await self._keys.refresh(token)
            now, closed = self._clock.now_ms(), self._conn.closed
            claims = authenticate(self._keyring, now, token, closed=closed)
        await session.conn.ready(f"list keys {prefix}*")
        return await session.kv.keys(claims, prefix, only=only)

    async def put_key(self, token: str, record: KeyRecord) -> None:
        """See `Transport.put_key`."""
        await self._admin.put_key(token, record, self.max_payload_bytes)

    async def bootstrap_key(self, record: KeyRecord) -> None:
        """Store ``record`` with this connection's NATS credentials (an operator's first key)."""
        await self._keys.put(record, self.max_payload_bytes, create=False)

    async def list_keys(self, token: str, org: str) -> list[KeyRecord]:
        """See `Transport.list_keys`."""
        return await self._admin.list_keys(token, org)

    async def revoke_key(self, token: str, org: str, key_id: str) -> None:
        """See `Transport.revoke_key`."""
        await self._admin.revoke_key(token, org, key_id, self.max_payload_bytes)

    async def delete_repo_storage(self, token: str, org: str, repo: str) -> None:
        """See `Transport.delete_repo_storage`."""
        await self._admin.delete_repo_storage(token, org, repo)

    async def aclose(self) -> None:
        """End every subscription and close the connections (idempotent).

        Later calls raise `UnavailableError`.
        """
        if self._tokens is not None:
            await self._tokens.aclose()
        await self._conn.aclose()

    @property
    def connected_server(self) -> str | None:
        """``host:port`` of the server this transport is connected to now, or None."""
        if self._tokens is not None:
            urls = [s.conn.nc.connected_url for s in self._tokens.open_sessions()]
            url = next((u for u in urls if u is not None), None)
        else:
            url = self._conn.nc.connected_url
        return None if url is None else f"{url.hostname}:{url.port}"  # no credentials

    async def _authorize(
        self, token: str, org: str, repo: str, *, write: bool, provision: bool | None = None
    ) -> _Session:
        """Check a call (names, closed, token, grant) and return the session to make it on."""
        validate_org(org)
        validate_repo(repo)
        if self._tokens is not None:
            now_ms = self._clock.now_ms()
            session = await self._tokens.authorize(
                token, org, repo, write=write, provision=provision, now_ms=now_ms
            )
            self._track_payload_limit()
            return session
        await self._keys.refresh(token)
        now, closed = self._clock.now_ms(), self._conn.closed
        authorize(self._keyring, now, token, org, repo, write=write, closed=closed)
        return self._trusted

    async def _authorize_key(self, token: str, key: str, *, write: bool) -> _Session:
        validate_kv_key(key)
        org, repo = key_scope(key)
        return await self._authorize(token, org, repo, write=write)

    def _absent(self, session: _Session, repo: str) -> bool:
        """Whether ``repo`` does not exist for an org-wide session that just renewed."""
        return session.org_wide and repo not in session.granted

    def _track_payload_limit(self) -> None:  # learnt from the first token connection
        if self._tokens is not None and self._tokens.payload_limit is not None:
            self.max_payload_bytes = self._tokens.payload_limit


if TYPE_CHECKING:

    def _conforms(transport: JetStreamTransport) -> Transport:
        """Let mypy prove that `JetStreamTransport` satisfies the `Transport` protocol."""
        return transport
