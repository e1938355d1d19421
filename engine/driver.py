"""The mount's decisions around a `Replica`, sans I/O: retries, spills, switches, snapshots.

`engine.replica.Replica` decides what to publish and what to fold. What is left of a
mount's behaviour is decided here, as plain functions and small state machines over
values, so the SDK's `RepoMount` and the simulator's mount run the same rules:

- **Appends**: an entry goes to the log under the message id `msg_id` (its op id), the
  transport's deduplication key, so every retry of one entry lands at most once.
  `RetryPolicy` says whether and when to try again after an attempt failed because
  the server could not be reached: a bounded number of attempts, doubling backoff, and
  no attempt started later than a budget after the first (a failing write is bounded).
  A *persistent* writer (the FUSE mount's write-behind queue, whose bytes the kernel
  was already told are written) never gives up while its mount lives: it retries the
  same entry, under the same message id, with a backoff capped at ``max_backoff_ms``
  (`RetryPolicy.persistent_delay_ms`), however long the server is away.
- **Placement**: bytes up to `INLINE_THRESHOLD_BYTES` travel inside the entry; larger
  bytes go to the blob store first (`goes_inline`). When the server refuses an entry
  as too large (a server may allow less than the threshold), its inline segments are
  spilled to blobs (`inline_segments`, `spilled`) and the same op id goes again; the
  content keeps its identity (an inline segment and a blob of the same bytes have one
  digest), so the fold and the tree hash do not change.
- **Write-backs** (docs/conflicts.md, rule 6): a write of the conflict block the
  writer read, markers intact, logs the conflict's terms as the mount parsed them
  (`writeback`), so the fold keeps the conflict without reading bytes, and a spilled
  or blob write-back folds as the inline one does.
- **Renames over a file** (an editor's or agent's atomic save: write a temporary
  file, rename it over the target): the moved bytes were composed when the temporary
  file was written, not when it is renamed, so the rename carries the ``seen`` of the
  write that produced them (`rename_seen`). A save that another author made to the
  target after that, within the race window, then races the rename: both survive as
  a conflict (docs/conflicts.md, rule 11).
- **Switches**: moving a mount to another change keeps its op counter growing
  (`carry_counter`): op ids are message ids, deduplicated across a repo's stream.
- **Snapshots**: `SnapshotCadence` counts folded entries; each time the count crosses
  a multiple of ``every`` on an entry this mount authored, this mount stores one, so
  exactly one mount writes each snapshot.

Nothing here sleeps, reads a clock or touches a network: times arrive as arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from engine import conflicts
from engine.content import EMPTY, BlobRef, Content, Inline, Segment
from engine.merge import Merge
from engine.ops import Append, Entry, Write
from engine.replica import Folded, Replica

#: Above this many bytes, contents go to the blob store instead of the log entry.
INLINE_THRESHOLD_BYTES = 64 * 1024


def msg_id(entry: Entry) -> str:
    """Return the message id an entry is appended under (every attempt uses the same)."""
    return entry.op_id


@dataclass(frozen=True)
class RetryPolicy:
    """When to try an append again after the server could not be reached.

    Attributes:
        attempts: attempts in all, the first included.
        first_backoff_ms: the wait after the first failure; it doubles after each.
        budget_ms: no attempt starts later than this after the first one started.
        max_backoff_ms: the longest wait between attempts of a persistent writer.
    """

    attempts: int = 5
    first_backoff_ms: int = 50
    budget_ms: int = 10_000
    max_backoff_ms: int = 5_000

    def delay_ms(self, failed: int, elapsed_ms: int) -> int | None:
        """Return how long to wait before the next attempt, or None to give up.

        Args:
            failed: how many attempts failed so far (at least 1).
            elapsed_ms: time since the first attempt started.
        """
        if failed < 1:
            raise ValueError(f"failed must be at least 1, not {failed}")
        if failed >= self.attempts or elapsed_ms >= self.budget_ms:
            return None
        return int(self.first_backoff_ms * 2 ** (failed - 1))

    def persistent_delay_ms(self, failed: int) -> int:
        """Return the wait before the next attempt of a writer that never gives up."""
        if failed < 1:
            raise ValueError(f"failed must be at least 1, not {failed}")
        # Cap the exponent too: 2**failed grows without bound over a long outage.
        return min(self.first_backoff_ms << min(failed - 1, 32), self.max_backoff_ms)


#: The policy the SDK's mounts use.
DEFAULT_RETRY = RetryPolicy()


def goes_inline(size_bytes: int) -> bool:
    """Return whether content of ``size_bytes`` travels inside its log entry."""
    return size_bytes <= INLINE_THRESHOLD_BYTES


def _contents(op: Write | Append) -> list[Content]:
    """The contents an op carries, in spill order: its bytes, then a write-back's terms."""
    return [op.content, *op.terms] if isinstance(op, Write) else [op.content]


def inline_segments(entry: Entry) -> list[Inline]:
    """Return the inline segments a spill would move to blobs, in order (may be empty).

    The content's segments come first, then each write-back term's (`Write.terms`).
    """
    op = entry.op
    if not isinstance(op, Write | Append):
        return []
    return [seg for content in _contents(op) for seg in content.segments if isinstance(seg, Inline)]


