"""The JetStream `Transport`: the same contract as the memory transport, over nats-py.

Mapping (design.md §3):

- **Logs.** One stream per repo, ``MESA_<org>_<repo'>``, file storage, ``num_replicas``
  = ``replicas``, ``duplicate_window`` 2 min, ``deny_delete`` (entries are never removed
  one by one), ``allow_direct``. One subject per change:
  ``mesa.<org>.<repo>.log.<change>``. ``repo'`` is the repo name made safe for
  case-insensitive file systems (stream and bucket names become directory names):
  ``_`` becomes ``__``, an upper-case letter ``X`` becomes ``_x``; an encoding longer
  than 120 chars is replaced by ``_0`` + 40 hex chars of the sha256 of the repo name
  (the escape never produces ``_0``). Orgs contain no ``_``, so the mapping is injective
  (up to sha256 collisions for very long names). The stream is created (or its
  subjects, window, replicas and flags are updated) on the first append or subscribe.
- **Append** = ``js.publish`` with a ``Nats-Msg-Id`` header. A PubAck carries no time,
  so the entry's timestamp is read back with a direct get of the acked sequence (a
  second round trip; a leader ``STREAM.MSG.GET`` when a follower has not caught up).
  A duplicate ack (same ``msg_id`` within the window, on any change of the repo)
  returns the original sequence and the original entry's time.
- **Payload limit.** ``max_payload_bytes`` is the server's ``max_payload`` minus
  `HEADER_RESERVE` bytes: NATS counts headers in ``max_payload`` and closes the
  connection of a client that exceeds it, so nothing larger is ever sent.
  ``msg_id`` is limited to `MAX_MSG_ID_BYTES` so its header always fits the reserve.
- **Subscriptions** are ordered push consumers implemented here (not nats-py's
  ``ordered_consumer``, which records a message as delivered before a slow-consumer
  drop and can then skip it silently): an ephemeral, memory-stored R1 consumer with
  flow control and idle heartbeats, filtered on the change's subject, starting at
  ``after_seq + 1``. Every data message must carry the next consumer sequence; a gap,
  a heartbeat reporting a later consumer sequence, missing heartbeats or a reconnect
  replace the consumer with a new one starting after the last delivered stream
  sequence, so deliveries have no gaps and no repeats across server restarts.
  ``prev_seq`` of the first delivery is ``after_seq``: pass 0 or the sequence of an
  entry of this change (a sequence between two entries of the change is reported as
  the first delivery's predecessor instead of the true one).
- **Blobs.** One Object Store bucket per repo, ``mesa_<org>_<repo'>_blobs``; the
  object name is the sha256 hex digest of the raw bytes; the object holds the bytes
  zstd-compressed (level 3) in chunks of at most 128 KiB and at most the server's
  ``max_payload`` minus `HEADER_RESERVE`; put skips an existing object; get
  decompresses and checks the digest. Chunks are read with the ordered consumer above.
- **KV.** One bucket, ``mesa_kv`` (history `KV_HISTORY`), keys as given
  (``<org>.<repo>...``). Revisions are the bucket stream's sequences. Compare-and-set
  uses ``Nats-Expected-Last-Subject-Sequence``; reads go to the stream leader
  (``STREAM.MSG.GET``), so a writer reads its writes and a lost CAS reports the winner's
  revision. A key whose newest message is a delete marker does not exist (revision 0).
- **Tokens** are verified here with the keyring (names first, then the token, then the
  grant), exactly like `transports.memory.MemoryTransport`, until a NATS auth callout
  exists. The injected clock only decides token expiry; entry times come from the server.

Connection: the initial connect must succeed within ``connect_timeout_s`` (else
`UnavailableError`); afterwards nats-py reconnects forever, calls made while disconnected
fail with `UnavailableError` after the request timeout, and subscriptions resume by
themselves. An append that fails with `UnavailableError` may or may not have been stored:
retry it with the same ``msg_id`` within the dedupe window.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

import nats.errors
import nats.js.errors
import zstandard
from nats.aio.client import Client as _NatsClient
from nats.js import api

from engine.content import digest_of
from transports.auth import Claims, Keyring, authorize, authorize_key, key_scope
from transports.base import (
    Appended,
    Clock,
    Delivery,
    InvalidNameError,
    KvEntry,
    LogId,
    MissingError,
    PayloadTooLargeError,
    RevisionMismatchError,
    SystemClock,
    TransportError,
    UnavailableError,
    validate_org,
    validate_repo,
)

if TYPE_CHECKING:
    from transports.base import Transport

_log = logging.getLogger(__name__)

#: Bytes of ``max_payload`` kept for message headers (``Nats-Msg-Id``).
HEADER_RESERVE: Final = 512
#: The longest ``msg_id`` accepted, in UTF-8 bytes.
MAX_MSG_ID_BYTES: Final = 256
#: How long JetStream remembers a ``Nats-Msg-Id`` (seconds).
DUPLICATE_WINDOW_S: Final = 120.0
#: The KV bucket holding every org's keys, and how many revisions it keeps per key.
KV_BUCKET: Final = "mesa_kv"
KV_HISTORY: Final = 5
#: zstd level of stored blobs.
ZSTD_LEVEL: Final = 3

_KV_STREAM: Final = f"KV_{KV_BUCKET}"
_KV_PREFIX: Final = f"$KV.{KV_BUCKET}."
_JS_API: Final = "$JS.API"
_HEARTBEAT_S: Final = 1.0
_STALE_AFTER_S: Final = 3.5
_CONSUMER_INACTIVE_S: Final = 60.0
_CLEANUP_TIMEOUT_S: Final = 1.0
_RECONNECT_WAIT_S: Final = 0.25
_OFFLOAD_BYTES: Final = 1 << 20
_CHUNK_BYTES: Final = 128 * 1024
_CAS_ATTEMPTS: Final = 16
_MAX_REPO_TOKEN: Final = 120

# JetStream API error codes.
_ERR_NO_MESSAGE: Final = 10037
_ERR_STREAM_NOT_FOUND: Final = 10059
_ERR_STREAM_NAME_IN_USE: Final = 10058
_ERR_WRONG_LAST_SEQUENCE: Final = (10071, 10164)

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_KV_TOKEN_RE = re.compile(r"^[A-Za-z0-9_=-]+$")
_TIME_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")
_DELETE_OPS: Final = frozenset({"DEL", "PURGE"})

_CLOSED: Final = object()
_T = TypeVar("_T")

# nats-py errors that mean "the server cannot be reached now".
_UNREACHABLE: Final[tuple[type[BaseException], ...]] = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    asyncio.TimeoutError,
    OSError,
)

_CONNECT_FAILURES: Final[tuple[type[BaseException], ...]] = (*_UNREACHABLE, nats.errors.Error)


# -- names -----------------------------------------------------------------------


def _repo_token(repo: str) -> str:
    """Return the case-insensitive-safe, injective encoding of a repo name."""
    encoded = "".join("__" if c == "_" else f"_{c.lower()}" if "A" <= c <= "Z" else c for c in repo)
    if len(encoded) <= _MAX_REPO_TOKEN:
        return encoded
    return "_0" + hashlib.sha256(repo.encode()).hexdigest()[:40]


def stream_name(org: str, repo: str) -> str:
    """Return the name of the log stream of ``org/repo``."""
    return f"MESA_{validate_org(org)}_{_repo_token(validate_repo(repo))}"


def log_subject(log: LogId) -> str:
    """Return the subject of a change's log."""
    return f"mesa.{log.org}.{log.repo}.log.{log.change}"


