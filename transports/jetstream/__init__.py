"""The JetStream `Transport`: the same contract as the memory transport, over nats-py.

Modules:
    _transport: `JetStreamTransport`, the facade: checks every call's names and token
        (with `transports.auth`, like the memory transport) and delegates it.
    _connection: the shared NATS connection (connect, reconnect, caches dropped on
        reconnect), nats-py errors translated into `transports.base` errors, raw
        JetStream API requests.
    _names: stream, subject and bucket names of a repo; ``msg_id`` and digest checks.
    _log: the log stream of a repo (created or updated), append, last sequence,
        subscribe.
    _subscription: `JetStreamSubscription`, the ordered push consumer that logs and
        blob reads use.
    _blobs: the Object Store bucket of a repo: streamed puts, pulled reads.
    _blobformat: a blob's stored format (1 MiB zstd frames), digests, its threads.
    _kv: the KV bucket, compare-and-set, key listings.
    callout: the NATS auth callout service (`CalloutService`) and its server config
        (`callout_config`); public, imported as ``transports.jetstream.callout``.
    _calloutjwt: the NATS JWTs of the callout (request verification, response signing).

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
  so `Appended.time_ms` is None (reading the entry back would cost a second round trip
  per append); the entry's `Delivery` carries the server's time. A duplicate ack (same
  ``msg_id`` within the window, on any change of the repo) returns the original
  sequence.
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
  cut in pieces of at most 1 MiB, each a zstd frame (level 3), stored in chunks of at
  most 128 KiB and at most the server's ``max_payload`` minus `HEADER_RESERVE`, no
  chunk holding bytes of two frames. Puts stream (hash and compress piece by piece,
  the object's meta published last, nothing left by a refused or failed put); the
  whole-bytes put skips an existing object. Reads pull the chunks a few at a time
  through an ephemeral pull consumer and check the digest by the end of the stream.
  A blob holds at most ``max_blob_bytes`` (1 TiB by default).
- **KV.** One bucket per repo, ``mesa_<org>_<repo'>_kv`` (history `KV_HISTORY`), keys as
  given (``<org>.<repo>...``); the org's repo index ``mesa_<org>_repos``; API key
  records in ``mesa_keys``. A repo's log stream, KV bucket, blob store and index entry
  are provisioned together (`_provision`). Revisions are the bucket stream's sequences.
  Compare-and-set uses ``Nats-Expected-Last-Subject-Sequence``; reads go to the stream
  leader (``STREAM.MSG.GET``), so a writer reads its writes and a lost CAS reports the
  winner's revision. A key whose newest message is a delete marker does not exist
  (revision 0).
- **Tokens.** A trusted transport (NATS credentials) verifies them here with the keyring
  (names first, then the token, then the grant), exactly like
  `transports.memory.MemoryTransport`: both call the one set of checks in
  `transports.auth`. A token-mode transport (``present_tokens``) opens one connection
  per token and the server's auth callout (`service`) enforces it; the transport checks
  against what the service says the token grants only to fail early with the same
  errors. The injected clock only decides token expiry; entry times come from the server.

Connection: the initial connect must succeed within ``connect_timeout_s`` (else
`UnavailableError`); afterwards nats-py reconnects to the same URLs forever, however long
the servers are gone, and subscriptions resume by themselves from the last delivered
sequence (a restarted server has lost their consumers: new ones are created). A call made
while disconnected waits for the reconnect at most the request timeout, then fails with
`UnavailableError` having sent nothing; nothing is queued to be sent on a later
connection. An append that fails with `UnavailableError` after it was sent may or may not
have been stored: retry it with the same ``msg_id`` within the dedupe window (2 min from
the first attempt; JetStream rebuilds the window from its file store when a stream
recovers, so it holds across a server restart).
"""

from __future__ import annotations

from transports.jetstream._blobformat import ZSTD_LEVEL
from transports.jetstream._names import (
    CONTROL_PREFIX,
    HEADER_RESERVE,
    KEYS_BUCKET,
    MAX_MSG_ID_BYTES,
    blob_bucket,
    inbox_prefix,
    index_bucket,
    kv_bucket,
    kv_stream,
    log_subject,
    stream_name,
)
from transports.jetstream._provision import DUPLICATE_WINDOW_S, KV_HISTORY
from transports.jetstream._subscription import JetStreamSubscription
from transports.jetstream._transport import JetStreamTransport

__all__ = [
    "DUPLICATE_WINDOW_S",
    "CONTROL_PREFIX",
    "HEADER_RESERVE",
    "KEYS_BUCKET",
    "KV_HISTORY",
    "MAX_MSG_ID_BYTES",
    "ZSTD_LEVEL",
    "JetStreamSubscription",
    "JetStreamTransport",
    "blob_bucket",
    "inbox_prefix",
    "index_bucket",
    "kv_bucket",
    "kv_stream",
    "log_subject",
    "stream_name",
]