def spilled(entry: Entry, refs: Sequence[BlobRef]) -> Entry:
    """Return ``entry`` with its inline segments replaced, in order, by ``refs``.

    Raises:
        ValueError: ``refs`` does not match the inline segments one for one (same
            digest and size, in order).
    """
    inline = inline_segments(entry)
    if len(refs) != len(inline) or any(
        ref.digest != seg.digest or ref.size != seg.size
        for ref, seg in zip(refs, inline, strict=True)
    ):
        raise ValueError("the blobs do not match the entry's inline segments")
    op = entry.op
    assert isinstance(op, Write | Append)
    queue = list(refs)

    def moved(content: Content) -> Content:
        segments: list[Segment] = [
            queue.pop(0) if isinstance(seg, Inline) else seg for seg in content.segments
        ]
        return Content.from_segments(segments)

    if isinstance(op, Write):
        content, *terms = [moved(each) for each in _contents(op)]
        new_op: Write | Append = dataclasses.replace(op, content=content, terms=tuple(terms))
    else:
        new_op = dataclasses.replace(op, content=moved(op.content))
    return dataclasses.replace(entry, op=new_op)


#: Every conflict block holds this (a start marker is at least this many ``<``).
_BLOCK_START = b"<" * conflicts.MIN_MARKER_LEN + b" conflict 1 of 1"


def may_be_block(data: bytes) -> bool:
    """Return whether ``data`` may be a conflict block (a cheap test before any parsing).

    False means it certainly is not one, so a mount need not read the conflict's terms.
    """
    return _BLOCK_START in data


def writeback(op: Write, seen: Merge | None, seen_bytes: Sequence[bytes], data: bytes) -> Write:
    """Return ``op`` as a write-back when ``data`` is the conflict its writer saw, edited.

    Rule 6 of docs/conflicts.md: bytes holding the conflict block with its markers
    intact (saved unchanged, or edited inside the sections) keep the conflict, with the
    edited terms. The fold never reads blobs, so the mount parses the block here, where
    it has the bytes, and logs the terms in the entry (`Write.terms`): the same write
    then folds alike inline and as blobs. A term whose bytes are unchanged is logged as
    the content the file holds (no new blob, and the fold sees it unchanged); a new
    term is inline (the caller moves a large one to a blob, as for any content).

    Args:
        op: the plain write (no terms yet).
        seen: the file's value in the view the writer derived ``data`` from (None: no
            file, or not known).
        seen_bytes: the bytes of each term of ``seen``, in rendering order (``b""``
            for an absent one); ignored unless ``seen`` is a conflict.
        data: the bytes ``op`` writes.

    Returns:
        ``op`` with its terms, or ``op`` unchanged when ``seen`` is not a conflict or
        ``data`` is not a block of as many sides.
    """
    if seen is None or seen.is_resolved() or not may_be_block(data):
        return op
    held = [EMPTY if v is None else v for v in seen.terms()]
    if len(seen_bytes) != len(held):
        raise ValueError(f"{len(seen_bytes)} term bytes for a conflict of {len(held)} terms")
    parsed = conflicts.parse(data, len(seen.adds))
    if parsed is None:
        return op
    sides, bases = parsed
    terms = [sides[0]]
    for base, side in zip(bases, sides[1:], strict=True):
        terms.extend((base, side))
    logged = tuple(
        was if new == old else Content.of(new)
        for new, old, was in zip(terms, seen_bytes, held, strict=True)
    )
    return dataclasses.replace(op, terms=logged)


def rename_seen(seen: int, bytes_seen: int | None) -> int:
    """Return the ``seen`` of a rename over an existing file (module docstring).

    ``seen`` is what the renaming mount has folded (or the caller's own seen);
    ``bytes_seen`` is the ``seen`` of this mount's write that produced the moved file's
    bytes, when the moved file still holds them (None otherwise).
    """
    return seen if bytes_seen is None else min(seen, bytes_seen)


def carry_counter(old: Replica, new: Replica) -> Replica:
    """Return ``new`` with its op counter at least ``old``'s (a mount switching changes)."""
    new.counter = max(new.counter, old.counter)
    return new


@dataclass
class SnapshotCadence:
    """Decides when this mount stores a snapshot of the change it folds.

    Attributes:
        every: a snapshot each time the change's log grows by this many entries;
            None never.
        entries: entries of the change folded so far (snapshot + tail).
    """

    every: int | None
    entries: int = 0

    def __post_init__(self) -> None:
        if self.every is not None and self.every < 1:
            raise ValueError(f"every must be positive or None, not {self.every}")

    def observe(self, folded: Sequence[Folded], author: str, *, writable: bool = True) -> bool:
        """Count ``folded``; return whether ``author`` should store a snapshot now.

        True when one of ``author``'s own entries brought the count to a multiple of
        ``every`` and the mount may write (a read-only mount stores none).
        """
        crossed = False
        for f in folded:
            self.entries += 1
            if self.every and self.entries % self.every == 0 and f.entry.author == author:
                crossed = True
        return crossed and writable
