"""`JetStreamTransport`: the `Transport` facade that checks every call and delegates it.

Invariants:

- Every call is checked with `transports.auth` before anything is sent (names first,
  then whether the transport is closed, then the token, then the grant), exactly like
  `transports.memory.MemoryTransport`. A refused call sends nothing but, after valid
  names, a read of its key's record (`_keys`: once a second per key at most).
- The injected clock only decides token expiry; entry times come from the server.
- An authorized call made while the connection is down waits for the reconnect at
  most the request timeout, then raises `UnavailableError` having sent nothing
  (`transports.jetstream._connection`): nothing is queued to be sent later.
- The work is done by one object per concern over one shared `_Connection`: `_Log`,
  `_Blobs` and `_Kv`. This module holds no I/O of its own.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING

from transports.auth import (
    Claims,
    KeyRecord,
    Keyring,
    authenticate,
    authorize,
    authorize_key,
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
    SystemClock,
    validate_kv_key,
    validate_org,
    validate_repo,
)
from transports.jetstream._blobs import _Blobs
from transports.jetstream._connection import _Connection
from transports.jetstream._keys import _Keys
from transports.jetstream._kv import _Kv
from transports.jetstream._log import _Log
from transports.jetstream._names import (
    log_subject,
)
from transports.jetstream._subscription import JetStreamSubscription

if TYPE_CHECKING:
    from transports.base import Transport


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
    ) -> None:
        self._keyring = keyring
        self._clock = clock
        self._conn = _Connection(replicas=replicas, request_timeout_s=request_timeout_s)
        self.max_payload_bytes = 0
        self.max_blob_bytes = MAX_BLOB_BYTES
        # Registration order is the order a reconnect drops their caches in.
        self._log = _Log(self._conn)
        self._blobs = _Blobs(self._conn)
        self._kv = _Kv(self._conn)
        self._keys = _Keys(self._kv, keyring, clock, lambda: self._conn.closed)

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
    ) -> JetStreamTransport:
        """Connect to NATS and return a transport.

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
        await self._authorize(token, log.org, log.repo, write=True)
        await self._conn.ready(f"append to {log_subject(log)}")
        return await self._log.append(
            log, payload, msg_id, max_payload_bytes=self.max_payload_bytes
        )

    async def last_seq(self, token: str, log: LogId) -> int:
        """Return the sequence of the newest entry of ``log`` (0 when empty).

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            UnavailableError: the server did not answer in time.
        """
        await self._authorize(token, log.org, log.repo, write=False)
        await self._conn.ready(f"last sequence of {log_subject(log)}")
        return await self._log.last_seq(log)

    async def subscribe(self, token: str, log: LogId, *, after_seq: int) -> JetStreamSubscription:
        """Return an ordered subscription to ``log`` starting after ``after_seq``.

        The token is checked once, when subscribing. ``after_seq`` should be 0 or the
        sequence of an entry of this change: it becomes the first delivery's
        ``prev_seq``.

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            ValueError: ``after_seq`` is negative.
            UnavailableError: the server did not answer in time.
        """
        await self._authorize(token, log.org, log.repo, write=False)
        await self._conn.ready(f"subscribe to {log_subject(log)}")
        return await self._log.subscribe(log, after_seq)

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
        await self._authorize(token, org, repo, write=True)
        await self._conn.ready(f"put a blob of {org}/{repo}")
        return await self._blobs.put(org, repo, data, max_bytes=self.max_blob_bytes)

    async def put_blob_chunks(self, token: str, org: str, repo: str, chunks: ByteChunks) -> str:
        """Store the concatenated ``chunks`` once, streaming, and return their sha256 digest.

        The token is checked before the first chunk is taken. An exception raised by
        ``chunks`` propagates and stores nothing.

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo read-write.
            PayloadTooLargeError: the chunks exceed ``max_blob_bytes`` (taken no further).
            UnavailableError: the server did not answer in time.
            TypeError: a chunk is not bytes-like.
        """
        await self._authorize(token, org, repo, write=True)
        await self._conn.ready(f"put a blob of {org}/{repo}")
        return await self._blobs.put_chunks(org, repo, chunks, max_bytes=self.max_blob_bytes)

    async def get_blob(self, token: str, org: str, repo: str, digest: str) -> bytes:
        """Return the bytes stored under ``digest``.

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            MissingError: no blob is stored under ``digest`` in this repo.
            UnavailableError: the server did not answer in time.
            TransportError: the stored bytes are corrupt.
        """
        await self._authorize(token, org, repo, write=False)
        await self._conn.ready(f"get blob {digest} of {org}/{repo}")
        return await self._blobs.get(org, repo, digest)

    async def get_blob_chunks(
        self, token: str, org: str, repo: str, digest: str
    ) -> AsyncGenerator[bytes, None]:
        """Return a stream of the bytes stored under ``digest``, at most 1 MiB a piece.

        The token is checked here, once. Close the stream (``aclose``) when stopping
        early: it holds a consumer on the server until then.

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            MissingError: no blob is stored under ``digest`` in this repo.
            UnavailableError: the server did not answer in time (here or while iterating).
            TransportError: (while iterating) the stored bytes are corrupt.
        """
        await self._authorize(token, org, repo, write=False)
        await self._conn.ready(f"get blob {digest} of {org}/{repo}")
        return await self._blobs.get_chunks(org, repo, digest)

    # -- KV -------------------------------------------------------------------

    async def kv_get(self, token: str, key: str) -> KvEntry | None:
        """Return the record at ``key``, or None.

        Raises:
            InvalidNameError: ``key`` is not ``<org>.<repo>[.<token>...]``.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the key's repo.
            UnavailableError: the server did not answer in time.
        """
        await self._authorize_key(token, key, write=False)
        await self._conn.ready(f"get {key}")
        return await self._kv.get(key)

    async def kv_put(
        self, token: str, key: str, value: bytes, *, expected_revision: int | None = None
    ) -> int:
        """Store ``value`` at ``key`` and return the new revision.

        Args:
            token: the caller's token; it must grant the key's repo read-write.
            key: ``<org>.<repo>[.<token>...]``.
            value: the record, at most ``max_payload_bytes``.
            expected_revision: None for an unconditional put, 0 for "must not exist",
                otherwise the revision the key must currently have.

        Raises:
            InvalidNameError: ``key`` is not valid.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the key's repo read-write.
            RevisionMismatchError: the key's revision is not ``expected_revision``.
            PayloadTooLargeError: ``value`` exceeds ``max_payload_bytes``.
            UnavailableError: the server did not answer in time.
        """
        await self._authorize_key(token, key, write=True)
        await self._conn.ready(f"put {key}")
        return await self._kv.put(
            key, value, expected_revision, max_payload_bytes=self.max_payload_bytes
        )

    async def kv_delete(
        self, token: str, key: str, *, expected_revision: int | None = None
    ) -> None:
        """Delete ``key``, as a compare-and-set when ``expected_revision`` is given.

        A delete writes a delete marker, which consumes a revision, so a key re-created
        later gets a higher revision than any it had before.

        Raises:
            InvalidNameError: ``key`` is not valid.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the key's repo read-write.
            RevisionMismatchError: the key's revision is not ``expected_revision``.
            MissingError: the key does not exist (and no CAS failed first).
            UnavailableError: the server did not answer in time.
        """
        await self._authorize_key(token, key, write=True)
        await self._conn.ready(f"delete {key}")
        await self._kv.delete(key, expected_revision)

    async def kv_keys(self, token: str, prefix: str) -> list[str]:
        """Return the keys that start with ``prefix`` and that the token may read, sorted.

        Keys of repos the token does not grant are left out, not refused.

        Raises:
            TokenRejectedError: the token is invalid or expired.
            UnavailableError: the server did not answer in time.
        """
        await self._keys.refresh(token)
        claims = authenticate(self._keyring, self._clock.now_ms(), token, closed=self._conn.closed)
        await self._conn.ready(f"list keys {prefix}*")
        return await self._kv.keys(claims, prefix)

    # -- lifecycle ------------------------------------------------------------

    # -- API keys (records under ``_keys.<id>`` in the KV: `_keys._Keys`) ------

    async def put_key(self, token: str, record: KeyRecord) -> None:
        """See `Transport.put_key`."""
        await self._keys.create(token, record, self.max_payload_bytes)

    async def bootstrap_key(self, record: KeyRecord) -> None:
        """Store ``record`` with this connection's NATS credentials (an operator's first key)."""
        await self._keys.put(record, self.max_payload_bytes, create=False)

    async def list_keys(self, token: str, org: str) -> list[KeyRecord]:
        """See `Transport.list_keys`."""
        return await self._keys.list(token, org)

    async def revoke_key(self, token: str, org: str, key_id: str) -> None:
        """See `Transport.revoke_key`."""
        await self._keys.revoke(token, org, key_id, self.max_payload_bytes)

    async def aclose(self) -> None:
        """End every subscription and close the connection (idempotent).

        Later calls raise `UnavailableError`.
        """
        await self._conn.aclose()

    @property
    def connected_server(self) -> str | None:
        """``host:port`` of the server this transport is connected to now, or None."""
        url = self._conn.nc.connected_url
        return None if url is None else str(url.netloc)

    # -- internals ------------------------------------------------------------

    async def _authorize(self, token: str, org: str, repo: str, *, write: bool) -> Claims:
        validate_org(org)
        validate_repo(repo)
        await self._keys.refresh(token)
        now, closed = self._clock.now_ms(), self._conn.closed
        return authorize(self._keyring, now, token, org, repo, write=write, closed=closed)

    async def _authorize_key(self, token: str, key: str, *, write: bool) -> None:
        validate_kv_key(key)
        key_scope(key)
        await self._keys.refresh(token)
        authorize_key(
            self._keyring, self._clock.now_ms(), token, key, write=write, closed=self._conn.closed
        )


if TYPE_CHECKING:

    def _conforms(transport: JetStreamTransport) -> Transport:
        """Let mypy prove that `JetStreamTransport` satisfies the `Transport` protocol."""
        return transport
