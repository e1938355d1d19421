"""KV: one bucket per repo, revisions from the bucket's stream, compare-and-set.

Invariants:

- The records of ``org/repo`` live in its bucket, `kv_bucket` (history `KV_HISTORY`,
  file storage, ``replicas`` replicas), provisioned with the rest of the repo's storage
  by the first write (`_provision`); keys as given (``<org>.<repo>...``). API key
  records (``_keys.<id>``) live in `KEYS_BUCKET`. Revisions are the bucket stream's
  sequences, so a key's revisions increase strictly, even across a delete and a
  re-create.
- Compare-and-set uses ``Nats-Expected-Last-Subject-Sequence``; expected revision 0
  ("must not exist") of a deleted key compares against its delete marker. A lost CAS
  raises `RevisionMismatchError` with the winner's revision.
- Reads go to the stream leader (``STREAM.MSG.GET``), so a writer reads its writes
  and a lost CAS reports the winner's revision.
- A key whose newest message is a delete marker (``KV-Operation`` ``DEL`` or
  ``PURGE``, or a ``Nats-Marker-Reason``) does not exist (revision 0). A delete writes
  a marker, which consumes a revision.
- A listing reads the newest message of each matching subject, headers only, through
  a one-shot consumer, and starts again (up to 3 times) if that consumer skipped a
  message: it never returns a list with a hole. Keys of repos the token does not grant
  are left out (`transports.auth.may_read_key`). A listing across repos (a prefix
  naming no repo, like ``<org>.``) walks the org's repo index (`index_bucket`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.js import api

from transports.auth import ALL_REPOS, Claims, may_read_key
from transports.base import (
    KvEntry,
    MissingError,
    PayloadTooLargeError,
    RevisionMismatchError,
    UnavailableError,
)
from transports.jetstream._connection import _Connection
from transports.jetstream._errors import _ERR_WRONG_LAST_SEQUENCE, _ApiError, _nats_errors
from transports.jetstream._names import (
    KEYS_BUCKET,
    _kv_filter,
    bucket_of_key,
    index_bucket,
    kv_bucket,
    kv_stream,
    kv_subject,
)
from transports.jetstream._provision import KV_HISTORY, _Provision
from transports.jetstream._subscription import _CONSUMER_INACTIVE_S, _ack_info

__all__ = ["KV_HISTORY", "_Kv"]

_CAS_ATTEMPTS: Final = 16
_LISTING_ATTEMPTS: Final = 3
_DELETE_OPS: Final = frozenset({"DEL", "PURGE"})


class _WrongLastSequenceError(Exception):
    """A KV compare-and-set found another revision."""


class _ConsumerGapError(Exception):
    """A one-shot listing consumer skipped a message."""


def _parse_header_block(raw: bytes) -> dict[str, str]:
    """Parse a ``NATS/1.0`` header block (as stored in a stream) into a dict."""
    headers: dict[str, str] = {}
    for line in raw.decode("utf-8", "replace").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers


def _is_delete_marker(headers: dict[str, str]) -> bool:
    """Return whether a KV message with ``headers`` deletes its key."""
    return headers.get("KV-Operation") in _DELETE_OPS or "Nats-Marker-Reason" in headers


class _Kv:
    """The KV bucket over one connection (names and tokens checked by the caller).

    Args:
        conn: the shared connection.
        provision: creates a repo's storage before its first write.
    """

    def __init__(self, conn: _Connection, provision: _Provision) -> None:
        self._conn = conn
        self._provision = provision

    async def get(self, key: str) -> KvEntry | None:
        """Return the record at ``key``, or None."""
        current = await self._read(key)
        if current is None or current[1] is None:
            return None
        return KvEntry(key, current[1], current[0])

    async def put(
        self, key: str, value: bytes, expected_revision: int | None, *, max_payload_bytes: int
    ) -> int:
        """Store ``value`` at ``key`` and return the new revision (CAS when expected is given).

        Raises:
            PayloadTooLargeError: ``value`` exceeds ``max_payload_bytes``.
            RevisionMismatchError: the key's revision is not ``expected_revision``.
            UnavailableError: the server did not answer in time.
        """
        if len(value) > max_payload_bytes:
            raise PayloadTooLargeError(f"value of {len(value)} bytes exceeds {max_payload_bytes}")
        await self._ensure_bucket(key)
        if expected_revision is None:
            return await self._publish(key, bytes(value), {})
        if expected_revision < 0:
            raise RevisionMismatchError(key, expected_revision, await self._live_revision(key))
        last = expected_revision
        for _ in range(_CAS_ATTEMPTS):
            try:
                return await self._publish(
                    key, bytes(value), {"Nats-Expected-Last-Subject-Sequence": str(last)}
                )
            except _WrongLastSequenceError:
                current = await self._read(key)
            if current is not None and current[1] is not None:
                raise RevisionMismatchError(key, expected_revision, current[0])
            if expected_revision != 0:
                raise RevisionMismatchError(key, expected_revision, 0)
            # "Must not exist" and the key is deleted: compare against its delete marker.
            last = 0 if current is None else current[0]
        raise RevisionMismatchError(key, expected_revision, await self._live_revision(key))

    async def delete(self, key: str, expected_revision: int | None) -> None:
        """Delete ``key`` with a delete marker (CAS when expected is given).

        Raises:
            RevisionMismatchError: the key's revision is not ``expected_revision``.
            MissingError: the key does not exist (and no CAS failed first).
            UnavailableError: the server did not answer in time, or the key kept
                changing.
        """
        missing = MissingError(f"no KV key {key!r}")
        if expected_revision is not None and expected_revision > 0:
            await self._ensure_bucket(key)
            try:
                await self._delete_marker(key, expected_revision)
            except _WrongLastSequenceError:
                raise RevisionMismatchError(
                    key, expected_revision, await self._live_revision(key)
                ) from None
            return
        for _ in range(_CAS_ATTEMPTS):
            revision = await self._live_revision(key)
            if expected_revision is not None and revision != expected_revision:
                raise RevisionMismatchError(key, expected_revision, revision)
            if revision == 0:
                raise missing
            with contextlib.suppress(_WrongLastSequenceError):
                await self._delete_marker(key, revision)
                return
        raise UnavailableError(f"{key} changed {_CAS_ATTEMPTS} times while it was being deleted")

    async def keys(
        self, claims: Claims, prefix: str, *, only: frozenset[str] | None = None
    ) -> list[str]:
        """Return the keys that start with ``prefix`` and that ``claims`` may read, sorted.

        ``only``, if given, limits a listing across repos to those repos (the repos a
        token's connection may reach).
        """
        subject_filter = _kv_filter(prefix, claims.org)
        if subject_filter is None:
            return []
        tokens = subject_filter.split(".")
        if len(tokens) >= 3:
            repos = [tokens[1]]
        elif ALL_REPOS not in claims.repos:  # the token names its repos: no index to read
            repos = [
                repo for repo in sorted(claims.repos) if f"{claims.org}.{repo}.".startswith(prefix)
            ]
        else:  # every repo of the org the prefix may cover
            repos = [
                repo
                for repo in await self.live_keys(index_bucket(claims.org), ">")
                if f"{claims.org}.{repo}.".startswith(prefix) and (only is None or repo in only)
            ]
        keys: list[str] = []
        for repo in repos:
            try:
                bucket = kv_bucket(claims.org, repo)
            except ValueError:
                continue
            if not may_read_key(claims, f"{claims.org}.{repo}.x"):
                continue
            keys.extend(
                key
                for key in await self.live_keys(bucket, subject_filter)
                if key.startswith(prefix) and may_read_key(claims, key)
            )
        return sorted(keys)

    async def live_keys(self, bucket: str, subject_filter: str) -> list[str]:
        """Return every live key of ``bucket`` matching ``subject_filter`` (no token check)."""
        head = kv_subject(bucket, "")
        found = await self._last_per_subject(kv_stream(bucket), head + subject_filter)
        return sorted(
            subject.removeprefix(head)
            for subject, headers in found
            if not _is_delete_marker(headers)
        )

    async def _read(self, key: str) -> tuple[int, bytes | None] | None:
        """Return (revision, value) of the newest message of ``key``, or None if none.

        The value is None when that message is a delete marker.
        """
        bucket = bucket_of_key(key)
        message = await self._conn.get_message(
            kv_stream(bucket), {"last_by_subj": kv_subject(bucket, key)}
        )
        if message is None:
            return None
        revision = int(message["seq"])
        headers = _parse_header_block(base64.b64decode(message.get("hdrs") or ""))
        if _is_delete_marker(headers):
            return revision, None
        return revision, base64.b64decode(message.get("data") or "")

    async def _live_revision(self, key: str) -> int:
        """Return the revision of ``key``, 0 when it does not exist or is deleted."""
        current = await self._read(key)
        return 0 if current is None or current[1] is None else current[0]

    async def _publish(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        """Publish one KV message and return its revision.

        Raises:
            _WrongLastSequenceError: an expected-last-sequence header did not match.
        """
        try:
            with _nats_errors(f"write KV key {key}"):
                ack = await self._conn.js.publish(
                    kv_subject(bucket_of_key(key), key), value, headers=headers or None
                )
        except _ApiError as exc:
            if exc.err_code in _ERR_WRONG_LAST_SEQUENCE:
                raise _WrongLastSequenceError(str(exc)) from exc
            raise
        return int(ack.seq)

    async def _delete_marker(self, key: str, last: int) -> None:
        """Write a delete marker for ``key`` if its revision is ``last``."""
        await self._publish(
            key, b"", {"KV-Operation": "DEL", "Nats-Expected-Last-Subject-Sequence": str(last)}
        )

    async def _ensure_bucket(self, key: str) -> None:
        """Provision the bucket ``key`` lives in unless this connection already did."""
        if bucket_of_key(key) == KEYS_BUCKET:
            await self._provision.ensure_keys_bucket()
        else:
            org, repo = key.split(".", 2)[:2]
            await self._provision.ensure(org, repo)

    async def _last_per_subject(
        self, stream: str, subject_filter: str
    ) -> list[tuple[str, dict[str, str]]]:
        """Return (subject, headers) of the newest message of each subject matching."""
        for _ in range(_LISTING_ATTEMPTS):
            try:
                return await self._last_per_subject_once(stream, subject_filter)
            except _ConsumerGapError:
                continue
        raise UnavailableError(f"could not list {subject_filter} without gaps")

    async def _last_per_subject_once(
        self, stream: str, subject_filter: str
    ) -> list[tuple[str, dict[str, str]]]:
        """One listing attempt through a one-shot, headers-only consumer.

        Raises:
            _ConsumerGapError: the consumer skipped a message.
        """
        nc = self._conn.nc
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
                    info = await self._conn.js.add_consumer(stream, config=config)
                except nats.js.errors.NotFoundError:
                    return []  # no such stream: nothing stored yet
                consumer = info.name
                if not info.num_pending and not (info.delivered and info.delivered.consumer_seq):
                    return []
                expected = 1
                while True:
                    msg = await asyncio.wait_for(queue.get(), self._conn.timeout)
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
                await self._conn.delete_consumer(stream, consumer)
