"""A simulated mount: the production `Replica`, its in-flight appends and its change.

The mount holds no decision logic of its own: `engine.replica.Replica` checks and
stamps ops (``issue``) and folds deliveries (``receive``), and `engine.driver` decides
everything the SDK's `RepoMount` decides around it: where content goes (`goes_inline`:
large bytes to the blob store), the message id, retries (`RetryPolicy`), spilling
inline bytes to blobs when the server refuses an entry as too large
(`inline_segments`, `spilled`), the op counter across a switch to another change
(`carry_counter`) and when to store a snapshot (`SnapshotCadence`). What the simulator
adds is the shell around it: appends in flight, the acknowledgement rule (an op is
acknowledged once its append was acked *and* the replica folded it), the change the
mount is on, a switch it waits to make, and crash/restart. Each incarnation has its
own author id, so op ids never repeat across a restart; a switch keeps the author.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine import driver
from engine.codec import encode_entry
from engine.content import Content
from engine.fold import ChangeState
from engine.ops import Append, Entry, Op, Write
from engine.replica import Folded, Replica
from engine.snapshot import decode_snapshot, encode_snapshot
from engine.tree import FileNode, Tree
from simulations.blobs import BlobStore


@dataclass(slots=True)
class InFlight:
    """An issued op whose append is not acknowledged yet."""

    entry: Entry
    payload: bytes
    first_ms: int  # when the first attempt started (the retry budget counts from it)
    attempts: int = 0
    seq: int | None = None  # set when an append was acked
    spilled: bool = False  # its inline bytes went to blobs after a refusal


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


@dataclass(frozen=True, slots=True)
class Switch:
    """A move the mount waits to make: fork a child of its change, or go to ``target``."""

    fork: bool
    target: int = 0


def placed(op: Op, blobs: BlobStore) -> Op:
    """Return ``op`` with content too large to travel inline stored as a blob first.

    The SDK's decision (`engine.driver.goes_inline`, as `mesa._fs` writes), for the
    bytes and for each term of a write-back (as `mesa._mount` logs them).
    """

    def place(content: Content) -> Content:
        data = content.inline_bytes()
        if data is not None and not driver.goes_inline(len(data)):
            return Content.from_segments([blobs.put(data)])
        return content

    if isinstance(op, Write):
        terms = tuple(map(place, op.terms))
        return dataclasses.replace(op, content=place(op.content), terms=terms)
    if isinstance(op, Append):
        return dataclasses.replace(op, content=place(op.content))
    return op


def written_back(op: Op, tree: Tree, blobs: BlobStore) -> Op:
    """Return a write of a conflict's block with the terms it logs (`engine.driver.writeback`).

    What the SDK's mount does before it issues a write (`mesa._mount`): parse the
    bytes against the conflict the writer sees, reading blobs where it must.
    """
    if not isinstance(op, Write) or op.terms:
        return op
    node = tree.lookup(op.path)
    if not isinstance(node, FileNode) or node.value.is_resolved():
        return op
    seen_bytes = [b"" if v is None else blobs.bytes_of(v) for v in node.value.terms()]
    return driver.writeback(op, node.value, seen_bytes, blobs.bytes_of(op.content))


class SimMount:
    """One mount of the repo (see module docstring)."""

    def __init__(self, index: int, window_ms: int, snapshot_every: int | None = None) -> None:
        self.index = index
        self.window_ms = window_ms
        self.incarnation = 0
        self.change = 0
        self.replica: Replica | None = Replica(self.author, ChangeState(window_ms=window_ms))
        self.in_flight: dict[str, InFlight] = {}
        self.snapshot: bytes | None = None  # the last snapshot this mount stored
        self.link = Link()
        self.snapshot_every = snapshot_every
        self.cadence = driver.SnapshotCadence(snapshot_every)
        self.switch: Switch | None = None

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

    def spill(self, op_id: str, blobs: BlobStore) -> bool:
        """The server refused ``op_id``'s entry as too large: move its inline bytes to blobs.

        Returns:
            Whether there was anything to spill; if not, the op cannot be appended (the
            SDK reports ENAMETOOLONG). After a spill the same op id goes again.
        """
        in_flight = self.in_flight[op_id]
        inline = driver.inline_segments(in_flight.entry)
        if not inline:
            return False
        refs = [blobs.put(seg.data) for seg in inline]
        in_flight.entry = driver.spilled(in_flight.entry, refs)
        in_flight.payload = encode_entry(in_flight.entry)
        in_flight.spilled = True
        return True

    def crash(self) -> None:
        """Lose the process: the replica, the in-flight appends, the unsent messages."""
        self.replica = None
        self.in_flight.clear()
        self.link.outbox.clear()
        self.link.inbox.clear()
        self.switch = None

    def restart(self, snapshot: bytes | None, base: ChangeState, entries: int) -> Replica:
        """Start a new incarnation from the change's newest snapshot (or its base).

        ``entries`` is how many of the change's entries the snapshot holds.
        """
        assert self.replica is None
        self.incarnation += 1
        self.replica = Replica(self.author, self._start(snapshot, base))
        self.cadence = driver.SnapshotCadence(self.snapshot_every, entries)
        return self.replica

    def move(self, change: int, snapshot: bytes | None, base: ChangeState) -> Replica:
        """Switch to ``change``: a new replica from its snapshot or base, same author.

        The op counter carries over (`engine.driver.carry_counter`): op ids are message
        ids, deduplicated across the repo's stream. The caller folds the tail and sets
        the cadence.
        """
        assert self.replica is not None
        assert not self.in_flight
        fresh = Replica(self.author, self._start(snapshot, base))
        self.replica = driver.carry_counter(self.replica, fresh)
        self.change = change
        self.switch = None
        return self.replica

    def _start(self, snapshot: bytes | None, base: ChangeState) -> ChangeState:
        """The state a fold starts from (`mesa._changes.start_state`); ``base`` is fresh."""
        return decode_snapshot(snapshot) if snapshot is not None else base

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
