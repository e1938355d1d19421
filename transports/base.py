"""The Transport seam: the only way the SDK reaches a log, a blob store or a KV store.

Every implementation (memory, jetstream) gives the same guarantees, checked by one
contract suite in tests/transports:

- ``append`` puts an entry at the end of a change's log and returns its sequence and
  the sequencer's timestamp (milliseconds). Sequences of one repo increase strictly;
  those of one change need not be contiguous (other changes of the repo interleave).
  An append repeating a ``msg_id`` seen within the dedupe window returns the
  original sequence and appends nothing.
- ``subscribe`` delivers a change's entries in sequence order, from ``after_seq``
  (exclusive), with no gaps: each `Delivery` names the previous sequence of that
  change (``prev_seq``), so a receiver can prove it missed nothing. ``after_seq``
  must be 0 or the sequence of an entry of that change (the first delivery's
  ``prev_seq`` is then ``after_seq``).
- Blobs are content addressed: ``put_blob`` and ``put_blob_chunks`` return the sha256
  of the raw bytes, however they were chunked; ``get_blob`` returns exactly those bytes
  or raises `MissingError`, and ``get_blob_chunks`` streams them in pieces of at most
  `BLOB_CHUNK_BYTES`, checking the digest by the end of the stream. A blob holds at
  most ``max_blob_bytes`` (default `MAX_BLOB_BYTES`); a bigger one raises
  `PayloadTooLargeError` and stores nothing, as does a put whose chunks raise.
- KV keys hold small records with a revision; ``kv_put`` with ``expected_revision``
  is a compare-and-set (0 means "must not exist") and raises `RevisionMismatchError` on a lost race.
- Every call takes the caller's token and raises `TokenRejectedError` when it is invalid or
  expired, and `PermissionDeniedError` when it does not grant the repo (or grants it
  read-only for a write). A refused call changes nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from engine.ids import validate_change_id
from transports.keys import KeyRecord

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_ORG_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
_KV_KEY_RE = re.compile(r"^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$")

#: The largest blob, in raw bytes, a transport stores by default (1 TiB). A JetStream
#: server without a ``max_file_store`` limit stores at most 1 TB in all (its default),
#: and incompressible bytes take their own size there; a bigger blob could never be
#: stored on the embedded server. Also the largest file a FUSE mount writes
#: (`mesa.fuse._spool.MAX_FILE_BYTES`).
MAX_BLOB_BYTES: Final = 1 << 40
#: The most raw bytes one piece of ``get_blob_chunks`` holds (1 MiB).
BLOB_CHUNK_BYTES: Final = 1 << 20

#: Bytes a caller hands over: read, never kept (a transport copies what it stores).
Buffer: TypeAlias = bytes | bytearray | memoryview
#: The chunks of one blob, in order, from a plain or an async iterable, of any sizes.
ByteChunks: TypeAlias = Iterable[Buffer] | AsyncIterable[Buffer]


class TransportError(Exception):
    """Raised as the base of every failure a transport reports."""


class TokenRejectedError(TransportError):
    """Raised when a token is missing, malformed, signed by an unknown key, or expired."""


class PermissionDeniedError(TransportError):
    """Raised when a valid token does not grant the repo, or grants it read-only for a write."""


class MissingError(TransportError):
    """Raised when a blob, a KV key or a log does not exist."""


class RevisionMismatchError(TransportError):
    """Raised when a compare-and-set lost: the key's revision was not the expected one."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(f"{key}: expected revision {expected}, found {actual}")


class PayloadTooLargeError(TransportError):
    """Raised when an entry exceeds the transport's maximum payload."""


class UnavailableError(TransportError):
    """Raised when the transport cannot reach its server within the allowed time."""


class InvalidNameError(TransportError, ValueError):
    """Raised when an org, repo, change id or KV key is not a valid name."""


def validate_org(org: str) -> str:
    """Return ``org`` if it is a valid org slug (lowercase, digits, inner hyphens)."""
    if not isinstance(org, str) or _ORG_RE.match(org) is None:
        raise InvalidNameError(f"invalid org slug: {org!r}")
    return org


def validate_repo(repo: str) -> str:
    """Return ``repo`` if it is a valid repo name ([A-Za-z0-9][A-Za-z0-9_-]{0,99})."""
    if not isinstance(repo, str) or _NAME_RE.match(repo) is None:
        raise InvalidNameError(f"invalid repo name: {repo!r}")
    return repo


