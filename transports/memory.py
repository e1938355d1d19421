"""A strict in-process `Transport`: what JetStream would accept, nothing more.

Used by the SDK's unit tests and by simulations. It is a fake in the jj ``TestBackend``
sense: every call verifies its token and permissions, validates names and limits, and
refuses what a real NATS JetStream server would refuse, with the same exceptions.

Invariants:

- One stream per (org, repo) with one sequence counter: sequences of a repo increase
  strictly by one, so a change's own sequences are NOT contiguous when other changes of
  the repo interleave (deliberate, to keep receivers honest about gaps).
- An entry's ``time_ms`` comes from the injected clock but never goes backwards within
  a stream (``max(previous, clock)``), as JetStream stamps messages.
- A ``msg_id`` seen in a stream within ``dedupe_window_ms`` makes a later append a no-op
  that returns the original `Appended`.
- A refused call (bad token, missing grant, bad name, payload too large, lost CAS)
  changes nothing.
- A subscription's backlog is taken and the subscription registered in one synchronous
  step, and appends feed subscriptions synchronously, so a subscriber sees every entry
  after ``after_seq`` exactly once, in order, with no polling.
- KV revisions come from one counter per transport (like a KV bucket's stream sequence),
  so a key's revisions increase strictly, even across a delete and a re-create.
- A blob is kept as its pieces of at most `BLOB_CHUNK_BYTES` (no whole-blob copy is
  ever made to store or stream it); a put is stored only once its last chunk was
  taken and its size checked against ``max_blob_bytes``. A blob stream checks, before
  each piece, that the transport is still open.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from transports.auth import (
    Claims,
    Keyring,
    authenticate,
    authorize,
    authorize_admin,
    authorize_key,
    authorize_new_key,
    may_read_key,
)
from transports.base import (
    MAX_BLOB_BYTES,
    Appended,
    Buffer,
    ByteChunks,
    Clock,
    Delivery,
    KvEntry,
    LogId,
    MissingError,
    PayloadTooLargeError,
    RevisionMismatchError,
    UnavailableError,
    blob_pieces,
    validate_org,
    validate_repo,
)
from transports.keys import KeyRecord

if TYPE_CHECKING:
    from transports.base import Transport

_CLOSED: Final = object()


@dataclass(slots=True)
class _Stream:
    """The log stream of one repo: every change's entries share one sequence."""

    last_seq: int = 0
    last_time_ms: int = 0
    # change id -> its entries in order; each Delivery already carries its prev_seq.
    changes: dict[str, list[Delivery]] = field(default_factory=dict)
    # msg_id -> the original append; insertion order is time_ms order (never decreasing).
    msg_ids: dict[str, Appended] = field(default_factory=dict)
    subscribers: dict[str, list[MemorySubscription]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _KvRecord:
    value: bytes
    revision: int


class MemorySubscription:
    """An ordered subscription to one change's log, fed by `MemoryTransport.append`.

    Iterate it with ``async for``; `aclose` ends the iteration promptly, even while a
    consumer is waiting for the next entry.
    """

    def __init__(self, registry: list[MemorySubscription]) -> None:
        self._queue: asyncio.Queue[Delivery | object] = asyncio.Queue()
        self._closed = False
        self._registry = registry

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if self._closed or not isinstance(item, Delivery):
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """End the subscription; a consumer blocked in ``async for`` finishes."""
        self.close_nowait()

    def close_nowait(self) -> None:
        """End the subscription without awaiting (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self in self._registry:
            self._registry.remove(self)
        self._queue.put_nowait(_CLOSED)

    def feed_nowait(self, delivery: Delivery) -> None:
        """Queue ``delivery`` for the consumer (ignored once closed)."""
        if not self._closed:
            self._queue.put_nowait(delivery)


class MemoryTransport:
    """An in-process `Transport` with JetStream's guarantees and refusals.

    Args:
        keyring: the API keys whose tokens are accepted.
        clock: the sequencer's clock: token expiry, entry timestamps, dedupe window.
        max_payload_bytes: the largest entry payload accepted (JetStream ``max_payload``).
        dedupe_window_ms: how long a ``msg_id`` deduplicates appends in its stream.

    ``max_blob_bytes`` (default `MAX_BLOB_BYTES`) is the largest blob accepted; set it
    lower to refuse smaller blobs.
    """

    def __init__(
        self,
        keyring: Keyring,
        clock: Clock,
        *,
        max_payload_bytes: int = 1024 * 1024,
        dedupe_window_ms: int = 120_000,
    ) -> None:
        if max_payload_bytes <= 0:
            raise ValueError("max_payload_bytes must be positive")
        if dedupe_window_ms < 0:
            raise ValueError("dedupe_window_ms must not be negative")
        self.max_payload_bytes = max_payload_bytes
        self.max_blob_bytes: int = MAX_BLOB_BYTES
        self.dedupe_window_ms = dedupe_window_ms
        self._keyring = keyring
        self._clock = clock
        self._closed = False
        self._streams: dict[tuple[str, str], _Stream] = {}
        # (org, repo) -> digest -> the blob's pieces.
        self._blobs: dict[tuple[str, str], dict[str, tuple[bytes, ...]]] = {}
        self._kv: dict[str, _KvRecord] = {}
        self._kv_revision = 0

    # -- logs -----------------------------------------------------------------

    async def append(self, token: str, log: LogId, payload: bytes, *, msg_id: str) -> Appended:
        """Append ``payload`` to ``log``; deduplicated by ``msg_id``.

        Args:
            token: the caller's token; it must grant ``log``'s repo read-write.
            log: the change's log.
            payload: the entry's bytes, at most ``max_payload_bytes``.
            msg_id: a non-empty id; a repeat within the dedupe window appends nothing.

        Returns:
            The entry's sequence and timestamp, or the original ones for a repeat.

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo read-write.
            PayloadTooLargeError: ``payload`` exceeds ``max_payload_bytes``.
            ValueError: ``msg_id`` is empty.
        """
        self._authorize(token, log.org, log.repo, write=True)
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"entry of {len(payload)} bytes exceeds the maximum of {self.max_payload_bytes}"
            )
        if not isinstance(msg_id, str) or not msg_id:
            raise ValueError("msg_id must be a non-empty string")
        stream = self._streams.setdefault((log.org, log.repo), _Stream())
        time_ms = max(stream.last_time_ms, self._clock.now_ms())
        self._expire_msg_ids(stream, time_ms)
        original = stream.msg_ids.get(msg_id)
        if original is not None:
            return original
        entries = stream.changes.setdefault(log.change, [])
        seq = stream.last_seq + 1
        delivery = Delivery(
            seq=seq,
            prev_seq=entries[-1].seq if entries else 0,
            time_ms=time_ms,
            payload=bytes(payload),
        )
        entries.append(delivery)
        stream.last_seq = seq
        stream.last_time_ms = time_ms
        appended = Appended(seq=seq, time_ms=time_ms)
        stream.msg_ids[msg_id] = appended
        for subscription in list(stream.subscribers.get(log.change, ())):
            subscription.feed_nowait(delivery)
        return appended

    async def last_seq(self, token: str, log: LogId) -> int:
        """Return the sequence of the newest entry of ``log`` (0 when empty).

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
        """
        self._authorize(token, log.org, log.repo, write=False)
        entries = self._entries(log.org, log.repo, log.change)
        return entries[-1].seq if entries else 0

    async def subscribe(self, token: str, log: LogId, *, after_seq: int) -> MemorySubscription:
        """Return an ordered subscription to ``log`` starting after ``after_seq``.

        The token is checked once, when subscribing. The subscription first yields the
        entries already stored, then live appends.

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            ValueError: ``after_seq`` is negative.
        """
        self._authorize(token, log.org, log.repo, write=False)
        if after_seq < 0:
            raise ValueError(f"after_seq must not be negative, got {after_seq}")
        stream = self._streams.setdefault((log.org, log.repo), _Stream())
        subscribers = stream.subscribers.setdefault(log.change, [])
        subscription = MemorySubscription(subscribers)
        # Backlog and registration happen without an await in between: no gap, no repeat.
        for delivery in stream.changes.get(log.change, ()):
            if delivery.seq > after_seq:
                subscription.feed_nowait(delivery)
        subscribers.append(subscription)
        return subscription

    def log_entries(self, org: str, repo: str, change: str) -> list[Delivery]:
        """Return every entry of a change's log, without a token.

        A test and simulation hook: it bypasses authentication, so it is not part of the
        `Transport` protocol and production code must not call it.
        """
        log = LogId(org, repo, change)
        return list(self._entries(log.org, log.repo, log.change))

    # -- blobs ----------------------------------------------------------------

    async def put_blob(self, token: str, org: str, repo: str, data: Buffer) -> str:
        """Store ``data`` once and return its sha256 digest (idempotent).

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo read-write.
            PayloadTooLargeError: ``data`` exceeds ``max_blob_bytes``.
        """
        return await self.put_blob_chunks(token, org, repo, (data,))

    async def put_blob_chunks(self, token: str, org: str, repo: str, chunks: ByteChunks) -> str:
        """Store the concatenated ``chunks`` once and return their sha256 digest (idempotent).

        The token is checked before the first chunk is taken; the blob is stored once
        the last one was. An exception raised by ``chunks`` propagates and stores
        nothing.

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo read-write.
            PayloadTooLargeError: the chunks exceed ``max_blob_bytes`` (taken no further).
            TypeError: a chunk is not bytes-like.
        """
        self._authorize(token, org, repo, write=True)
        hasher = hashlib.sha256()
        pieces: list[bytes] = []
        size = 0
        async for piece in blob_pieces(chunks):
            size += len(piece)
            if size > self.max_blob_bytes:
                raise PayloadTooLargeError(
                    f"blob of more than {self.max_blob_bytes} bytes exceeds the maximum"
                )
            hasher.update(piece)
            pieces.append(bytes(piece))
        digest = hasher.hexdigest()
        if self._closed:
            raise UnavailableError("the transport was closed during the put")
        self._blobs.setdefault((org, repo), {}).setdefault(digest, tuple(pieces))
        return digest

    async def get_blob(self, token: str, org: str, repo: str, digest: str) -> bytes:
        """Return the bytes stored under ``digest``.

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            MissingError: no blob is stored under ``digest`` in this repo.
        """
        pieces = self._pieces(token, org, repo, digest)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def get_blob_chunks(
        self, token: str, org: str, repo: str, digest: str
    ) -> AsyncGenerator[bytes, None]:
        """Return a stream of the bytes stored under ``digest``, in stored pieces.

        The token is checked here, once; each piece is at most `BLOB_CHUNK_BYTES`.

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            MissingError: no blob is stored under ``digest`` in this repo.
            UnavailableError: (while iterating) the transport was closed meanwhile.
        """
        return self._stream(self._pieces(token, org, repo, digest))

    async def _stream(self, pieces: tuple[bytes, ...]) -> AsyncGenerator[bytes, None]:
        for piece in pieces:
            if self._closed:
                raise UnavailableError("the transport is closed")
            yield piece

    def _pieces(self, token: str, org: str, repo: str, digest: str) -> tuple[bytes, ...]:
        self._authorize(token, org, repo, write=False)
        pieces = self._blobs.get((org, repo), {}).get(digest)
        if pieces is None:
            raise MissingError(f"no blob {digest!r} in {org}/{repo}")
        return pieces

    # -- KV -------------------------------------------------------------------

    async def kv_get(self, token: str, key: str) -> KvEntry | None:
        """Return the record at ``key``, or None.

        Raises:
            InvalidNameError: ``key`` is not ``<org>.<repo>[.<token>...]``.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the key's repo.
        """
        self._authorize_key(token, key, write=False)
        record = self._kv.get(key)
        return None if record is None else KvEntry(key, record.value, record.revision)

    async def kv_put(
        self, token: str, key: str, value: bytes, *, expected_revision: int | None = None
    ) -> int:
        """Store ``value`` at ``key`` and return the new revision.

        Args:
            token: the caller's token; it must grant the key's repo read-write.
            key: ``<org>.<repo>[.<token>...]``.
            value: the record.
            expected_revision: None for an unconditional put, 0 for "must not exist",
                otherwise the revision the key must currently have.

        Raises:
            InvalidNameError: ``key`` is not valid.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the key's repo read-write.
            RevisionMismatchError: the key's revision is not ``expected_revision``.
        """
        self._authorize_key(token, key, write=True)
        self._check_revision(key, expected_revision)
        self._kv_revision += 1
        self._kv[key] = _KvRecord(bytes(value), self._kv_revision)
        return self._kv_revision

    async def kv_delete(
        self, token: str, key: str, *, expected_revision: int | None = None
    ) -> None:
        """Delete ``key``, as a compare-and-set when ``expected_revision`` is given.

        A delete consumes a revision (JetStream writes a delete marker), so a key
        re-created later gets a higher revision than any it had before.

        Raises:
            InvalidNameError: ``key`` is not valid.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the key's repo read-write.
            RevisionMismatchError: the key's revision is not ``expected_revision``.
            MissingError: the key does not exist (and no CAS failed first).
        """
        self._authorize_key(token, key, write=True)
        self._check_revision(key, expected_revision)
        if key not in self._kv:
            raise MissingError(f"no KV key {key!r}")
        del self._kv[key]
        self._kv_revision += 1

    async def kv_keys(self, token: str, prefix: str) -> list[str]:
        """Return the keys that start with ``prefix`` and that the token may read, sorted.

        Keys of repos the token does not grant are left out, not refused.

        Raises:
            TokenRejectedError: the token is invalid or expired.
        """
        claims = authenticate(self._keyring, self._clock.now_ms(), token, closed=self._closed)
        return [
            key for key in sorted(self._kv) if key.startswith(prefix) and may_read_key(claims, key)
        ]

    # -- API keys -------------------------------------------------------------

    async def put_key(self, token: str, record: KeyRecord) -> None:
        """Register a new key's record (see `Transport.put_key`).

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: not an admin key's own token, or more than it has.
            ValueError: a key with that id exists already.
        """
        authorize_new_key(self._keyring, self._clock.now_ms(), token, record, closed=self._closed)
        self._keyring.put(record)

    async def list_keys(self, token: str, org: str) -> list[KeyRecord]:
        """Return the key records of ``org`` (see `Transport.list_keys`)."""
        authorize_admin(self._keyring, self._clock.now_ms(), token, org, closed=self._closed)
        return sorted(
            (r for r in self._keyring.records() if r.org == org), key=lambda r: r.created_at
        )

    async def revoke_key(self, token: str, org: str, key_id: str) -> None:
        """Revoke a key of ``org``: its tokens are refused from now on."""
        authorize_admin(self._keyring, self._clock.now_ms(), token, org, closed=self._closed)
        record = self._keyring.get(key_id)
        if record is None or record.org != org:
            raise MissingError(f"no key {key_id!r} in org {org!r}")
        self._keyring.put(replace(record, revoked=True))

    async def delete_repo_storage(self, token: str, org: str, repo: str) -> None:
        """Delete every log, blob and record of ``org/repo`` (see `Transport.delete_repo_storage`).

        Open subscriptions to its logs end.
        """
        validate_org(org)
        validate_repo(repo)
        authorize_admin(self._keyring, self._clock.now_ms(), token, org, closed=self._closed)
        stream = self._streams.pop((org, repo), None)
        if stream is not None:
            for subscribers in stream.subscribers.values():
                for subscription in list(subscribers):
                    subscription.close_nowait()
        self._blobs.pop((org, repo), None)
        prefix = f"{org}.{repo}."
        for key in [key for key in self._kv if key.startswith(prefix)]:
            del self._kv[key]

    # -- lifecycle ------------------------------------------------------------

    async def aclose(self) -> None:
        """End every subscription; later calls raise `UnavailableError` (idempotent)."""
        self._closed = True
        for stream in self._streams.values():
            for subscribers in stream.subscribers.values():
                for subscription in list(subscribers):
                    subscription.close_nowait()

    # -- internals ------------------------------------------------------------

    def _authorize(self, token: str, org: str, repo: str, *, write: bool) -> Claims:
        return authorize(
            self._keyring, self._clock.now_ms(), token, org, repo, write=write, closed=self._closed
        )

    def _authorize_key(self, token: str, key: str, *, write: bool) -> None:
        authorize_key(
            self._keyring, self._clock.now_ms(), token, key, write=write, closed=self._closed
        )

    def _check_revision(self, key: str, expected_revision: int | None) -> None:
        if expected_revision is None:
            return
        record = self._kv.get(key)
        actual = 0 if record is None else record.revision
        if actual != expected_revision:
            raise RevisionMismatchError(key, expected_revision, actual)

    def _entries(self, org: str, repo: str, change: str) -> list[Delivery]:
        stream = self._streams.get((org, repo))
        return [] if stream is None else stream.changes.get(change, [])

    def _expire_msg_ids(self, stream: _Stream, now_ms: int) -> None:
        horizon_ms = now_ms - self.dedupe_window_ms
        while stream.msg_ids:
            oldest = next(iter(stream.msg_ids))
            stored_ms = stream.msg_ids[oldest].time_ms
            assert stored_ms is not None, "the memory transport always knows its times"
            if stored_ms > horizon_ms:
                break
            del stream.msg_ids[oldest]


if TYPE_CHECKING:

    def _conforms(transport: MemoryTransport) -> Transport:
        """Let mypy prove that `MemoryTransport` satisfies the `Transport` protocol."""
        return transport
