"""A synchronous model of the JetStream stream that sequences one repo's changes.

`transports.memory` is driven through asyncio, so the simulator uses this tiny
synchronous sequencer instead. It mirrors what the memory transport and JetStream
promise (transports/base.py), plus the faults the simulator injects:

- One stream per repo, one sequence, strictly increasing. Every change of the repo
  has its own log in that stream (a subject), so a change's own sequences have gaps
  where other changes' entries went (and, with ``gap``, entries of changes the
  simulation does not model); each stored entry names the previous sequence of its
  change (``prev_seq``), like `transports.base.Delivery`.
- The timestamp is the sequencer's clock (virtual time plus an offset), never a
  writer's. It is monotonic (``max(previous, clock)``) except right after a
  backward clock jump, when it follows the clock down, as a server's wall clock
  does after a step.
- A ``msg_id`` seen within the dedupe window (120 s of sequencer time, JetStream's
  default ``duplicate_window``) anywhere in the stream makes an append a no-op that
  returns the original sequence, whichever change it went to (that is why a mount
  moving to another change keeps its op counter, `engine.driver.carry_counter`). A
  retry after the window is stored again: the log then holds the entry twice and the
  fold must apply it once.
- A payload larger than ``max_payload`` is refused before anything is stored, as a
  server refuses a message above its ``max_payload`` (the mount then spills its
  inline bytes to blobs, `engine.driver.spilled`).

Invariants: stored entries are never changed or removed; their sequences increase
strictly and each ``prev_seq`` is the sequence of the change's entry before it (0
first).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

DEDUPE_WINDOW_MS = 120_000


@dataclass(frozen=True, slots=True)
class Stored:
    """One entry in a change's log: what a subscription delivers, plus its msg id."""

    seq: int
    prev_seq: int
    time_ms: int
    payload: bytes
    msg_id: str
    change: int = 0


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The answer to an append: where the entry is, or why it is not stored.

    ``duplicate``: a deduplicated repeat (``seq`` is the original's). ``too_large``:
    refused, nothing stored (``seq`` is 0).
    """

    seq: int
    time_ms: int
    duplicate: bool
    too_large: bool = False
    stored: Stored | None = None


class Sequencer:
    """The stream of one repo (see module docstring)."""

    def __init__(
        self, *, dedupe_window_ms: int = DEDUPE_WINDOW_MS, max_payload: int | None = None
    ) -> None:
        self.entries: list[Stored] = []  # every stored entry, in stream order
        self._logs: dict[int, list[Stored]] = {}
        self._seqs: dict[int, list[int]] = {}
        self._stream_seq = 0
        self.dedupe_window_ms = dedupe_window_ms
        self.max_payload = max_payload
        self.clock_offset_ms = 0
        self._last_time_ms: int | None = None
        self._msg_ids: dict[str, AppendResult] = {}
        self._by_seq: dict[int, Stored] = {}

    @property
    def last_seq(self) -> int:
        """The sequence of change 0's newest entry (0 when its log is empty)."""
        return self.last_seq_of(0)

    def last_seq_of(self, change: int) -> int:
        """The sequence of a change's newest entry (0 when its log is empty)."""
        seqs = self._seqs.get(change)
        return seqs[-1] if seqs else 0

    def log(self, change: int) -> list[Stored]:
        """A change's entries, in order."""
        return self._logs.get(change, [])

    def at(self, seq: int) -> Stored | None:
        """The entry stored at stream sequence ``seq``, whichever change it belongs to."""
        return self._by_seq.get(seq)

    def count_upto(self, change: int, seq: int) -> int:
        """How many of a change's entries have a sequence up to ``seq``."""
        return bisect.bisect_right(self._seqs.get(change, []), seq)

    def clock_ms(self, now_ms: int) -> int:
        """Return the sequencer's clock reading at virtual time ``now_ms``."""
        return now_ms + self.clock_offset_ms

    def jump_clock(self, delta_ms: int) -> None:
        """Step the sequencer's clock by ``delta_ms`` (negative: backwards)."""
        self.clock_offset_ms += delta_ms
        if delta_ms < 0:
            # The next stamp follows the clock down, like a server after an NTP step.
            self._last_time_ms = None

    def append(
        self, payload: bytes, msg_id: str, now_ms: int, *, gap: int = 0, change: int = 0
    ) -> AppendResult:
        """Store ``payload`` in ``change``'s log unless refused or a repeat.

        Args:
            payload: the encoded entry.
            msg_id: the op id the author sends as ``Nats-Msg-Id``.
            now_ms: the virtual time of the append.
            gap: how many entries of unmodelled changes the stream took since the
                last append (they use up sequences; used only when this one is stored).
            change: the change whose log the entry goes to.

        Returns:
            The new entry's place; the original one for a repeat (``duplicate``); or
            ``too_large`` when the payload exceeds ``max_payload``.
        """
        if self.max_payload is not None and len(payload) > self.max_payload:
            return AppendResult(0, 0, duplicate=False, too_large=True)
        clock = self.clock_ms(now_ms)
        time_ms = clock if self._last_time_ms is None else max(self._last_time_ms, clock)
        original = self._msg_ids.get(msg_id)
        if original is not None and time_ms - original.time_ms <= self.dedupe_window_ms:
            return AppendResult(original.seq, original.time_ms, duplicate=True)
        seq = self._stream_seq + 1 + gap
        self._stream_seq = seq
        stored = Stored(seq, self.last_seq_of(change), time_ms, payload, msg_id, change)
        self.entries.append(stored)
        self._logs.setdefault(change, []).append(stored)
        self._seqs.setdefault(change, []).append(seq)
        self._by_seq[seq] = stored
        self._last_time_ms = time_ms
        result = AppendResult(seq, time_ms, duplicate=False, stored=stored)
        self._msg_ids[msg_id] = result
        return result

    def tail(self, after_seq: int, change: int = 0) -> list[Stored]:
        """Return a change's entries after ``after_seq``, in order (a subscription's backlog)."""
        seqs = self._seqs.get(change, [])
        return self.log(change)[bisect.bisect_right(seqs, after_seq) :]
