"""The discrete-event world: mounts, network, sequencer and blob store on one virtual clock.

Single-threaded, no asyncio, no real time: a priority queue of
``(virtual_time_ms, tiebreak counter, event)``, and one `random.Random(seed)` for
every choice, drawn in a fixed order. Nothing iterates a set or a dict of strings
without sorting, so PYTHONHASHSEED does not matter.

The run has two phases. While steps remain, each ``Act`` event lets one mount draw
an op (simulations/workload.py) against its own tree and issue it through its
`Replica`, or fork a new change of the repo or move to another one, and may inject a
fault (simulations/faults.py). Once the steps are spent the world **quiesces**:
partitions heal, crashed mounts restart, no new fault is injected, and the queue
drains (the liveness phase; retries, held messages, re-subscriptions and waiting
switches still happen). The runner then runs the final checks.

**Changes.** The repo starts with one change (index 0, an empty base). A mount that
forks seals its folded state (a snapshot) as the base of a new child change and moves
to it; a mount may also move to any existing change. Either way it waits, as the SDK's
``RepoMount.exclusive`` does, until none of its writes is in flight (its writes are
held meanwhile), starts from the change's newest snapshot or its base, folds the
change's log to its end, and keeps its author and op counter
(`engine.driver.carry_counter`). Every change has its own oracle, prefix hashes and
snapshots; the sequencer keeps all changes in one stream.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field

from engine import driver
from engine.codec import decode_entry, encode_entry
from engine.errors import FsError
from engine.fold import ChangeState
from engine.ops import Append, Entry, Logged, Write
from engine.snapshot import decode_snapshot, encode_snapshot
from engine.treemerge import fresh_state
from simulations import checkers
from simulations.blobs import BlobStore
from simulations.checkers import PrefixHashes
from simulations.failure import CheckFailedError
from simulations.faults import FaultPlan
from simulations.known import Findings
from simulations.mount import InFlight, SimMount, Switch, placed, written_back
from simulations.oracle import Oracle, describe_op
from simulations.sequencer import Sequencer, Stored
from simulations.trace import Trace
from simulations.workload import Mix, Workload

T0_MS = 1_700_000_000_000
DEDUPE_ESCAPE_MS = (121_000, 200_000)
#: How long a subscription takes to notice a lost delivery and re-subscribe (an idle
#: heartbeat of the ordered consumer).
STALL_MS = (200, 5_000)

#: The snapshot cadence of the simulated mounts (`engine.driver.SnapshotCadence`): small,
#: so a run of a few hundred steps stores several; mounts also snapshot at random acts.
SNAPSHOT_EVERY = 16
#: At most this many changes per run (forks stop there; moves between them go on).
MAX_CHANGES = 4
#: The server's payload limit, per seed: NATS's default, or small ones under which
#: medium contents that would travel inline are refused (the mount spills them).
PAYLOAD_LIMITS = (1024 * 1024, 48 * 1024, 16 * 1024, 6 * 1024)


@dataclass(frozen=True, slots=True)
class Act:
    """One step: a mount draws and issues an op (or forks or moves to another change)."""


@dataclass(frozen=True, slots=True)
class AppendArrives:
    """An append request reaches the sequencer."""

    mount: int
    incarnation: int
    op_id: str
    payload: bytes
    change: int = 0


@dataclass(frozen=True, slots=True)
class Reply:
    """The sequencer's answer to an append reaches the mount.

    ``error``: empty when stored (``seq``), ``unavailable`` when the append failed or
    its answer was lost, ``too_large`` when the payload exceeds the server's limit.
    """

    mount: int
    incarnation: int
    op_id: str
    seq: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class Deliver:
    """A log entry reaches a mount's subscription (``via``: live, dup, redeliver, tail, resub)."""

    mount: int
    incarnation: int
    stored: Stored
    via: str = "live"


@dataclass(frozen=True, slots=True)
class Retry:
    """A mount retries a failed append with the same op id."""

    mount: int
    incarnation: int
    op_id: str


@dataclass(frozen=True, slots=True)
class Restart:
    """A crashed mount starts again."""

    mount: int


@dataclass(frozen=True, slots=True)
class Heal:
    """A partitioned mount's link comes back."""

    mount: int


@dataclass(frozen=True, slots=True)
class Resubscribe:
    """A mount's subscription noticed a lost delivery and starts again after its last fold."""

    mount: int
    incarnation: int
    change: int
    lost_seq: int


