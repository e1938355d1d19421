"""A synchronous model of the JetStream stream that sequences one change's log.

`transports.memory` is driven through asyncio, so the simulator uses this tiny
synchronous sequencer instead. It mirrors what the memory transport and JetStream
promise (transports/base.py), plus the faults the simulator injects:

- One stream sequence, strictly increasing. Other changes of the repo share the
  stream, so the change's own sequences have gaps (the caller says how many other
  entries came in between); each stored entry names the previous sequence of the
  change (``prev_seq``), like `transports.base.Delivery`.
- The timestamp is the sequencer's clock (virtual time plus an offset), never a
  writer's. It is monotonic (``max(previous, clock)``) except right after a
  backward clock jump, when it follows the clock down, as a server's wall clock
  does after a step.
- A ``msg_id`` seen within the dedupe window (120 s of sequencer time, JetStream's
  default ``duplicate_window``) makes an append a no-op that returns the original
  sequence. A retry after the window is stored again: the log then holds the entry
  twice and the fold must apply it once.

Invariants: stored entries are never changed or removed; their sequences increase
strictly and each ``prev_seq`` is the sequence of the entry before it (0 first).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

DEDUPE_WINDOW_MS = 120_000


@dataclass(frozen=True, slots=True)
class Stored:
    """One entry in the log: what a subscription delivers, plus the msg id it was sent with."""

    seq: int
    prev_seq: int
    time_ms: int
    payload: bytes
    msg_id: str


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The answer to an append: where the entry is, and whether it was a deduplicated repeat."""

    seq: int
    time_ms: int
    duplicate: bool


class Sequencer:
    """The stream of one change (see module docstring)."""

    def __init__(self, *, dedupe_window_ms: int = DEDUPE_WINDOW_MS) -> None:
        self.entries: list[Stored] = []
        self._seqs: list[int] = []
        self._stream_seq = 0
        self.dedupe_window_ms = dedupe_window_ms
        self.clock_offset_ms = 0
        self._last_time_ms: int | None = None
        self._msg_ids: dict[str, AppendResult] = {}

    @property
    def last_seq(self) -> int:
        """The sequence of the change's newest entry (0 when the log is empty)."""
        return self._seqs[-1] if self._seqs else 0

    def clock_ms(self, now_ms: int) -> int:
        """Return the sequencer's clock reading at virtual time ``now_ms``."""
        return now_ms + self.clock_offset_ms

    def jump_clock(self, delta_ms: int) -> None:
        """Step the sequencer's clock by ``delta_ms`` (negative: backwards)."""
        self.clock_offset_ms += delta_ms
        if delta_ms < 0:
            # The next stamp follows the clock down, like a server after an NTP step.
            self._last_time_ms = None

    def append(self, payload: bytes, msg_id: str, now_ms: int, *, gap: int = 0) -> AppendResult:
        """Store ``payload`` unless ``msg_id`` was stored within the dedupe window.

        Args:
            payload: the encoded entry.
            msg_id: the op id the author sends as ``Nats-Msg-Id``.
            now_ms: the virtual time of the append.
            gap: how many entries of other changes the stream took since the last
                append (they use up sequences; used only when this one is stored).

        Returns:
            The new entry's place, or the original one for a repeat (``duplicate``).
        """
        clock = self.clock_ms(now_ms)
        time_ms = clock if self._last_time_ms is None else max(self._last_time_ms, clock)
        original = self._msg_ids.get(msg_id)
        if original is not None and time_ms - original.time_ms <= self.dedupe_window_ms:
            return AppendResult(original.seq, original.time_ms, duplicate=True)
        seq = self._stream_seq + 1 + gap
        self._stream_seq = seq
        self.entries.append(Stored(seq, self.last_seq, time_ms, payload, msg_id))
        self._seqs.append(seq)
        self._last_time_ms = time_ms
        result = AppendResult(seq, time_ms, duplicate=False)
        self._msg_ids[msg_id] = result
        return result

    def tail(self, after_seq: int) -> list[Stored]:
        """Return the entries after ``after_seq``, in order (a new subscription's backlog)."""
        return self.entries[bisect.bisect_right(self._seqs, after_seq) :]
