"""The canonical trace of a run, hashed: one seed must give one trace hash.

Every event of a run (an op drawn, an entry stored, a fold, an ack, a crash, a
clock jump, ...) becomes one line ``time|kind|mount|seq|op id|detail``, where the
detail of a fold or a store is the resulting tree hash. The trace hash is the
sha256 of the lines; it does not depend on PYTHONHASHSEED, the machine or the
wall clock, so two runs of one seed must print the same hash (checker f).
"""

from __future__ import annotations

import hashlib
from collections import deque


class Trace:
    """An incremental sha256 over canonical trace lines, keeping the last few for reports."""

    def __init__(self, *, keep: int = 40, echo: bool = False) -> None:
        self._hash = hashlib.sha256()
        self.lines = 0
        self.recent: deque[str] = deque(maxlen=keep)
        self.echo = echo

    def record(
        self,
        time_ms: int,
        kind: str,
        mount: str = "-",
        seq: int = 0,
        op_id: str = "-",
        detail: str = "-",
    ) -> None:
        """Add one event to the trace."""
        line = f"{time_ms}|{kind}|{mount}|{seq}|{op_id}|{detail}"
        self._hash.update(line.encode() + b"\n")
        self.lines += 1
        self.recent.append(line)
        if self.echo:
            print(line)

    def hexdigest(self) -> str:
        """Return the trace hash so far."""
        return self._hash.hexdigest()
