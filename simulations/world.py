"""The discrete-event world: mounts, network and sequencer on one virtual clock.

Single-threaded, no asyncio, no real time: a priority queue of
``(virtual_time_ms, tiebreak counter, event)``, and one `random.Random(seed)` for
every choice, drawn in a fixed order. Nothing iterates a set or a dict of strings
without sorting, so PYTHONHASHSEED does not matter.

The run has two phases. While steps remain, each ``Act`` event lets one mount draw
an op (simulations/workload.py) against its own tree and issue it through its
`Replica`, and may inject a fault (simulations/faults.py). Once the steps are
spent the world **quiesces**: partitions heal, crashed mounts restart, no new fault
is injected, and the queue drains (the liveness phase; retries and held messages
still arrive). The runner then runs the final checks.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass

from engine import driver
from engine.codec import decode_entry, encode_entry
from engine.errors import FsError
from engine.ops import Logged
from simulations import checkers
from simulations.checkers import PrefixHashes
from simulations.faults import FaultPlan
from simulations.known import Findings
from simulations.mount import InFlight, SimMount
from simulations.oracle import Oracle, describe_op
from simulations.sequencer import Sequencer, Stored
from simulations.trace import Trace
from simulations.workload import Mix, Workload

T0_MS = 1_700_000_000_000
DEDUPE_ESCAPE_MS = (121_000, 200_000)


#: The snapshot cadence of the simulated mounts (`engine.driver.SnapshotCadence`): small,
#: so a run of a few hundred steps stores several; mounts also snapshot at random acts.
SNAPSHOT_EVERY = 16


@dataclass(frozen=True, slots=True)
class Act:
    """One step: a mount draws and issues an op."""


@dataclass(frozen=True, slots=True)
class AppendArrives:
    """An append request reaches the sequencer."""

    mount: int
    incarnation: int
    op_id: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    """The sequencer's answer to an append reaches the mount (``seq`` 0: an error)."""

    mount: int
    incarnation: int
    op_id: str
    seq: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """A log entry reaches a mount's subscription."""

    mount: int
    incarnation: int
    stored: Stored


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