Event = Act | AppendArrives | Reply | Deliver | Retry | Restart | Heal | Resubscribe


@dataclass(slots=True)
class ChangeSim:
    """One change of the repo: its base, its oracle and checks, its newest snapshot."""

    index: int
    parent: int | None
    sealed: bytes | None  # the parent's state it was forked from; None: an empty base
    oracle: Oracle
    prefix: PrefixHashes = field(default_factory=PrefixHashes)
    snapshot: tuple[int, bytes] | None = None  # (seq, data) of the newest one stored

    def base(self, window_ms: int) -> ChangeState:
        """A fresh copy of the state the change starts from (`mesa._changes.base_state`)."""
        return base_state(self.sealed, window_ms)


def base_state(sealed: bytes | None, window_ms: int) -> ChangeState:
    """The state a change starts from: empty, or its parent's sealed tree, nothing folded."""
    if sealed is None:
        return ChangeState(window_ms=window_ms)
    return fresh_state(decode_snapshot(sealed).tree, window_ms)


class World:
    """One simulated run (see module docstring)."""

    def __init__(
        self,
        seed: int,
        mounts: int,
        steps: int,
        profile: str,
        window_ms: int,
        trace: Trace,
        findings: Findings,
    ) -> None:
        self.rng = random.Random(seed)
        self.plan = FaultPlan.choose(profile, self.rng)
        self.mix = Mix.choose(self.rng)
        self.max_payload = self.rng.choice(PAYLOAD_LIMITS)
        self.blobs = BlobStore()
        self.workload = Workload(self.rng, self.mix, read=self.blobs.bytes_of)
        self.steps = steps
        self.window_ms = window_ms
        self.trace = trace
        self.findings = findings
        self.coverage: Counter[str] = Counter()
        self.now_ms = T0_MS
        self.queue: list[tuple[int, int, Event]] = []
        self._tiebreak = 0
        self.sequencer = Sequencer(max_payload=self.max_payload)
        self.changes: list[ChangeSim] = []
        self._new_change(None, None)
        self.mounts = [SimMount(i, window_ms, SNAPSHOT_EVERY) for i in range(mounts)]
        self.spilled: dict[str, Entry] = {}  # op id -> the entry before its spill
        self.acts = 0
        self.acked = 0
        self.faults_on = True

    @property
    def oracle(self) -> Oracle:
        """The oracle of the repo's first change."""
        return self.changes[0].oracle

    @property
    def prefix(self) -> PrefixHashes:
        """The prefix hashes of the repo's first change."""
        return self.changes[0].prefix

    def _new_change(self, parent: int | None, sealed: bytes | None) -> ChangeSim:
        oracle = Oracle(
            self.window_ms,
            self.coverage,
            self.findings,
            base=base_state(sealed, self.window_ms),
            read=self.blobs.bytes_of,
        )
        change = ChangeSim(len(self.changes), parent, sealed, oracle)
        change.prefix.observe("oracle", 0, oracle.tree.hash())
        self.changes.append(change)
        return change

    # -- the loop --------------------------------------------------------------------

    def schedule(self, at_ms: int, event: Event) -> None:
        """Queue ``event`` at virtual time ``at_ms`` (never in the past)."""
        self._tiebreak += 1
        heapq.heappush(self.queue, (max(at_ms, self.now_ms), self._tiebreak, event))

    def run(self) -> None:
        """Run until the queue drains.

        Raises:
            CheckFailedError: a checker found a violation.
        """
        self.schedule(self.now_ms, Act())
        while self.queue:
            at_ms, _, event = heapq.heappop(self.queue)
            self.now_ms = at_ms
            self._dispatch(event)
            if self.faults_on and self.acts >= self.steps:
                self._quiesce()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Act):
            self._on_act()
        elif isinstance(event, AppendArrives):
            self._on_append(event)
        elif isinstance(event, Reply):
            self._on_reply(event)
        elif isinstance(event, Deliver):
            self._on_deliver(event)
        elif isinstance(event, Retry):
            mount = self.mounts[event.mount]
            if mount.incarnation == event.incarnation and event.op_id in mount.in_flight:
                self._send_append(mount, event.op_id)
        elif isinstance(event, Restart):
            self._on_restart(self.mounts[event.mount])
        elif isinstance(event, Resubscribe):
            self._on_resubscribe(event)
        else:
            self._on_heal(self.mounts[event.mount])

    def _quiesce(self) -> None:
        """Stop injecting faults; heal every partition and restart every crashed mount."""
        self.faults_on = False
        self.trace.record(self.now_ms, "quiesce")
        for mount in self.mounts:
            if mount.link.partitioned:
                self._on_heal(mount)
            if not mount.up:
                self._on_restart(mount)

    # -- network -----------------------------------------------------------------------

    def _latency_ms(self) -> int:
        delay = self.rng.randint(1, self.plan.latency_ms_max)
        if self.faults_on and self.rng.random() < self.plan.spike_rate:
            delay += self.rng.randint(500, 3000)
        return delay

    def _to_sequencer(self, mount: SimMount, message: AppendArrives) -> None:
        link = mount.link
        if link.partitioned:
            link.outbox.append(message)
            return
        at_ms = self.now_ms + self._latency_ms()
        if not self.plan.reorder:
            at_ms = max(at_ms, link.up_last_ms)
            link.up_last_ms = at_ms
        self.schedule(at_ms, message)

    def _to_mount(self, mount: SimMount, message: Deliver | Reply) -> None:
        link, plan, rng = mount.link, self.plan, self.rng
        if link.partitioned:
            link.inbox.append(message)
            return
        if isinstance(message, Deliver) and self._faulty(plan.drop_rate):
            stored = message.stored
            self.coverage["delivery_lost"] += 1
            self.trace.record(self.now_ms, "lost", mount.name, stored.seq, stored.msg_id)
            resubscribe = Resubscribe(mount.index, mount.incarnation, stored.change, stored.seq)
            self.schedule(self.now_ms + rng.randint(*STALL_MS), resubscribe)
            return
        at_ms = self.now_ms + self._latency_ms()
        if isinstance(message, Deliver) and not plan.reorder:
            at_ms = max(at_ms, link.down_last_ms)
            link.down_last_ms = at_ms
        self.schedule(at_ms, message)
        if not isinstance(message, Deliver):
            return
        if self.faults_on and rng.random() < plan.duplicate_rate:
            dup = Deliver(message.mount, message.incarnation, message.stored, "dup")
            self.schedule(self.now_ms + self._latency_ms(), dup)
        if (
            message.via == "live"
            and mount.replica is not None
            and self._faulty(plan.redeliver_rate)
        ):
            # The server delivers again an entry this mount has already folded.
            change = message.stored.change
            folded = self.sequencer.log(change)[
                : self.sequencer.count_upto(change, mount.replica.seq)
            ]
            if folded:
                again = Deliver(mount.index, mount.incarnation, rng.choice(folded), "redeliver")
                self.schedule(at_ms + rng.randint(0, 2000), again)

    def _faulty(self, rate: float) -> bool:
        """Whether a fault of ``rate`` strikes now (no draw when it is off)."""
        return bool(rate) and self.faults_on and self.rng.random() < rate

    def _on_heal(self, mount: SimMount) -> None:
        link = mount.link
        link.partitioned = False
        outbox, inbox = link.outbox, link.inbox
        link.outbox, link.inbox = [], []
        self.trace.record(self.now_ms, "heal", mount.name, detail=f"{len(outbox)}/{len(inbox)}")
        if outbox:
            self.coverage["partition_release"] += 1
        for up in outbox:
            assert isinstance(up, AppendArrives)
            self._to_sequencer(mount, up)
        for down in inbox:
            assert isinstance(down, Deliver | Reply)
            self._to_mount(mount, down)
        self._settle(mount)

    def _on_resubscribe(self, event: Resubscribe) -> None:
        mount = self.mounts[event.mount]
        replica = mount.replica
        if (
            replica is None
            or mount.incarnation != event.incarnation
            or mount.change != event.change
        ):
            return
        self.trace.record(self.now_ms, "resubscribe", mount.name, replica.seq)
        if event.lost_seq > replica.seq:
            self.coverage["resubscribed"] += 1
        for stored in self.sequencer.tail(replica.seq, mount.change):
            self._to_mount(mount, Deliver(mount.index, mount.incarnation, stored, "resub"))

    # -- steps and faults --------------------------------------------------------------

    def _on_act(self) -> None:
        self.acts += 1
        if self.faults_on:
            self._inject_faults()
        mount = self.mounts[self.rng.randrange(len(self.mounts))]
        if mount.replica is not None:
            if (
                mount.switch is None
                and self.mix.switch_rate
                and self.rng.random() < self.mix.switch_rate
            ):
                self._request_switch(mount)
            self._settle(mount)
            if mount.switch is not None:
                self.trace.record(self.now_ms, "held", mount.name, mount.replica.seq)
            else:
                if self.rng.random() < 0.15:
                    self._keep_snapshot(mount, mount.take_snapshot(), "act")
                self._issue(mount)
        if self.acts < self.steps:
            if self.rng.random() < self.mix.far_rate:
                gap_ms = self.rng.randint(self.window_ms, 3 * self.window_ms)
            else:
                gap_ms = int(self.rng.expovariate(1.0 / self.mix.gap_ms_mean))
            self.schedule(self.now_ms + gap_ms, Act())

    def _issue(self, mount: SimMount) -> None:
        replica = mount.replica
        assert replica is not None
        kind, op = self.workload.next_op(replica.state.tree)
        op = placed(written_back(op, replica.state.tree, self.blobs), self.blobs)
        try:
            entry = replica.issue(op)
        except FsError as exc:
            self.coverage["rejected_op"] += 1
            self.trace.record(self.now_ms, "reject", mount.name, replica.seq, detail=exc.message)
            return
        if entry is None:
            self.trace.record(self.now_ms, "noop", mount.name, replica.seq, detail=kind)
            return
        detail = describe_op(op)
        self.trace.record(self.now_ms, "issue", mount.name, entry.seen, entry.op_id, detail)
        op_id = driver.msg_id(entry)
        mount.in_flight[op_id] = InFlight(entry, encode_entry(entry), self.now_ms)
        self._send_append(mount, op_id)

    def _keep_snapshot(self, mount: SimMount, seq: int, why: str) -> None:
        """The snapshot ``mount`` just took becomes its change's newest (`mesa._snapshots`)."""
        assert mount.snapshot is not None
        change = self.changes[mount.change]
        if change.snapshot is None or change.snapshot[0] <= seq:
            change.snapshot = (seq, mount.snapshot)
        self.trace.record(self.now_ms, "snapshot", mount.name, seq, detail=why)

    def _inject_faults(self) -> None:
        rng, plan = self.rng, self.plan
        if rng.random() < plan.crash_rate:
            up = [m for m in self.mounts if m.up]
            if len(up) > 1:
                mount = rng.choice(up)
                mount.crash()
                self.trace.record(self.now_ms, "crash", mount.name)
                self.schedule(self.now_ms + rng.randint(50, 3000), Restart(mount.index))
        if rng.random() < plan.partition_rate:
            free = [m for m in self.mounts if not m.link.partitioned]
            if free:
                mount = rng.choice(free)
                mount.link.partitioned = True
                self.trace.record(self.now_ms, "partition", mount.name)
                self.schedule(self.now_ms + rng.randint(200, 5000), Heal(mount.index))
        if rng.random() < plan.clock_jump_rate:
            forward, backward = rng.randint(2000, 10_000), -rng.randint(2000, 10_000)
            delta_ms = rng.choice((forward, backward, rng.randint(*DEDUPE_ESCAPE_MS)))
            self.sequencer.jump_clock(delta_ms)
            self.coverage["clock_jump"] += 1
            self.trace.record(self.now_ms, "clock_jump", detail=str(delta_ms))

    def _on_restart(self, mount: SimMount) -> None:
        if mount.up:
            return
        change = self.changes[mount.change]
        seq, data = change.snapshot if change.snapshot is not None else (0, None)
        entries = self.sequencer.count_upto(mount.change, seq)
        replica = mount.restart(data, change.base(self.window_ms), entries)
        self.coverage["crash_restart"] += 1
        if data is not None:
            self.coverage["restart_from_snapshot"] += 1
        tree_hash = replica.state.tree.hash()
        self.trace.record(self.now_ms, "restart", mount.name, replica.seq, detail=tree_hash)
        change.prefix.observe(f"{mount.author} (restored)", replica.seq, tree_hash)
        for stored in self.sequencer.tail(replica.seq, mount.change):
            self._to_mount(mount, Deliver(mount.index, mount.incarnation, stored, "tail"))

    # -- changes -----------------------------------------------------------------------

    def _request_switch(self, mount: SimMount) -> None:
        """The acting mount will fork a child of its change, or move to another change."""
        if len(self.changes) < MAX_CHANGES and (len(self.changes) == 1 or self.rng.random() < 0.5):
            mount.switch = Switch(fork=True)
        else:
            others = [c.index for c in self.changes if c.index != mount.change]
            mount.switch = Switch(fork=False, target=self.rng.choice(others))

    def _settle(self, mount: SimMount) -> None:
        """Make the switch ``mount`` waits for, once none of its writes is in flight."""
        if (
            mount.switch is None
            or mount.replica is None
            or mount.in_flight
            or mount.link.partitioned
        ):
            return
        replica, switch, old = mount.replica, mount.switch, mount.change
        if switch.fork:
            # fs.changes.new: seal the folded state as the child's base, then move to it.
            child = self._new_change(old, encode_snapshot(replica.state))
            target = child.index
            self.coverage["change_forked"] += 1
            sealed_hash, base_hash = replica.state.tree.hash(), child.oracle.tree.hash()
            if base_hash != sealed_hash:
                raise CheckFailedError(
                    "a:same-prefix-same-tree",
                    f"change {target} starts from tree {base_hash[:16]}, but {mount.author}"
                    f" sealed {sealed_hash[:16]} at seq {replica.seq} of change {old}",
                )
        else:
            target = switch.target
            self.coverage["change_switched"] += 1
        change = self.changes[target]
        seq, data = change.snapshot if change.snapshot is not None else (0, None)
        replica = mount.move(target, data, change.base(self.window_ms))
        change.prefix.observe(f"{mount.author} (opened)", replica.seq, replica.state.tree.hash())
        # Fold the change's log to its end before the move completes (open_live).
        before = checkers.clone_state(replica.state)
        folded = []
        for stored in self.sequencer.tail(replica.seq, target):
            folded += replica.receive(stored.seq, stored.prev_seq, stored.time_ms, stored.payload)
        if folded:
            checkers.check_events(mount.author, before, folded, self.findings)
            change.prefix.observe(mount.author, replica.seq, replica.state.tree.hash())
        mount.cadence = driver.SnapshotCadence(
            mount.snapshot_every, self.sequencer.count_upto(target, replica.seq)
        )
        detail = f"{old}->{target} from {seq}"
        self.trace.record(
            self.now_ms, "fork" if switch.fork else "switch", mount.name, replica.seq, detail=detail
        )

    # -- appends -----------------------------------------------------------------------

    def _send_append(self, mount: SimMount, op_id: str, *, attempt: bool = True) -> None:
        in_flight = mount.in_flight[op_id]
        if attempt:
            in_flight.attempts += 1
        message = AppendArrives(
            mount.index, mount.incarnation, op_id, in_flight.payload, mount.change
        )
        self._to_sequencer(mount, message)

    def _on_append(self, event: AppendArrives) -> None:
        mount = self.mounts[event.mount]
        failure = None
        if self.faults_on and self.rng.random() < self.plan.append_fail_rate:
            failure = self.rng.choice(("before-store", "after-store"))
        seq, error = 0, ""
        if failure != "before-store":
            interleaved = self.faults_on and self.rng.random() < self.plan.interleave_rate
            gap = self.rng.randint(1, 3) if interleaved else 0
            result = self.sequencer.append(
                event.payload, event.op_id, self.now_ms, gap=gap, change=event.change
            )
            if result.too_large:
                error = "too_large"
                self.trace.record(self.now_ms, "too_large", mount.name, 0, event.op_id)
            elif result.duplicate:
                self.coverage["dedupe_sequencer"] += 1
                self.trace.record(self.now_ms, "dedupe", mount.name, result.seq, event.op_id)
            else:
                assert result.stored is not None
                self._on_stored(result.stored)
            seq = result.seq
        if failure is not None:
            self.trace.record(self.now_ms, "append_fail", mount.name, seq, event.op_id, failure)
            seq, error = 0, "unavailable"
        reply = Reply(event.mount, event.incarnation, event.op_id, seq, error)
        self._to_mount(mount, reply)

    def _on_stored(self, stored: Stored) -> None:
        change = self.changes[stored.change]
        entry = decode_entry(stored.payload)
        logged = Logged(stored.seq, stored.time_ms, entry)
        original = self.spilled.get(stored.msg_id)
        if original is not None:
            checkers.check_spill(change.oracle.state, logged, original, self.blobs.bytes_of)
        if isinstance(entry.op, Write | Append) and entry.op.content.blob_digests():
            self.coverage["blob_content"] += 1
        tree_hash = change.oracle.observe(logged)
        change.prefix.observe("oracle", stored.seq, tree_hash)
        detail = f"c{stored.change} t={stored.time_ms} {tree_hash}"
        self.trace.record(self.now_ms, "store", "-", stored.seq, stored.msg_id, detail)
        for mount in self.mounts:
            if mount.up and mount.change == stored.change:
                self._to_mount(mount, Deliver(mount.index, mount.incarnation, stored))

    def _on_reply(self, event: Reply) -> None:
        mount = self.mounts[event.mount]
        in_flight = mount.in_flight.get(event.op_id)
        if mount.incarnation != event.incarnation or in_flight is None:
            return
        if not event.error:
            in_flight.seq = event.seq
            self._acknowledge(mount)
            return
        if event.error == "too_large":
            original = in_flight.entry
            if mount.spill(event.op_id, self.blobs):
                # Refused before anything was stored: the same op id goes again.
                self.spilled.setdefault(event.op_id, original)
                self.coverage["spill"] += 1
                self.trace.record(self.now_ms, "spill", mount.name, 0, event.op_id)
                self._send_append(mount, event.op_id, attempt=False)
                return
            self._give_up(mount, event.op_id, "too-large")
            return
        delay_ms = driver.DEFAULT_RETRY.delay_ms(
            in_flight.attempts, self.now_ms - in_flight.first_ms
        )
        if delay_ms is None:
            self._give_up(mount, event.op_id, "-")
            return
        self.coverage["append_retry"] += 1
        if self.faults_on and self.rng.random() < self.plan.slow_retry_rate:
            delay_ms = self.rng.randint(*DEDUPE_ESCAPE_MS)
        self.schedule(self.now_ms + delay_ms, Retry(mount.index, mount.incarnation, event.op_id))

    def _give_up(self, mount: SimMount, op_id: str, why: str) -> None:
        del mount.in_flight[op_id]
        self.trace.record(self.now_ms, "give_up", mount.name, 0, op_id, why)
        self._settle(mount)

    def _acknowledge(self, mount: SimMount) -> None:
        for op_id, in_flight in mount.acknowledge():
            seq = in_flight.seq or 0
            stored = self.sequencer.at(seq)
            if stored is None or stored.msg_id != op_id or stored.change != mount.change:
                there = (
                    "nothing" if stored is None else f"{stored.msg_id} of change {stored.change}"
                )
                raise CheckFailedError(
                    "c:no-lost-write",
                    f"{mount.name} acknowledged {op_id} at seq {seq} of change {mount.change},"
                    f" but the stream holds {there} there: the write is not in its log",
                )
            self.acked += 1
            self.trace.record(self.now_ms, "ack", mount.name, seq, op_id)
        self._settle(mount)

    # -- folding -----------------------------------------------------------------------

    def _on_deliver(self, event: Deliver) -> None:
        mount = self.mounts[event.mount]
        replica = mount.replica
        stored = event.stored
        if replica is None or mount.incarnation != event.incarnation:
            return
        if mount.change != stored.change:
            return  # a delivery of the change this mount left
        folds = stored.seq > replica.seq and stored.prev_seq == replica.seq
        before = checkers.clone_state(replica.state) if folds else None
        folded = replica.receive(stored.seq, stored.prev_seq, stored.time_ms, stored.payload)
        if replica.waiting:
            self.coverage["out_of_order"] += 1
        if not folded:
            duplicate = stored.seq <= replica.seq
            if duplicate:
                self.coverage["duplicate_delivery"] += 1
                if event.via == "redeliver":
                    self.coverage["redelivered"] += 1
            kind = "drop" if duplicate else "early"
            self.trace.record(self.now_ms, kind, mount.name, stored.seq, stored.msg_id)
            return
        assert before is not None
        checkers.check_events(mount.author, before, folded, self.findings)
        tree_hash = replica.state.tree.hash()
        self.changes[mount.change].prefix.observe(mount.author, replica.seq, tree_hash)
        self.trace.record(self.now_ms, "fold", mount.name, replica.seq, "-", tree_hash)
        if mount.observe_folds(folded):
            self._keep_snapshot(mount, replica.seq, "cadence")
        self._acknowledge(mount)
