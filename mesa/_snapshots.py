"""Storing and loading snapshots of a change (its folded state at a sequence).

A snapshot is the engine's `encode_snapshot` bytes stored as a blob (content
addressed, zstd on JetStream), and a record ``<org>.<repo>.snapshot.<change>`` naming
its digest, sequence and entry count. The record only ever moves forward: a writer
replaces it by compare-and-set only with a later sequence. Every stored snapshot is
also recorded under ``<org>.<repo>.snapat.<change>.<seq>``, so a read of the past
(``at=``) can start from the newest snapshot at or before it. A snapshot that is
missing, does not match its digest, or does not decode is ignored (the mount folds
the whole log instead), never trusted.

`seal` stores a state as a snapshot and returns its record even when a newer one
exists: a child change names the blob as its base.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from engine.content import digest_of
from engine.errors import CodecError
from engine.fold import ChangeState
from engine.snapshot import decode_snapshot, encode_snapshot
from mesa._gateway import Gateway
from mesa._records import SnapshotRecord, snapshot_at_key, snapshot_at_prefix, snapshot_key
from mesa.errors import ConflictError, NotFoundError
from transports.base import KvEntry

log = logging.getLogger("mesa")

CAS_ATTEMPTS = 3


@dataclass(frozen=True)
class Loaded:
    """A snapshot read back: the state and how many log entries it folded."""

    state: ChangeState
    entries: int


async def load(
    transport: Gateway,
    token: str,
    org: str,
    repo: str,
    change: str,
    window_ms: int,
    *,
    at: int | None = None,
) -> Loaded | None:
    """Return the change's newest usable snapshot (at or before sequence ``at``), or None."""
    if at is None:
        entry = await transport.kv_get(token, snapshot_key(org, repo, change))
    else:
        entry = await _newest_at(transport, token, org, repo, change, at)
    if entry is None:
        return None
    try:
        record = SnapshotRecord.decode(entry.value)
        data = await transport.get_blob(token, org, repo, record.digest)
        if digest_of(data) != record.digest:
            raise CodecError("digest mismatch")
        state = decode_snapshot(data)
    except (NotFoundError, CodecError, ValueError, KeyError) as exc:
        log.warning("ignoring the snapshot of %s/%s@%s: %s", org, repo, change, exc)
        return None
    if state.seq != record.seq or state.window_ms != window_ms:
        log.warning(
            "ignoring the snapshot of %s/%s@%s: it does not match its record", org, repo, change
        )
        return None
    return Loaded(state, record.entries)


async def _newest_at(
    transport: Gateway, token: str, org: str, repo: str, change: str, at: int
) -> KvEntry | None:
    """Return the record of the newest snapshot with a sequence at or before ``at``."""
    prefix = snapshot_at_prefix(org, repo, change)
    seqs = sorted(
        (int(key[len(prefix) :]) for key in await transport.kv_keys(token, prefix)),
        reverse=True,
    )
    for seq in seqs:
        if seq <= at:
            entry = await transport.kv_get(token, snapshot_at_key(org, repo, change, seq))
            if entry is not None:
                return entry
    return None


async def load_blob(transport: Gateway, token: str, org: str, repo: str, digest: str) -> bytes:
    """Return the snapshot bytes stored under ``digest``, checked against it.

    Raises:
        NotFoundError: no such blob.
        CodecError: the bytes do not match the digest.
    """
    data = await transport.get_blob(token, org, repo, digest)
    if digest_of(data) != digest:
        raise CodecError(f"snapshot blob {digest} does not match its digest")
    return data


def encode(state: ChangeState) -> bytes:
    """Encode ``state`` now (the caller must not let the fold run meanwhile)."""
    return encode_snapshot(state)


async def store(
    transport: Gateway,
    token: str,
    org: str,
    repo: str,
    change: str,
    *,
    data: bytes,
    seq: int,
    entries: int,
    now_ms: int,
) -> bool:
    """Store an encoded snapshot and advance the record to it; False if a newer one exists."""
    record = await _put(transport, token, org, repo, change, data, seq, entries, now_ms)
    return await _advance(transport, token, org, repo, change, record)


async def seal(
    transport: Gateway,
    token: str,
    org: str,
    repo: str,
    change: str,
    *,
    data: bytes,
    seq: int,
    entries: int,
    now_ms: int,
) -> SnapshotRecord:
    """Store an encoded snapshot, advance the newest record if it is newer; return its record."""
    record = await _put(transport, token, org, repo, change, data, seq, entries, now_ms)
    await _advance(transport, token, org, repo, change, record)
    return record


async def _put(
    transport: Gateway,
    token: str,
    org: str,
    repo: str,
    change: str,
    data: bytes,
    seq: int,
    entries: int,
    now_ms: int,
) -> SnapshotRecord:
    """Store the blob and its by-sequence record (idempotent: same state, same bytes)."""
    digest = await transport.put_blob(token, org, repo, data)
    record = SnapshotRecord(seq, entries, digest, len(data), now_ms)
    await transport.kv_put(token, snapshot_at_key(org, repo, change, seq), record.encode())
    return record


async def _advance(
    transport: Gateway, token: str, org: str, repo: str, change: str, record: SnapshotRecord
) -> bool:
    key = snapshot_key(org, repo, change)
    for _ in range(CAS_ATTEMPTS):
        current = await transport.kv_get(token, key)
        if current is not None and SnapshotRecord.decode(current.value).seq >= record.seq:
            return False
        try:
            await transport.kv_put(
                token,
                key,
                record.encode(),
                expected_revision=current.revision if current is not None else 0,
            )
        except ConflictError:
            continue
        return True
    return False
