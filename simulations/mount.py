"""A simulated mount: the production `Replica`, its in-flight appends and its snapshot.

The mount holds no decision logic of its own: `engine.replica.Replica` checks and
stamps ops (``issue``) and folds deliveries (``receive``), and `engine.driver` decides
retries (`RetryPolicy`, the message id), and when to store a snapshot
(`SnapshotCadence`), exactly as in the SDK's `RepoMount`. What the simulator adds is
the shell around it: appends in flight, the acknowledgement rule
(an op is acknowledged once its append was acked *and* the replica folded it),
the latest snapshot, and crash/restart. Each incarnation has its own author id, so
op ids never repeat across a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine import driver
from engine.fold import ChangeState
from engine.ops import Entry
from engine.replica import Folded, Replica
from engine.snapshot import decode_snapshot, encode_snapshot


@dataclass(slots=True)
class InFlight:
    """An issued op whose append is not acknowledged yet."""

    entry: Entry
    payload: bytes
    first_ms: int  # when the first attempt started (the retry budget counts from it)
    attempts: int = 0
    seq: int | None = None  # set when an append was acked


@dataclass(slots=True)
class Link:
    """The network between the sequencer and one mount.

    While ``partitioned``, messages both ways are held (``outbox`` towards the
    sequencer, ``inbox`` towards the mount) and released, in order, on heal.
    ``*_last_ms`` keep a link FIFO when the plan does not reorder.
    """

    partitioned: bool = False
    outbox: list[object] = field(default_factory=list)
    inbox: list[object] = field(default_factory=list)
    up_last_ms: int = 0
    down_last_ms: int = 0


class SimMount:
    """One mount of the change (see module docstring)."""

    def __init__(self, index: int, window_ms: int, snapshot_every: int | None = None) -> None:
        self.index = index
        self.window_ms = window_ms
        self.incarnation = 0
        self.replica: Replica | None = Replica(self.author, ChangeState(window_ms=window_ms))
        self.in_flight: dict[str, InFlight] = {}
        self.snapshot: bytes | None = None
        self.link = Link()
        self.snapshot_every = snapshot_every
        self.cadence = driver.SnapshotCadence(snapshot_every)

    @property
    def name(self) -> str:
        """The mount's name in traces: index and incarnation."""
        return f"m{self.index}"

    @property
    def author(self) -> str:
        """The author id of the current incarnation."""
        return f"m{self.index}x{self.incarnation}"

    @property
    def up(self) -> bool:
        """Whether the mount is running."""
        return self.replica is not None

    def observe_folds(self, folded: list[Folded]) -> bool:
        """Count folded entries; store a snapshot if the production cadence says so."""
        assert self.replica is not None
        if self.cadence.observe(folded, self.author):
            self.take_snapshot()
            return True
        return False

    def take_snapshot(self) -> int:
        """Store a snapshot of the replica's state; return its sequence."""
        assert self.replica is not None
        self.snapshot = encode_snapshot(self.replica.state)
        return self.replica.seq

    def crash(self) -> None:
        """Lose the process: the replica, the in-flight appends, the unsent messages."""
        self.replica = None
        self.in_flight.clear()
        self.link.outbox.clear()
        self.link.inbox.clear()

    def restart(self) -> Replica:
        """Start a new incarnation from the latest snapshot (or from scratch)."""
        assert self.replica is None
        self.incarnation += 1
        state = (
            decode_snapshot(self.snapshot)
            if self.snapshot is not None
            else ChangeState(window_ms=self.window_ms)
        )
        self.replica = Replica(self.author, state)
        self.cadence = driver.SnapshotCadence(self.snapshot_every, state.seq)
        return self.replica

    def acknowledge(self) -> list[tuple[str, InFlight]]:
        """Remove and return the in-flight ops now acked and folded, in issue order."""
        assert self.replica is not None
        folded = self.replica.seq
        done = sorted(
            ((op_id, f) for op_id, f in self.in_flight.items() if f.seq is not None),
            key=lambda item: item[1].entry.counter,
        )
        done = [(op_id, f) for op_id, f in done if f.seq is not None and f.seq <= folded]
        for op_id, _ in done:
            del self.in_flight[op_id]
        return done