def validate_kv_key(key: str) -> str:
    """Return ``key`` if it is a valid KV key (dot-separated tokens)."""
    if not isinstance(key, str) or _KV_KEY_RE.match(key) is None:
        raise InvalidNameError(f"invalid KV key: {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class LogId:
    """Names one change's log: org, repo and change id."""

    org: str
    repo: str
    change: str

    def __post_init__(self) -> None:
        validate_org(self.org)
        validate_repo(self.repo)
        try:
            validate_change_id(self.change)
        except ValueError as exc:
            raise InvalidNameError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class Appended:
    """Where an append landed: its sequence, and the sequencer's timestamp in ms if known.

    ``time_ms`` is None when the transport cannot know it without another round trip
    (JetStream's publish acknowledgement has no timestamp); the `Delivery` of the entry
    always carries it.
    """

    seq: int
    time_ms: int | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entry delivered by a subscription (see module docstring)."""

    seq: int
    prev_seq: int
    time_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class KvEntry:
    """A KV record and its revision (revisions of one key increase strictly)."""

    key: str
    value: bytes
    revision: int


class Subscription(Protocol):
    """An ordered stream of a change's entries; close it with ``aclose``."""

    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def aclose(self) -> None:
        """End the iteration and release the subscription."""
        ...


class BlobStream(Protocol):
    """The raw bytes of one blob, in order; close it with ``aclose`` when stopping early.

    Iteration raises `TransportError` (by the end at the latest) when the stored bytes
    do not hash to the digest: a reader keeps nothing of a stream that raised.
    """

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Stop reading and release what the stream holds."""
        ...


async def blob_pieces(
    chunks: ByteChunks, size: int = BLOB_CHUNK_BYTES
) -> AsyncIterator[memoryview]:
    """Yield the bytes of ``chunks`` as byte memoryviews of at most ``size`` bytes, no copies.

    Empty chunks are skipped. Each view is valid until the next one is asked for: the
    caller's buffer is read in place, so it must not change while a put consumes it.
    """
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            for piece in _split(chunk, size):
                yield piece
    else:
        for chunk in chunks:
            for piece in _split(chunk, size):
                yield piece


def _split(chunk: Buffer, size: int) -> Iterator[memoryview]:
    if not isinstance(chunk, bytes | bytearray | memoryview):
        raise TypeError(f"blob chunks must be bytes-like, not {type(chunk).__name__}")
    view = memoryview(chunk)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    for start in range(0, len(view), size):
        yield view[start : start + size]


class Transport(Protocol):
    """The I/O seam (see module docstring)."""

    max_payload_bytes: int
    #: The largest blob ``put_blob``/``put_blob_chunks`` accept, in raw bytes.
    max_blob_bytes: int

    async def append(self, token: str, log: LogId, payload: bytes, *, msg_id: str) -> Appended:
        """Append ``payload`` to ``log``; deduplicated by ``msg_id``."""
        ...

    async def last_seq(self, token: str, log: LogId) -> int:
        """Return the sequence of the newest entry of ``log`` (0 when empty)."""
        ...

    async def subscribe(self, token: str, log: LogId, *, after_seq: int) -> Subscription:
        """Return an ordered subscription to ``log`` starting after ``after_seq``."""
        ...

    async def put_blob(self, token: str, org: str, repo: str, data: Buffer) -> str:
        """Store ``data`` once and return its sha256 digest."""
        ...

    async def put_blob_chunks(self, token: str, org: str, repo: str, chunks: ByteChunks) -> str:
        """Store the concatenated ``chunks`` once, consuming them as they come; return the digest.

        The token is checked before the first chunk is taken.
        """
        ...

    async def get_blob(self, token: str, org: str, repo: str, digest: str) -> bytes:
        """Return the bytes stored under ``digest``."""
        ...

    async def get_blob_chunks(self, token: str, org: str, repo: str, digest: str) -> BlobStream:
        """Return a stream of the bytes stored under ``digest`` (missing: raised here)."""
        ...

    async def kv_get(self, token: str, key: str) -> KvEntry | None:
        """Return the record at ``key``, or None."""
        ...

    async def kv_put(
        self, token: str, key: str, value: bytes, *, expected_revision: int | None = None
    ) -> int:
        """Store ``value`` at ``key`` and return the new revision (CAS when expected is given)."""
        ...

    async def kv_delete(
        self, token: str, key: str, *, expected_revision: int | None = None
    ) -> None:
        """Delete ``key`` (CAS when expected is given); a missing key raises MissingError."""
        ...

    async def kv_keys(self, token: str, prefix: str) -> list[str]:
        """Return the keys that start with ``prefix``, sorted."""
        ...

    async def put_key(self, token: str, record: KeyRecord) -> None:
        """Register a new API key's record (the token's key must be an admin key).

        Raises ``ValueError`` if the id exists already.
        """
        ...

    async def list_keys(self, token: str, org: str) -> list[KeyRecord]:
        """Return the key records of ``org`` (admin keys only), revoked ones too."""
        ...

    async def revoke_key(self, token: str, org: str, key_id: str) -> None:
        """Revoke a key of ``org`` (admin keys only); a missing key raises MissingError."""
        ...

    async def delete_repo_storage(self, token: str, org: str, repo: str) -> None:
        """Delete every log, blob and record of ``org/repo`` (admin keys only); idempotent."""
        ...

    async def aclose(self) -> None:
        """Release every resource the transport holds."""
        ...


class Clock(Protocol):
    """A source of wall-clock time in milliseconds (injected for determinism)."""

    def now_ms(self) -> int:
        """Return the current time in milliseconds since the epoch."""
        ...


class SystemClock:
    """The real wall clock."""

    def now_ms(self) -> int:
        """Return milliseconds since the Unix epoch."""
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to (tests and simulations)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        """Return the current virtual time."""
        return self._now_ms

    def advance(self, delta_ms: int) -> None:
        """Move time by ``delta_ms`` (may be negative, to model a clock jump)."""
        self._now_ms += delta_ms

    def set(self, now_ms: int) -> None:
        """Jump to ``now_ms``."""
        self._now_ms = now_ms
