"""Storing and loading a change's newest snapshot (its folded state at a sequence).

A snapshot is the engine's `encode_snapshot` bytes stored as a blob (content
addressed, zstd on JetStream), and a record ``<org>.<repo>.snapshot.<change>`` naming
its digest, sequence and entry count. The record only ever moves forward: a writer
replaces it by compare-and-set only with a later sequence. A snapshot that is missing,
does not match its digest, or does not decode is ignored (the mount folds the whole
log instead), never trusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from engine.content import digest_of
from engine.errors import CodecError
from engine.fold import ChangeState
from engine.snapshot import decode_snapshot, encode_snapshot
from mesa._records import SnapshotRecord, snapshot_key
from transports.base import CasConflict, NotFound, Transport

log = logging.getLogger("mesa")

CAS_ATTEMPTS = 3


@dataclass(frozen=True)
class Loaded:
    """A snapshot read back: the state and how many log entries it folded."""

    state: ChangeState
    entries: int


async def load(
    transport: Transport, token: str, org: str, repo: str, change: str, window_ms: int
) -> Loaded | None:
    """Return the change's newest usable snapshot, or None."""
    entry = await transport.kv_get(token, snapshot_key(org, repo, change))
    if entry is None:
        return None
    try:
        record = SnapshotRecord.decode(entry.value)
        data = await transport.get_blob(token, org, repo, record.digest)
        if digest_of(data) != record.digest:
            raise CodecError("digest mismatch")
        state = decode_snapshot(data)
    except (NotFound, CodecError, ValueError, KeyError) as exc:
        log.warning("ignoring the snapshot of %s/%s@%s: %s", org, repo, change, exc)
        return None
    if state.seq != record.seq or state.window_ms != window_ms:
        log.warning(
            "ignoring the snapshot of %s/%s@%s: it does not match its record", org, repo, change
        )
        return None
    return Loaded(state, record.entries)


def encode(state: ChangeState) -> bytes:
    """Encode ``state`` now (the caller must not let the fold run meanwhile)."""
    return encode_snapshot(state)


async def store(
    transport: Transport,
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
    digest = await transport.put_blob(token, org, repo, data)
    record = SnapshotRecord(seq, entries, digest, len(data), now_ms)
    key = snapshot_key(org, repo, change)
    for _ in range(CAS_ATTEMPTS):
        current = await transport.kv_get(token, key)
        if current is not None and SnapshotRecord.decode(current.value).seq >= seq:
            return False
        try:
            await transport.kv_put(
                token,
                key,
                record.encode(),
                expected_revision=current.revision if current is not None else 0,
            )
        except CasConflict:
            continue
        return True
    return False