def _log_subjects(org: str, repo: str) -> str:
    return f"mesa.{org}.{repo}.log.*"


def blob_bucket(org: str, repo: str) -> str:
    """Return the Object Store bucket holding the blobs of ``org/repo``."""
    return f"mesa_{validate_org(org)}_{_repo_token(validate_repo(repo))}_blobs"


def _kv_filter(prefix: str, org: str) -> str | None:
    """Return a KV subject filter covering the keys of ``org`` that start with ``prefix``.

    None means no such key can exist. The filter may cover more keys than the prefix
    (a partial last token); callers still filter by prefix.
    """
    head, dot, _ = prefix.rpartition(".")
    if not dot:
        return f"{org}.>" if org.startswith(prefix) else None
    tokens = head.split(".")
    if tokens[0] != org or not all(_KV_TOKEN_RE.match(t) for t in tokens):
        return None
    return f"{head}.>"


# -- small helpers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _AckInfo:
    """What a JetStream message's reply subject says about it."""

    stream_seq: int
    consumer_seq: int
    time_ns: int
    pending: int


def _ack_info(reply: str | None) -> _AckInfo | None:
    """Parse ``$JS.ACK.[<domain>.<hash>.]<stream>.<consumer>.<n>.<sseq>.<cseq>.<ts>.<pending>``."""
    if not reply or not reply.startswith("$JS.ACK."):
        return None
    tokens = reply.split(".")
    if len(tokens) == 9:
        base = 2
    elif len(tokens) >= 11:
        base = 4
    else:
        return None
    try:
        return _AckInfo(
            stream_seq=int(tokens[base + 3]),
            consumer_seq=int(tokens[base + 4]),
            time_ns=int(tokens[base + 5]),
            pending=int(tokens[base + 6]),
        )
    except ValueError:
        return None


def _parse_header_block(raw: bytes) -> dict[str, str]:
    """Parse a ``NATS/1.0`` header block (as stored in a stream) into a dict."""
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers


