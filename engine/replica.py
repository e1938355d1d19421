"""The mount's decision logic for one change, as a sans-I/O state machine.

A `Replica` decides what to publish (``issue`` checks an op against the folded
tree and returns the `Entry` to append, stamped with the author, its op counter
and ``seen``), what to fold (``receive`` takes deliveries in any order, drops
duplicates, buffers those that arrive early and folds the contiguous run), and
which events to emit (returned with each folded entry). The async mount and the
simulator both drive this class, so a simulation runs the production logic.

Invariants: ``state.seq`` only grows; an entry is folded at most once; a delivery
is folded only once its ``prev_seq`` was folded, so no entry is skipped. An entry that
does not decode, or whose fold raises (the fold is all or nothing, so the state is as
before it), stops the replica there: it is ``broken`` at that sequence for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.codec import decode_entry
from engine.errors import CodecError
from engine.fold import ChangeState, Event, fold
from engine.ids import validate_author
from engine.ops import Entry, Logged, Op
from engine.validate import check


class CorruptEntryError(CodecError):
    """Raised when a delivered entry does not decode; names the sequence; folding stops."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(self._describe(seq, reason))

    @staticmethod
    def _describe(seq: int, reason: str) -> str:
        return f"entry at sequence {seq} does not decode: {reason}"


class FoldFailedError(CorruptEntryError):
    """Raised when folding a delivered entry raised; names the sequence; folding stops.

    The entry decoded, but the fold could not apply it (``reason`` names the exception,
    which is also the ``__cause__``). The fold is all or nothing, so the state is the
    one before the entry. A `CorruptEntryError`, so whoever stops at an entry that does
    not decode stops at this one too.
    """

    @staticmethod
    def _describe(seq: int, reason: str) -> str:
        return f"entry at sequence {seq} could not be folded: {reason}"


@dataclass(frozen=True, slots=True)
class Folded:
    """One entry the replica folded, with the events it produced."""

    seq: int
    time_ms: int
    entry: Entry
    events: list[Event]


@dataclass(frozen=True, slots=True)
class _Pending:
    seq: int
    prev_seq: int
    time_ms: int
    payload: bytes


@dataclass
class Replica:
    """One author's replica of one change (see module docstring)."""

    author: str
    state: ChangeState = field(default_factory=ChangeState)
    counter: int = 0
    _early: dict[int, _Pending] = field(default_factory=dict)
    _broken: CorruptEntryError | None = None

    def __post_init__(self) -> None:
        validate_author(self.author)

    @property
    def seq(self) -> int:
        """The last folded sequence."""
        return self.state.seq

    def issue(self, op: Op, *, seen: int | None = None, checked: bool = True) -> Entry | None:
        """Check ``op`` and return the entry to append, or None if it would change nothing.

        ``seen`` is the last sequence whose state the op was derived from: the folded
        sequence now unless the caller derived it earlier (a FUSE handle publishes
        bytes it read at open; what other authors wrote since must still race them).
        With ``checked`` false the op is issued without checking it against the folded
        tree: for a writer that validated it against its own ops not folded yet. The
        fold takes any op (it must: other authors' ops are checked against trees this
        replica never had), so this cannot break the state, only skip a no-op test.

        Raises:
            FsError: the op is invalid against the folded tree (nothing is issued).
            ValueError: ``seen`` is negative or later than the folded sequence.
        """
        if seen is None:
            seen = self.state.seq
        elif not 0 <= seen <= self.state.seq:
            raise ValueError(f"seen {seen} is outside 0..{self.state.seq} (the folded sequence)")
        if checked and not check(self.state.tree, op):
            return None
        self.counter += 1
        return Entry(op=op, author=self.author, counter=self.counter, seen=seen)

    def receive(self, seq: int, prev_seq: int, time_ms: int, payload: bytes) -> list[Folded]:
        """Accept one delivery and fold every entry that is now contiguous.

        Entries folded before a corrupt one are returned (their events must not be
        lost); the corrupt entry is never folded. An entry whose fold raises is treated
        the same way: the state stays as it was before it (the fold is all or nothing).

        Raises:
            CorruptEntryError: the next entry to fold does not decode (and nothing was folded
                by this call); every later call raises it again.
            FoldFailedError: folding the next entry raised (and nothing was folded by this
                call); every later call raises it again.
        """
        if self._broken is not None:
            raise self._broken
        if seq <= self.state.seq or prev_seq in self._early:
            return []
        assert prev_seq < seq, f"delivery {seq} names a later predecessor {prev_seq}"
        self._early[prev_seq] = _Pending(seq, prev_seq, time_ms, payload)
        out: list[Folded] = []
        while (ready := self._early.pop(self.state.seq, None)) is not None:
            try:
                entry = decode_entry(ready.payload)
            except CodecError as exc:
                return self._stop(out, CorruptEntryError(ready.seq, str(exc)), exc)
            try:
                events = fold(self.state, Logged(ready.seq, ready.time_ms, entry))
            except Exception as exc:
                # Whatever the fold raised (a bug, an op it cannot apply), the state is
                # as before the entry: stop there, naming it, rather than skip it.
                reason = f"{type(exc).__name__}: {exc}"
                return self._stop(out, FoldFailedError(ready.seq, reason), exc)
            out.append(Folded(ready.seq, ready.time_ms, entry, events))
        return out

    def _stop(self, out: list[Folded], broken: CorruptEntryError, cause: Exception) -> list[Folded]:
        """Break the replica at ``broken``; return ``out`` if anything was folded, else raise."""
        broken.__cause__ = cause
        self._broken = broken
        if out:
            return out
        raise broken

    @property
    def broken(self) -> CorruptEntryError | None:
        """What stopped the fold (an entry that does not decode or did not fold), if any."""
        return self._broken

    @property
    def waiting(self) -> int:
        """How many early deliveries are buffered, waiting for a predecessor."""
        return len(self._early)