Event = Act | AppendArrives | Reply | Deliver | Retry | Restart | Heal


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
        self.workload = Workload(self.rng, self.mix)
        self.steps = steps
        self.window_ms = window_ms
        self.trace = trace
        self.findings = findings
        self.coverage: Counter[str] = Counter()
        self.now_ms = T0_MS
        self.queue: list[tuple[int, int, Event]] = []
        self._tiebreak = 0
        self.sequencer = Sequencer()
        self.oracle = Oracle(window_ms, self.coverage, findings)
        self.prefix = PrefixHashes()
        self.mounts = [SimMount(i, window_ms, SNAPSHOT_EVERY) for i in range(mounts)]
        self.acts = 0
        self.acked = 0
        self.faults_on = True

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
        link = mount.link
        if link.partitioned:
            link.inbox.append(message)
            return
        at_ms = self.now_ms + self._latency_ms()
        if isinstance(message, Deliver) and not self.plan.reorder:
            at_ms = max(at_ms, link.down_last_ms)
            link.down_last_ms = at_ms
        self.schedule(at_ms, message)
        if (
            isinstance(message, Deliver)
            and self.faults_on
            and self.rng.random() < self.plan.duplicate_rate
        ):
            self.schedule(self.now_ms + self._latency_ms(), message)

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

    # -- steps and faults --------------------------------------------------------------

    def _on_act(self) -> None:
        self.acts += 1
        if self.faults_on:
            self._inject_faults()
        mount = self.mounts[self.rng.randrange(len(self.mounts))]
        if mount.replica is not None:
            if self.rng.random() < 0.15:
                seq = mount.take_snapshot()
                self.trace.record(self.now_ms, "snapshot", mount.name, seq)
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
        from_snapshot = mount.snapshot is not None
        replica = mount.restart()
        self.coverage["crash_restart"] += 1
        if from_snapshot:
            self.coverage["restart_from_snapshot"] += 1
        tree_hash = replica.state.tree.hash()
        self.trace.record(self.now_ms, "restart", mount.name, replica.seq, detail=tree_hash)
        self.prefix.observe(f"{mount.author} (restored)", replica.seq, tree_hash)
        for stored in self.sequencer.tail(replica.seq):
            self._to_mount(mount, Deliver(mount.index, mount.incarnation, stored))

    # -- appends -----------------------------------------------------------------------

    def _send_append(self, mount: SimMount, op_id: str) -> None:
        in_flight = mount.in_flight[op_id]
        in_flight.attempts += 1
        message = AppendArrives(mount.index, mount.incarnation, op_id, in_flight.payload)
        self._to_sequencer(mount, message)

    def _on_append(self, event: AppendArrives) -> None:
        mount = self.mounts[event.mount]
        failure = None
        if self.faults_on and self.rng.random() < self.plan.append_fail_rate:
            failure = self.rng.choice(("before-store", "after-store"))
        seq = 0
        if failure != "before-store":
            interleaved = self.faults_on and self.rng.random() < self.plan.interleave_rate
            gap = self.rng.randint(1, 3) if interleaved else 0
            result = self.sequencer.append(event.payload, event.op_id, self.now_ms, gap=gap)
            if result.duplicate:
                self.coverage["dedupe_sequencer"] += 1
                self.trace.record(self.now_ms, "dedupe", mount.name, result.seq, event.op_id)
            else:
                self._on_stored(self.sequencer.entries[-1])
            seq = result.seq
        if failure is not None:
            self.trace.record(self.now_ms, "append_fail", mount.name, seq, event.op_id, failure)
            seq = 0
        self._to_mount(mount, Reply(event.mount, event.incarnation, event.op_id, seq))

    def _on_stored(self, stored: Stored) -> None:
        logged = Logged(stored.seq, stored.time_ms, decode_entry(stored.payload))
        tree_hash = self.oracle.observe(logged)
        self.prefix.observe("oracle", stored.seq, tree_hash)
        detail = f"t={stored.time_ms} {tree_hash}"
        self.trace.record(self.now_ms, "store", "-", stored.seq, stored.msg_id, detail)
        for mount in self.mounts:
            if mount.up:
                self._to_mount(mount, Deliver(mount.index, mount.incarnation, stored))

    def _on_reply(self, event: Reply) -> None:
        mount = self.mounts[event.mount]
        in_flight = mount.in_flight.get(event.op_id)
        if mount.incarnation != event.incarnation or in_flight is None:
            return
        if event.seq:
            in_flight.seq = event.seq
            self._acknowledge(mount)
            return
        delay_ms = driver.DEFAULT_RETRY.delay_ms(
            in_flight.attempts, self.now_ms - in_flight.first_ms
        )
        if delay_ms is None:
            del mount.in_flight[event.op_id]
            self.trace.record(self.now_ms, "give_up", mount.name, 0, event.op_id)
            return
        self.coverage["append_retry"] += 1
        if self.faults_on and self.rng.random() < self.plan.slow_retry_rate:
            delay_ms = self.rng.randint(*DEDUPE_ESCAPE_MS)
        self.schedule(self.now_ms + delay_ms, Retry(mount.index, mount.incarnation, event.op_id))

    def _acknowledge(self, mount: SimMount) -> None:
        for op_id, in_flight in mount.acknowledge():
            self.acked += 1
            self.trace.record(self.now_ms, "ack", mount.name, in_flight.seq or 0, op_id)

    # -- folding -----------------------------------------------------------------------

    def _on_deliver(self, event: Deliver) -> None:
        mount = self.mounts[event.mount]
        replica = mount.replica
        if replica is None or mount.incarnation != event.incarnation:
            return
        stored = event.stored
        folds = stored.seq > replica.seq and stored.prev_seq == replica.seq
        before = checkers.clone_state(replica.state) if folds else None
        folded = replica.receive(stored.seq, stored.prev_seq, stored.time_ms, stored.payload)
        if replica.waiting:
            self.coverage["out_of_order"] += 1
        if not folded:
            duplicate = stored.seq <= replica.seq
            if duplicate:
                self.coverage["duplicate_delivery"] += 1
            kind = "drop" if duplicate else "early"
            self.trace.record(self.now_ms, kind, mount.name, stored.seq, stored.msg_id)
            return
        assert before is not None
        checkers.check_events(mount.author, before, folded, self.findings)
        tree_hash = replica.state.tree.hash()
        self.prefix.observe(mount.author, replica.seq, tree_hash)
        self.trace.record(self.now_ms, "fold", mount.name, replica.seq, "-", tree_hash)
        if mount.observe_folds(folded):
            self.trace.record(self.now_ms, "snapshot", mount.name, replica.seq, detail="cadence")
        self._acknowledge(mount)