def _check_msg_id(msg_id: str) -> None:
    if not isinstance(msg_id, str) or not msg_id:
        raise ValueError("msg_id must be a non-empty string")
    if len(msg_id.encode()) > MAX_MSG_ID_BYTES:
        raise ValueError(f"msg_id must be at most {MAX_MSG_ID_BYTES} bytes")
    if "\r" in msg_id or "\n" in msg_id:
        raise ValueError("msg_id must not contain line breaks")


def _digest_and_compress(data: bytes) -> tuple[str, bytes]:
    return digest_of(data), zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)


def _decompress_and_verify(compressed: bytes, digest: str) -> bytes:
    try:
        data: bytes = zstandard.ZstdDecompressor().decompress(compressed)
    except zstandard.ZstdError as exc:
        raise TransportError(f"blob {digest} is corrupt: {exc}") from exc
    if digest_of(data) != digest:
        raise TransportError(f"blob {digest} is corrupt: its bytes hash differently")
    return data


async def _offload(size: int, fn: Callable[..., _T], *args: Any) -> _T:
    """Run CPU-heavy ``fn`` in a thread when ``size`` is large (zstd and hashlib drop the GIL)."""
    if size > _OFFLOAD_BYTES:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


class _ApiError(TransportError):
    """A JetStream API error response."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        self.code = code
        self.err_code = err_code
        super().__init__(f"JetStream API error {code}/{err_code}: {description}")


class _WrongLastSequenceError(Exception):
    """A KV compare-and-set found another revision."""


@contextlib.contextmanager
def _nats_errors(what: str) -> Iterator[None]:
    """Translate nats-py exceptions raised inside the block into transport errors."""
    try:
        yield
    except TransportError:
        raise
    except _UNREACHABLE as exc:
        raise UnavailableError(f"{what}: {exc!r}") from exc
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(f"{what}: {exc!r}") from exc
    except nats.js.errors.APIError as exc:
        raise _ApiError(exc.code or 0, exc.err_code or 0, str(exc.description)) from exc
    except nats.errors.Error as exc:
        raise TransportError(f"{what}: {exc!r}") from exc


# -- subscriptions ---------------------------------------------------------------


class JetStreamSubscription:
    """An ordered subscription to one subject of a stream (see the module docstring).

    Iterate it with ``async for``; `aclose` ends the iteration promptly. Deliveries
    are queued without bound (like the memory transport): flow control is answered as
    soon as a message is queued.
    """

    def __init__(
        self, owner: JetStreamTransport, stream: str, subject: str, after_seq: int
    ) -> None:
        self._owner = owner
        self._stream = stream
        self._subject = subject
        self._last_seq = after_seq
        self._queue: asyncio.Queue[Delivery | object] = asyncio.Queue()
        self._closed = False
        self._healthy = False
        self._generation = 0
        self._consumer_seq = 0
        self._inbox: Any = None
        self._consumer: str | None = None
        self._last_activity = time.monotonic()
        self._wake = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self

    async def __anext__(self) -> Delivery:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if self._closed or not isinstance(item, Delivery):
            raise StopAsyncIteration
        return item

    # -- lifecycle ------------------------------------------------------------

    async def aclose(self) -> None:
        """End the subscription and delete its consumer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._generation += 1
        self._queue.put_nowait(_CLOSED)
        self._owner._forget(self)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
        await self._drop()

    async def start(self) -> None:
        """Create the first consumer and the task that keeps one alive."""
        self._healthy = await self._create_consumer()
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"mesa-subscription-{self._subject}"
        )

    def request_reset(self, reason: str) -> None:
        """Abandon the current consumer; the supervisor replaces it."""
        if self._closed:
            return
        _log.debug("resetting the consumer of %s: %s", self._subject, reason)
        self._generation += 1
        self._healthy = False
        self._wake.set()

    async def _supervise(self) -> None:
        nc = self._owner._nc
        while not self._closed:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _HEARTBEAT_S)
            self._wake.clear()
            if self._closed:
                return
            if self._healthy and time.monotonic() - self._last_activity > _STALE_AFTER_S:
                _log.debug("no heartbeat from the consumer of %s: replacing it", self._subject)
                self._healthy = False
            if self._healthy or not nc.is_connected:
                continue
            await self._drop()
            try:
                self._healthy = await self._create_consumer()
            except TransportError as exc:
                _log.info("cannot resume the subscription to %s yet: %s", self._subject, exc)
            except Exception:  # keep the subscription alive whatever went wrong; retry later
                _log.exception("cannot resume the subscription to %s", self._subject)

    async def _create_consumer(self) -> bool:
        """Create a consumer from the last delivered sequence on; False if reset meanwhile."""
        nc = self._owner._nc
        self._generation += 1
        generation = self._generation
        self._consumer_seq = 0

        async def on_message(msg: Any) -> None:
            if generation == self._generation and not self._closed:
                await self._on_message(msg)

        config = api.ConsumerConfig(
            description="mesafs ordered subscription",
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=self._last_seq + 1,
            ack_policy=api.AckPolicy.NONE,
            filter_subject=self._subject,
            flow_control=True,
            idle_heartbeat=_HEARTBEAT_S,
            inactive_threshold=_CONSUMER_INACTIVE_S,
            mem_storage=True,
            num_replicas=1,
        )
        with _nats_errors(f"subscribe to {self._subject}"):
            config.deliver_subject = nc.new_inbox()
            self._inbox = await nc.subscribe(
                config.deliver_subject, cb=on_message, pending_msgs_limit=0, pending_bytes_limit=0
            )
            info = await self._owner._js.add_consumer(self._stream, config=config)
        self._consumer = info.name
        self._last_activity = time.monotonic()
        return generation == self._generation

    async def _drop(self) -> None:
        """Unsubscribe the current inbox and delete the current consumer (best effort)."""
        inbox, consumer = self._inbox, self._consumer
        self._inbox = self._consumer = None
        if inbox is not None:
            with contextlib.suppress(nats.errors.Error):
                await inbox.unsubscribe()
        if consumer is not None:
            await self._owner._delete_consumer(self._stream, consumer)

    async def _on_message(self, msg: Any) -> None:
        self._last_activity = time.monotonic()
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is not None and not msg.data:
            await self._on_status(msg, status, headers)
            return
        ack = _ack_info(msg.reply)
        if ack is None:
            return
        if ack.consumer_seq != self._consumer_seq + 1:
            self.request_reset(f"consumer sequence {ack.consumer_seq} after {self._consumer_seq}")
            return
        self._consumer_seq = ack.consumer_seq
        if ack.stream_seq <= self._last_seq:
            return
        self._queue.put_nowait(
            Delivery(
                seq=ack.stream_seq,
                prev_seq=self._last_seq,
                time_ms=ack.time_ns // 1_000_000,
                payload=msg.data,
            )
        )
        self._last_seq = ack.stream_seq

    async def _on_status(self, msg: Any, status: str, headers: dict[str, str]) -> None:
        if status != "100":
            self.request_reset(f"status {status} {headers.get('Description', '')}")
            return
        nc = self._owner._nc
        for reply in (msg.reply, headers.get("Nats-Consumer-Stalled")):
            if reply:
                with contextlib.suppress(nats.errors.Error):
                    await nc.publish(reply, b"")
        last = headers.get("Nats-Last-Consumer")
        if last is not None and last.isdigit() and int(last) != self._consumer_seq:
            self.request_reset(f"heartbeat reports consumer sequence {last}")


# -- the transport ---------------------------------------------------------------


class JetStreamTransport:
    """A `Transport` over NATS JetStream (see the module docstring).

    Create it with `connect`.
    """

    max_payload_bytes: int

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
        self._replicas = replicas
        self._timeout = request_timeout_s
        self._closed = False
        self._nc: Any = _NatsClient()
        self._js: Any = None
        self.max_payload_bytes = 0
        self._subscriptions: set[JetStreamSubscription] = set()
        self._ready_streams: set[str] = set()
        self._stream_locks: dict[str, asyncio.Lock] = {}
        self._stores: dict[str, Any] = {}
        self._kv_ready = False

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
        await transport._connect(
            server_list,
            connect_timeout_s,
            name=name,
            user=user,
            password=password,
            token=nats_token,
        )
        return transport

    async def _connect(self, servers: list[str], connect_timeout_s: float, **options: Any) -> None:
        nc = self._nc
        try:
            async with asyncio.timeout(connect_timeout_s):
                await nc.connect(
                    servers=servers,
                    connect_timeout=max(0.5, connect_timeout_s / len(servers)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=_RECONNECT_WAIT_S,
                    ping_interval=10,
                    max_outstanding_pings=3,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **options,
                )
                self._js = nc.jetstream(timeout=self._timeout)
                await self._js.account_info()
        except _CONNECT_FAILURES as exc:
            last = nc.last_error
            with contextlib.suppress(Exception):
                await nc.close()
            if isinstance(exc, nats.js.errors.APIError | nats.errors.NoRespondersError):
                detail = "JetStream is not enabled on the server"
            elif last is None:
                detail = "no server completed the NATS handshake"
            else:
                detail = f"last error: {last!r}"
            raise UnavailableError(
                f"cannot reach NATS JetStream at {', '.join(servers)} "
                f"within {connect_timeout_s}s ({detail})"
            ) from exc
        self.max_payload_bytes = nc.max_payload - HEADER_RESERVE

    async def _on_error(self, exc: Exception) -> None:
        _log.debug("nats: %r", exc)

    async def _on_disconnected(self) -> None:
        if not self._closed:
            _log.info("disconnected from NATS; reconnecting")

    async def _on_reconnected(self) -> None:
        url = self._nc.connected_url
        _log.info("reconnected to NATS at %s", url.netloc if url is not None else "?")
        # The server may have lost or replaced streams and consumers: check again.
        self._ready_streams.clear()
        self._stores.clear()
        self._kv_ready = False
        for subscription in list(self._subscriptions):
            subscription.request_reset("reconnected")

    def _forget(self, subscription: JetStreamSubscription) -> None:
        self._subscriptions.discard(subscription)

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
            The entry's sequence and the server's timestamp, or the original ones for a
            repeat.

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo read-write.
            PayloadTooLargeError: ``payload`` exceeds ``max_payload_bytes``.
            ValueError: ``msg_id`` is empty or too long.
            UnavailableError: the server did not answer in time (the append may have
                happened: retry with the same ``msg_id``).
        """
        self._authorize(token, log.org, log.repo, write=True)
        limit = min(self.max_payload_bytes, self._nc.max_payload - HEADER_RESERVE)
        if len(payload) > limit:
            raise PayloadTooLargeError(
                f"entry of {len(payload)} bytes exceeds the maximum of {limit}"
            )
        _check_msg_id(msg_id)
        stream = await self._ensure_stream(log.org, log.repo)
        subject = log_subject(log)
        ack = await self._publish_entry(subject, bytes(payload), msg_id)
        if ack is None:
            # The stream vanished (or the server was replaced): create it and retry.
            self._ready_streams.discard(stream)
            await self._ensure_stream(log.org, log.repo)
            ack = await self._publish_entry(subject, bytes(payload), msg_id)
            if ack is None:
                raise UnavailableError(f"no stream stores {subject}")
        if ack.stream != stream:
            raise TransportError(f"{subject} was stored by stream {ack.stream}, not {stream}")
        # The PubAck carries no timestamp and reading it back costs a second round
        # trip per append; the entry's delivery carries the server's time.
        return Appended(seq=ack.seq, time_ms=None)

    async def _publish_entry(self, subject: str, payload: bytes, msg_id: str) -> Any:
        """Publish one entry and return its PubAck, or None when no stream takes it."""
        with _nats_errors(f"append to {subject}"):
            try:
                return await self._js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
            except nats.js.errors.NoStreamResponseError:
                return None

    async def last_seq(self, token: str, log: LogId) -> int:
        """Return the sequence of the newest entry of ``log`` (0 when empty).

        Raises:
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo.
            UnavailableError: the server did not answer in time.
        """
        self._authorize(token, log.org, log.repo, write=False)
        message = await self._get_message(
            stream_name(log.org, log.repo), {"last_by_subj": log_subject(log)}
        )
        return 0 if message is None else int(message["seq"])

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
        self._authorize(token, log.org, log.repo, write=False)
        if after_seq < 0:
            raise ValueError(f"after_seq must not be negative, got {after_seq}")
        stream = await self._ensure_stream(log.org, log.repo)
        return await self._subscribe(stream, log_subject(log), after_seq)

    async def _subscribe(self, stream: str, subject: str, after_seq: int) -> JetStreamSubscription:
        subscription = JetStreamSubscription(self, stream, subject, after_seq)
        self._subscriptions.add(subscription)
        try:
            await subscription.start()
        except BaseException:
            await subscription.aclose()
            raise
        return subscription

    # -- blobs ----------------------------------------------------------------

    async def put_blob(self, token: str, org: str, repo: str, data: bytes) -> str:
        """Store ``data`` once and return its sha256 digest (idempotent).

        Raises:
            InvalidNameError: ``org`` or ``repo`` is not a valid name.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the repo read-write.
            UnavailableError: the server did not answer in time.
        """
        self._authorize(token, org, repo, write=True)
        raw = bytes(data)
        digest, compressed = await _offload(len(raw), _digest_and_compress, raw)
        store = await self._blob_store(org, repo, create=True)
        assert store is not None
        with _nats_errors(f"store blob {digest}"):
            try:
                await store.get_info(digest)
            except nats.js.errors.ObjectNotFoundError:
                # Chunks must fit the server's max_payload, which may be below
                # nats-py's default chunk size.
                chunk = min(_CHUNK_BYTES, self._nc.max_payload - HEADER_RESERVE)
                meta = api.ObjectMeta(
                    name=digest,
                    description="zstd",
                    options=api.ObjectMetaOptions(max_chunk_size=chunk),
                )
                await store.put(digest, compressed, meta=meta)
        return digest

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
        self._authorize(token, org, repo, write=False)
        missing = MissingError(f"no blob {digest!r} in {org}/{repo}")
        if not isinstance(digest, str) or _DIGEST_RE.match(digest) is None:
            raise missing
        store = await self._blob_store(org, repo, create=False)
        if store is None:
            raise missing
        bucket = blob_bucket(org, repo)
        for attempt in range(2):
            with _nats_errors(f"read blob {digest}"):
                try:
                    info = await store.get_info(digest)
                except nats.js.errors.ObjectNotFoundError:
                    raise missing from None
            try:
                compressed = await self._read_chunks(bucket, info)
            except UnavailableError:
                # A concurrent put of the same digest may have replaced the chunks.
                if attempt:
                    raise
                continue
            return await _offload(len(compressed), _decompress_and_verify, compressed, digest)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read_chunks(self, bucket: str, info: Any) -> bytes:
        size, chunks = int(info.size or 0), int(info.chunks or 0)
        if size == 0:
            return b""
        subscription = await self._subscribe(f"OBJ_{bucket}", f"$O.{bucket}.C.{info.nuid}", 0)
        parts: list[bytes] = []
        try:
            entries = aiter(subscription)
            for _ in range(chunks):
                try:
                    delivery = await asyncio.wait_for(anext(entries), self._timeout)
                except (TimeoutError, StopAsyncIteration) as exc:
                    raise UnavailableError(f"blob chunks of {info.name} did not arrive") from exc
                parts.append(delivery.payload)
        finally:
            await subscription.aclose()
        data = b"".join(parts)
        if len(data) != size:
            raise TransportError(f"blob {info.name}: read {len(data)} bytes, expected {size}")
        return data

    async def _blob_store(self, org: str, repo: str, *, create: bool) -> Any:
        bucket = blob_bucket(org, repo)
        store = self._stores.get(bucket)
        if store is not None:
            return store
        with _nats_errors(f"open blob bucket {bucket}"):
            try:
                store = await self._js.object_store(bucket)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
                config = api.ObjectStoreConfig(
                    description=f"mesafs blobs of {org}/{repo} (zstd, named by sha256)",
                    storage=api.StorageType.FILE,
                    replicas=self._replicas,
                )
                store = await self._js.create_object_store(bucket, config=config)
        self._stores[bucket] = store
        return store

    # -- KV -------------------------------------------------------------------

    async def kv_get(self, token: str, key: str) -> KvEntry | None:
        """Return the record at ``key``, or None.

        Raises:
            InvalidNameError: ``key`` is not ``<org>.<repo>[.<token>...]``.
            TokenRejectedError: the token is invalid or expired.
            PermissionDeniedError: the token does not grant the key's repo.
            UnavailableError: the server did not answer in time.
        """
        self._authorize_key(token, key, write=False)
        current = await self._kv_read(key)
        if current is None or current[1] is None:
            return None
        return KvEntry(key, current[1], current[0])

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
        self._authorize_key(token, key, write=True)
        if len(value) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"value of {len(value)} bytes exceeds {self.max_payload_bytes}"
            )
        await self._ensure_kv()
        if expected_revision is None:
            return await self._kv_publish(key, bytes(value), {})
        if expected_revision < 0:
            raise RevisionMismatchError(key, expected_revision, await self._kv_live_revision(key))
        last = expected_revision
        for _ in range(_CAS_ATTEMPTS):
            try:
                return await self._kv_publish(
                    key, bytes(value), {"Nats-Expected-Last-Subject-Sequence": str(last)}
                )
            except _WrongLastSequenceError:
                current = await self._kv_read(key)
            if current is not None and current[1] is not None:
                raise RevisionMismatchError(key, expected_revision, current[0])
            if expected_revision != 0:
                raise RevisionMismatchError(key, expected_revision, 0)
            # "Must not exist" and the key is deleted: compare against its delete marker.
            last = 0 if current is None else current[0]
        raise RevisionMismatchError(key, expected_revision, await self._kv_live_revision(key))

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
        self._authorize_key(token, key, write=True)
        missing = MissingError(f"no KV key {key!r}")
        if expected_revision is not None and expected_revision > 0:
            await self._ensure_kv()
            try:
                await self._kv_delete_marker(key, expected_revision)
            except _WrongLastSequenceError:
                raise RevisionMismatchError(
                    key, expected_revision, await self._kv_live_revision(key)
                ) from None
            return
        for _ in range(_CAS_ATTEMPTS):
            revision = await self._kv_live_revision(key)
            if expected_revision is not None and revision != expected_revision:
                raise RevisionMismatchError(key, expected_revision, revision)
            if revision == 0:
                raise missing
            with contextlib.suppress(_WrongLastSequenceError):
                await self._kv_delete_marker(key, revision)
                return
        raise UnavailableError(f"{key} changed {_CAS_ATTEMPTS} times while it was being deleted")

    async def kv_keys(self, token: str, prefix: str) -> list[str]:
        """Return the keys that start with ``prefix`` and that the token may read, sorted.

        Keys of repos the token does not grant are left out, not refused.

        Raises:
            TokenRejectedError: the token is invalid or expired.
            UnavailableError: the server did not answer in time.
        """
        claims = self._verify(token)
        subject_filter = _kv_filter(prefix, claims.org)
        if subject_filter is None:
            return []
        keys: list[str] = []
        for subject, headers in await self._last_per_subject(
            _KV_STREAM, _KV_PREFIX + subject_filter
        ):
            key = subject.removeprefix(_KV_PREFIX)
            if headers.get("KV-Operation") in _DELETE_OPS or "Nats-Marker-Reason" in headers:
                continue
            if key.startswith(prefix) and self._may_read(claims, key):
                keys.append(key)
        return sorted(keys)

    @staticmethod
    def _may_read(claims: Claims, key: str) -> bool:
        try:
            org, repo = key_scope(key)
        except InvalidNameError:
            return False
        return claims.org == org and claims.access(repo) is not None

    async def _kv_read(self, key: str) -> tuple[int, bytes | None] | None:
        """Return (revision, value) of the newest message of ``key``, or None if none.

        The value is None when that message is a delete marker.
        """
        message = await self._get_message(_KV_STREAM, {"last_by_subj": _KV_PREFIX + key})
        if message is None:
            return None
        revision = int(message["seq"])
        headers = _parse_header_block(base64.b64decode(message.get("hdrs") or ""))
        if headers.get("KV-Operation") in _DELETE_OPS or "Nats-Marker-Reason" in headers:
            return revision, None
        return revision, base64.b64decode(message.get("data") or "")

    async def _kv_live_revision(self, key: str) -> int:
        current = await self._kv_read(key)
        return 0 if current is None or current[1] is None else current[0]

    async def _kv_publish(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        try:
            with _nats_errors(f"write KV key {key}"):
                ack = await self._js.publish(_KV_PREFIX + key, value, headers=headers or None)
        except _ApiError as exc:
            if exc.err_code in _ERR_WRONG_LAST_SEQUENCE:
                raise _WrongLastSequenceError(str(exc)) from exc
            raise
        return int(ack.seq)

    async def _kv_delete_marker(self, key: str, last: int) -> None:
        await self._kv_publish(
            key, b"", {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(last)}
        )

    async def _ensure_kv(self) -> None:
        if self._kv_ready:
            return
        with _nats_errors(f"open KV bucket {KV_BUCKET}"):
            try:
                await self._js.stream_info(_KV_STREAM)
            except nats.js.errors.NotFoundError:
                config = api.KeyValueConfig(
                    bucket=KV_BUCKET,
                    description="mesafs bookmarks and metadata",
                    history=KV_HISTORY,
                    storage=api.StorageType.FILE,
                    replicas=self._replicas,
                )
                try:
                    await self._js.create_key_value(config=config)
                except nats.js.errors.APIError as exc:
                    if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                        raise
        self._kv_ready = True

    async def _last_per_subject(
        self, stream: str, subject_filter: str
    ) -> list[tuple[str, dict[str, str]]]:
        """Return (subject, headers) of the newest message of each subject matching."""
        for _ in range(3):
            try:
                return await self._last_per_subject_once(stream, subject_filter)
            except _ConsumerGapError:
                continue
        raise UnavailableError(f"could not list {subject_filter} without gaps")

    async def _last_per_subject_once(
        self, stream: str, subject_filter: str
    ) -> list[tuple[str, dict[str, str]]]:
        nc = self._nc
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def on_message(msg: Any) -> None:
            queue.put_nowait(msg)

        inbox: Any = None
        consumer: str | None = None
        found: list[tuple[str, dict[str, str]]] = []
        try:
            with _nats_errors(f"list {subject_filter}"):
                deliver = nc.new_inbox()
                inbox = await nc.subscribe(
                    deliver, cb=on_message, pending_msgs_limit=0, pending_bytes_limit=0
                )
                config = api.ConsumerConfig(
                    description="mesafs key listing",
                    deliver_subject=deliver,
                    deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
                    ack_policy=api.AckPolicy.NONE,
                    filter_subject=subject_filter,
                    headers_only=True,
                    inactive_threshold=_CONSUMER_INACTIVE_S,
                    mem_storage=True,
                    num_replicas=1,
                )
                try:
                    info = await self._js.add_consumer(stream, config=config)
                except nats.js.errors.NotFoundError:
                    return []  # no such stream: nothing stored yet
                consumer = info.name
                if not info.num_pending and not (info.delivered and info.delivered.consumer_seq):
                    return []
                expected = 1
                while True:
                    msg = await asyncio.wait_for(queue.get(), self._timeout)
                    ack = _ack_info(msg.reply)
                    if ack is None:
                        continue
                    if ack.consumer_seq != expected:
                        raise _ConsumerGapError
                    expected += 1
                    found.append((msg.subject, dict(msg.headers or {})))
                    if ack.pending == 0:
                        return found
        finally:
            if inbox is not None:
                with contextlib.suppress(nats.errors.Error):
                    await inbox.unsubscribe()
            if consumer is not None:
                await self._delete_consumer(stream, consumer)

    # -- streams and messages -------------------------------------------------

    async def _ensure_stream(self, org: str, repo: str) -> str:
        """Create or update the log stream of ``org/repo`` once per connection."""
        name = stream_name(org, repo)
        if name in self._ready_streams:
            return name
        lock = self._stream_locks.setdefault(name, asyncio.Lock())
        async with lock:
            if name not in self._ready_streams:
                with _nats_errors(f"create stream {name}"):
                    await self._create_or_update_stream(name, org, repo)
                self._ready_streams.add(name)
        return name

    async def _create_or_update_stream(self, name: str, org: str, repo: str) -> None:
        subjects = [_log_subjects(org, repo)]
        try:
            info = await self._js.stream_info(name)
        except nats.js.errors.NotFoundError:
            config = api.StreamConfig(
                name=name,
                description=f"mesafs log of {org}/{repo}",
                subjects=subjects,
                retention=api.RetentionPolicy.LIMITS,
                storage=api.StorageType.FILE,
                num_replicas=self._replicas,
                duplicate_window=DUPLICATE_WINDOW_S,
                allow_direct=True,
                deny_delete=True,
            )
            try:
                await self._js.add_stream(config=config)
                return
            except nats.js.errors.APIError as exc:
                if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                    raise
            info = await self._js.stream_info(name)
        config = info.config
        if config.storage not in (api.StorageType.FILE, "file"):
            raise TransportError(f"stream {name} exists with {config.storage} storage, not file")
        wanted = {
            "subjects": subjects,
            "num_replicas": self._replicas,
            "duplicate_window": DUPLICATE_WINDOW_S,
            "allow_direct": True,
            "deny_delete": True,
        }
        if any(getattr(config, field) != value for field, value in wanted.items()):
            _log.info("updating stream %s to %s", name, wanted)
            for field, value in wanted.items():
                setattr(config, field, value)
            await self._js.update_stream(config=config)

    async def _delete_consumer(self, stream: str, consumer: str) -> None:
        """Delete a consumer, best effort: the server drops inactive ones anyway."""
        if not self._nc.is_connected:
            return
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            await self._nc.request(
                f"{_JS_API}.CONSUMER.DELETE.{stream}.{consumer}", b"", timeout=_CLEANUP_TIMEOUT_S
            )

    async def _api(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send one JetStream API request and return its JSON response."""
        with _nats_errors(subject):
            msg = await self._nc.request(
                f"{_JS_API}.{subject}", json.dumps(body).encode(), timeout=self._timeout
            )
        response: dict[str, Any] = json.loads(msg.data)
        error = response.get("error")
        if error:
            raise _ApiError(
                int(error.get("code", 0)),
                int(error.get("err_code", 0)),
                error.get("description", ""),
            )
        return response

    async def _get_message(self, stream: str, query: dict[str, Any]) -> dict[str, Any] | None:
        """Return a stored message from the stream leader, or None if there is none."""
        try:
            response = await self._api(f"STREAM.MSG.GET.{stream}", query)
        except _ApiError as exc:
            if exc.err_code in (_ERR_NO_MESSAGE, _ERR_STREAM_NOT_FOUND):
                return None
            raise
        message: dict[str, Any] = response["message"]
        return message

    async def aclose(self) -> None:
        """End every subscription and close the connection (idempotent).

        Later calls raise `UnavailableError`.
        """
        if self._closed:
            return
        self._closed = True
        subscriptions = list(self._subscriptions)
        if subscriptions:
            await asyncio.gather(*(s.aclose() for s in subscriptions))
        with contextlib.suppress(Exception):
            await self._nc.close()

    # -- internals ------------------------------------------------------------

    def _verify(self, token: str) -> Claims:
        if self._closed:
            raise UnavailableError("the transport is closed")
        return self._keyring.verify(token, self._clock.now_ms())

    def _authorize(self, token: str, org: str, repo: str, *, write: bool) -> Claims:
        return authorize(
            self._keyring, self._clock.now_ms(), token, org, repo, write=write, closed=self._closed
        )

    def _authorize_key(self, token: str, key: str, *, write: bool) -> None:
        authorize_key(
            self._keyring, self._clock.now_ms(), token, key, write=write, closed=self._closed
        )


class _ConsumerGapError(Exception):
    """A one-shot listing consumer skipped a message."""


if TYPE_CHECKING:

    def _conforms(transport: JetStreamTransport) -> Transport:
        """Let mypy prove that `JetStreamTransport` satisfies the `Transport` protocol."""
        return transport
