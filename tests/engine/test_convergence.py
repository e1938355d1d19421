"""Property tests for the engine: fold determinism, convergence, races and lost writes.

A small pure-Python harness drives the production state machine (`engine.replica.Replica`)
the way the mount does: a random mount issues a random op against its *own* replica's
tree (invalid ops raise `FsError` and are skipped; ``None`` is a no-op), the entry is
encoded with the real codec and appended to a simulated log, which gives it a sequence
(with gaps: other changes' entries share the stream), its predecessor's sequence and a
timestamp from a virtual clock. Each replica receives the log in its own random order:
random subsets, duplicates, out of order (the replica buffers by ``prev_seq``). At the
end everything is delivered.

The properties (design.md §3 and §5, docs/conflicts.md):

1. fold determinism: replaying the final log from scratch twice gives the same tree,
   equal to every replica's;
2. convergence: replicas that folded the same prefix hold the same tree hash, at every
   step, and all replicas agree at quiescence;
3. conflict iff race (with the exact base the later writer had seen);
4. a conflicted file's rendering holds each side once, in its section, and parses back;
5. no acknowledged write is lost (a step-wise checker, exact on its workload).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import pairwise

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import conflicts
from engine.codec import decode_entry, encode_entry
from engine.content import Content
from engine.errors import FsError
from engine.fold import DEFAULT_WINDOW_MS, ChangeState, Event, fold
from engine.merge import Merge
from engine.ops import (
    Append,
    Chmod,
    Cp,
    Entry,
    Logged,
    Mkdir,
    Mv,
    Op,
    Rm,
    SetMetadata,
    Symlink,
    Utimes,
    Write,
    touched_paths,
)
from engine.paths import RelPath
from engine.replica import Replica
from engine.tree import MAX_VERSIONS, DirNode, FileNode, SymlinkNode, Tree, merge_key

T0 = 1_700_000_000_000

# --- the harness ----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One record of the simulated log, as the transport delivers it."""

    seq: int
    prev_seq: int
    time_ms: int
    payload: bytes


@dataclass
class Sim:
    """A simulated change: a log, a virtual clock and one replica per mount.

    ``ref`` folds every record as it is appended, so ``ref_hash[seq]`` is the hash of
    the log prefix ending at ``seq``: what every replica at that sequence must hold
    (and ``ref_events[seq]`` the events each must report for it).
    """

    n: int
    window_ms: int = DEFAULT_WINDOW_MS
    log: list[Record] = field(default_factory=list)
    clock: int = T0
    replicas: list[Replica] = field(default_factory=list)
    delivered: list[set[int]] = field(default_factory=list)
    folded: list[int] = field(default_factory=list)
    position: dict[int, int] = field(default_factory=dict)
    last_payload: dict[int, bytes] = field(default_factory=dict)
    ref: ChangeState = field(init=False)
    ref_hash: dict[int, str] = field(default_factory=dict)
    ref_events: dict[int, list[Event]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.replicas = [
            Replica(f"m{i}", ChangeState(window_ms=self.window_ms)) for i in range(self.n)
        ]
        self.delivered = [set() for _ in range(self.n)]
        self.folded = [0] * self.n
        self.ref = ChangeState(window_ms=self.window_ms)
        self.ref_hash[0] = self.ref.tree.hash()

    @property
    def last_seq(self) -> int:
        return self.log[-1].seq if self.log else 0

    def tick(self, dt_ms: int) -> None:
        self.clock += dt_ms

    def issue(self, mount: int, op: Op, *, gap: int = 1) -> Entry | None:
        """Issue ``op`` on ``mount``'s replica and append it; None if invalid or a no-op."""
        try:
            entry = self.replicas[mount].issue(op)
        except FsError:
            return None
        if entry is None:
            return None
        payload = encode_entry(entry)
        self.last_payload[mount] = payload
        self.append(payload, gap=gap)
        return entry

    def retry(self, mount: int, *, gap: int = 1) -> None:
        """Log ``mount``'s last payload again: a retried append the transport did not dedupe."""
        if mount in self.last_payload:
            self.append(self.last_payload[mount], gap=gap)

    def append(self, payload: bytes, *, gap: int = 1) -> Record:
        record = Record(self.last_seq + gap, self.last_seq, self.clock, payload)
        self.position[record.seq] = len(self.log)
        self.log.append(record)
        events = fold(self.ref, Logged(record.seq, record.time_ms, decode_entry(payload)))
        self.ref_hash[record.seq] = self.ref.tree.hash()
        self.ref_events[record.seq] = events
        return record

    def deliver(self, replica: int, index: int) -> None:
        """Deliver log record ``index`` (again, if it was already) to ``replica``."""
        record = self.log[index]
        folded = self.replicas[replica].receive(
            record.seq, record.prev_seq, record.time_ms, record.payload
        )
        for item in folded:
            # Each entry folded once, in log order, none skipped, with the same events
            # as the reference fold.
            chained = self.log[self.position[item.seq]].prev_seq
            assert chained == self.folded[replica], "folded out of order, twice, or skipped one"
            assert item.events == self.ref_events[item.seq]
            self.folded[replica] = item.seq
        self.delivered[replica].add(index)

    def catch_up(self, replica: int) -> None:
        """Deliver everything not yet delivered to ``replica``, in log order."""
        for index in range(len(self.log)):
            if index not in self.delivered[replica]:
                self.deliver(replica, index)

    def deliver_all(self, order: list[int], dups: list[int]) -> None:
        """Deliver everything to everyone: a drawn permutation, duplicates mixed in."""
        for replica in range(self.n):
            pending = [i for i in range(len(self.log)) if i not in self.delivered[replica]]
            shuffled = _permute(pending, order)
            for pos, index in enumerate(shuffled):
                self.deliver(replica, index)
                if dups and self.log:
                    self.deliver(replica, dups[pos % len(dups)] % len(self.log))
            assert self.replicas[replica].seq == self.last_seq
            assert self.replicas[replica].waiting == 0

    def check_prefixes(self) -> None:
        """Property 2: a replica at sequence s holds the tree of the log prefix ending at s."""
        by_seq: dict[int, str] = {}
        for replica in self.replicas:
            digest = replica.state.tree.hash()
            assert digest == self.ref_hash[replica.seq], f"{replica.author} at {replica.seq}"
            assert by_seq.setdefault(replica.seq, digest) == digest

    def logged(self) -> list[Logged]:
        return [Logged(r.seq, r.time_ms, decode_entry(r.payload)) for r in self.log]


def _permute(items: list[int], keys: list[int]) -> list[int]:
    """Return ``items`` in an order drawn from ``keys`` (deterministic, shrinks well)."""
    rest = list(items)
    out: list[int] = []
    k = 0
    while rest:
        key = keys[k % len(keys)] if keys else 0
        out.append(rest.pop(key % len(rest)))
        k += 1
    return out


def replay(logged: list[Logged], window_ms: int) -> ChangeState:
    """Fold a whole log from scratch into a fresh state."""
    state = ChangeState(window_ms=window_ms)
    for item in logged:
        fold(state, item)
    return state


def fingerprint(state: ChangeState) -> tuple[object, ...]:
    """Everything a replica holds, hidden state included (inodes, versions, applied ops)."""
    nodes: list[object] = []
    for path, node in state.tree.walk():
        versions = tuple(
            (v.seq, v.time_ms, v.author, None if v.before is None else merge_key(v.before))
            for v in node.versions
        )
        extra: object = None
        if isinstance(node, FileNode):
            extra = merge_key(node.value)
        elif isinstance(node, SymlinkNode):
            extra = node.target
        nodes.append(
            (path, type(node).__name__, node.ino, node.mode, node.mtime_ms, versions, extra)
        )
    applied = (
        sorted(state.applied.watermark.items()),
        sorted((a, sorted(s)) for a, s in state.applied.sparse.items()),
    )
    return (state.seq, state.tree.next_ino, tuple(nodes), applied)


# --- strategies -----------------------------------------------------------------------

NAMES = ("a", "b", "c")
PATHS: list[RelPath] = [(x,) for x in NAMES] + [(x, y) for x in NAMES for y in NAMES]
BYTES = [b"", b"x", b"y", b"x\n", b"y\n", b"x\ny\n", b"x\nz\n"]
# Gaps around the default window: equal, inside, at the edge, just outside, far.
TICKS = [0, 1, 7, 300, 999, 1000, 1001, 2500]

paths = st.one_of(st.sampled_from(PATHS[:3]), st.sampled_from(PATHS))
contents = st.sampled_from(BYTES).map(Content.of)
modes = st.sampled_from([0o644, 0o600, 0o755])


def weighted(*choices: tuple[int, st.SearchStrategy[object]]) -> st.SearchStrategy[object]:
    """Pick a strategy with the given weights (``one_of`` picks branches evenly)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(table))).flatmap(lambda i: table[i])


# Metadata sets: two keys, few values, so sets of one key race and repeat values.
meta_items = st.lists(
    st.tuples(st.sampled_from(["k", "s"]), st.sampled_from([None, "1", "2"])),
    max_size=2,
    unique_by=lambda item: item[0],
).map(lambda items: tuple(sorted(items)))

ops: st.SearchStrategy[Op] = weighted(  # type: ignore[assignment]
    (5, st.builds(Write, paths, contents, modes)),
    (2, st.builds(Append, paths, contents)),
    (1, st.builds(Mkdir, paths, st.just(0o755), st.booleans())),
    (1, st.builds(Rm, paths, st.booleans())),
    (1, st.builds(Mv, paths, paths)),
    (1, st.builds(Cp, paths, paths, st.booleans())),
    (1, st.builds(Chmod, paths, modes)),
    (1, st.builds(Symlink, paths, st.sampled_from(["a", "../b"]))),
    (1, st.builds(Utimes, paths, st.integers(0, 3), st.integers(0, 3))),
    (2, st.builds(SetMetadata, paths, meta_items, st.booleans())),
)


@dataclass(frozen=True)
class DoOp:
    """Issue ``op`` on ``mount``; with ``fresh`` the mount first catches up (a live mount)."""

    mount: int
    op: Op
    gap: int
    fresh: bool


@dataclass(frozen=True)
class Deliver:
    replica: int
    picks: tuple[int, ...]


@dataclass(frozen=True)
class CatchUp:
    replica: int


@dataclass(frozen=True)
class Tick:
    dt_ms: int


@dataclass(frozen=True)
class Retry:
    mount: int


Step = DoOp | Deliver | CatchUp | Tick | Retry

mounts = st.integers(0, 4)


def steps(op_strategy: st.SearchStrategy[Op]) -> st.SearchStrategy[list[Step]]:
    do_op = st.builds(
        DoOp,
        mounts,
        op_strategy,
        st.sampled_from([1, 1, 1, 3]),
        st.sampled_from([False, False, True]),
    )
    step: st.SearchStrategy[Step] = weighted(  # type: ignore[assignment]
        (10, do_op),
        (
            3,
            st.builds(
                Deliver, mounts, st.lists(st.integers(0, 63), min_size=1, max_size=4).map(tuple)
            ),
        ),
        (2, st.builds(CatchUp, mounts)),
        (2, st.builds(Tick, st.sampled_from(TICKS))),
        (1, st.builds(Retry, mounts)),
    )
    return st.lists(step, min_size=25, max_size=70)


def run(sim: Sim, plan: list[Step], *, check: bool = True) -> None:
    """Run ``plan``; with ``check``, test property 2 after every step."""
    for item in plan:
        if isinstance(item, DoOp):
            if item.fresh:
                sim.catch_up(item.mount % sim.n)
            sim.issue(item.mount % sim.n, item.op, gap=item.gap)
        elif isinstance(item, Deliver):
            if sim.log:
                for pick in item.picks:
                    sim.deliver(item.replica % sim.n, pick % len(sim.log))
        elif isinstance(item, CatchUp):
            sim.catch_up(item.replica % sim.n)
        elif isinstance(item, Tick):
            sim.tick(item.dt_ms)
        else:
            sim.retry(item.mount % sim.n)
        if check:
            sim.check_prefixes()


PROPERTY = settings(suppress_health_check=[HealthCheck.too_slow])  # examples: the profile's

# --- properties 1 and 2: determinism and convergence ----------------------------------


@PROPERTY
@given(
    n=st.integers(2, 5),
    plan=steps(ops),
    order=st.lists(st.integers(0, 63), max_size=8),
    dups=st.lists(st.integers(0, 63), max_size=4),
)
def test_replicas_converge_and_replay_is_deterministic(
    n: int, plan: list[Step], order: list[int], dups: list[int]
) -> None:
    sim = Sim(n)
    run(sim, plan)
    sim.deliver_all(order, dups)
    sim.check_prefixes()
    # Property 2 at quiescence: one hash.
    hashes = {replica.state.tree.hash() for replica in sim.replicas}
    assert len(hashes) == 1
    # Property 1: two replays from scratch agree with each other and with every replica,
    # hidden state (inodes, versions, applied op ids) included.
    logged = sim.logged()
    first, second = replay(logged, sim.window_ms), replay(logged, sim.window_ms)
    assert first.tree.hash() == second.tree.hash() == hashes.pop()
    assert fingerprint(first) == fingerprint(second)
    for replica in sim.replicas:
        assert fingerprint(replica.state) == fingerprint(first)


@PROPERTY
@given(plan=steps(ops), window=st.sampled_from([0, 1, 1000, 5000]))
def test_convergence_with_other_windows(plan: list[Step], window: int) -> None:
    sim = Sim(3, window_ms=window)
    run(sim, plan)
    sim.deliver_all([], [0])
    assert len({replica.state.tree.hash() for replica in sim.replicas}) == 1
    assert replay(sim.logged(), window).tree.hash() == sim.replicas[0].state.tree.hash()


def test_prefix_check_catches_a_diverged_replica() -> None:
    """The prefix check is not vacuous: a replica that folded something else is caught."""
    sim = Sim(2)
    sim.issue(0, Write(("a",), Content.of(b"x")))
    sim.catch_up(0)
    sim.check_prefixes()
    sim.replicas[1].state.tree.root.children["z"] = DirNode(
        ino=99, mode=0o755, mtime_ms=0, atime_ms=0
    )
    try:
        sim.check_prefixes()
    except AssertionError:
        return
    raise AssertionError("a diverged replica went unnoticed")


# --- property 3: a conflict exactly when two writes race --------------------------------


@PROPERTY
@given(
    window=st.sampled_from([1000, 50]),
    history_gaps=st.lists(st.sampled_from([0, 1, 30, 400, 1001, 2500, 5000]), max_size=5),
    history_author=st.integers(0, 2),
    seen_history=st.integers(0, 5),
    seen_first=st.booleans(),
    same_author=st.booleans(),
    gap_pick=st.integers(0, 5),
    gap_free=st.integers(0, 3000),
    noise=st.booleans(),
)
def test_conflict_iff_race(
    window: int,
    history_gaps: list[int],
    history_author: int,
    seen_history: int,
    seen_first: bool,
    same_author: bool,
    gap_pick: int,
    gap_free: int,
    noise: bool,
) -> None:
    """Two writes to one file conflict iff the later author had not seen the earlier one
    and their sequencer times are within the window; the base is what it had seen."""
    gap = [0, 1, window - 1, window, window + 1, gap_free][gap_pick]
    f: RelPath = ("f",)
    sim = Sim(3, window_ms=window)
    x, y = 0, 0 if same_author else 1
    # History: sequential writes (their author has folded everything) with distinct bytes.
    for i, dt in enumerate(history_gaps):
        sim.tick(dt)
        sim.catch_up(history_author)
        assert sim.issue(history_author, Write(f, Content.of(b"h%d\n" % i)), gap=1 + i % 2)
    # The second writer has folded a prefix of the history.
    for index in range(min(seen_history, len(sim.log))):
        sim.deliver(y, index)
    sim.tick(1)
    sim.catch_up(x)
    first = sim.issue(x, Write(f, Content.of(b"first\n")))
    assert first is not None
    first_seq, t1 = sim.last_seq, sim.clock
    if noise:  # another file, another author, unseen: irrelevant to f
        sim.issue(2, Write(("g",), Content.of(b"noise")), gap=2)
    sim.tick(gap)
    if seen_first:
        sim.catch_up(y)
    second = sim.issue(y, Write(f, Content.of(b"second\n")))
    assert second is not None
    t2 = sim.clock
    assert t2 - t1 == gap
    sim.deliver_all([1], [])
    sim.check_prefixes()

    # What the rules say, computed from the log alone.
    writes = [(r.seq, r.time_ms, decode_entry(r.payload)) for r in sim.log[:-1]]
    writes = [(seq, t, e) for seq, t, e in writes if e.op.path == f]  # type: ignore[union-attr]
    races = [
        seq
        for seq, t, e in writes
        if e.author != second.author and seq > second.seen and abs(t2 - t) <= window
    ]
    base_bytes = None
    for seq, _, e in writes:
        if seq <= second.seen:
            base_bytes = e.op.content  # type: ignore[union-attr]
    # The file keeps its versions inside the window and the newest one before it; the
    # one before that stays as a stub. A writer whose view is older than the stub gets
    # an empty base: the engine no longer knows what it had seen, and says so rather
    # than guess (a guessed base could cancel a racing side).
    cutoff = writes[-1][1] - window
    dropped = 0
    while dropped + 1 < len(writes) and writes[dropped + 1][1] < cutoff:
        dropped += 1
    if dropped and second.seen < writes[dropped - 1][0]:
        base_bytes = None
    if not same_author:
        # The brief's statement, for the first write alone.
        first_races = second.seen < first_seq and gap <= window
        assert (first_seq in races) == first_races
    for replica in sim.replicas:
        node = replica.state.tree.lookup(f)
        assert isinstance(node, FileNode)
        if races:
            expected = Merge((Content.of(b"first\n"), Content.of(b"second\n")), (base_bytes,))
            assert node.value == expected, (node.value, races)
        else:
            assert node.value == Merge.resolved(Content.of(b"second\n"))


# --- property 4: a conflicted file renders every side once and parses back ---------------

LINES = [
    b"common\n",
    b"x\n",
    b"y\n",
    b"z\r\n",
    b"\n",
    b"\xff\xfe\x00\n",
    b"<<<<<<<\n",
    b"+++++++ side #1\n",
    b"-------\n",
    b"%%%%%%%%%%%\n",
    b">>>>>>> conflict 1 of 1 ends\n",
    b"<<<<<<< conflict 1 of 1\n",
    b"==== \n",
]
texts = st.builds(
    lambda lines, tail: b"".join(lines) + tail,
    st.lists(st.sampled_from(LINES), max_size=5),
    st.sampled_from([b"", b"", b"end", b"\r", b"+++++++"]),
)
_MARKER_LIKE = re.compile(rb"^([<>+\-%\\|=])\1*(?=[ \t\n\x0c\r]|$)")


def _split_keep_lf(data: bytes) -> list[bytes]:
    out, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end])
        start = end
    return out


def check_rendering(sides: list[bytes], bases: list[bytes]) -> None:
    """Check a rendering without trusting `engine.conflicts`' own splitter."""
    rendered = conflicts.materialize(sides, bases)
    terms = [sides[0]]
    for base, side in zip(bases, sides[1:], strict=True):
        terms += [base, side]
    longest = max(
        (
            len(m.group(0))
            for t in terms
            for ln in _split_keep_lf(t)
            if (m := _MARKER_LIKE.match(ln))
        ),
        default=0,
    )
    length = max(7, longest + 4)
    lines = _split_keep_lf(rendered)
    marks = [
        i
        for i, ln in enumerate(lines)
        if ln[:1] in (b"<", b"+", b"-", b">")
        and ln[:length] == ln[:1] * length
        and ln[length : length + 1] == b" "
    ]
    # One start marker, 2n-1 section headers alternating side/base, one end marker.
    assert len(marks) == len(terms) + 2
    assert lines[marks[0]].rstrip(b"\r\n") == b"<" * length + b" conflict 1 of 1"
    assert lines[marks[-1]].rstrip(b"\r\n") == b">" * length + b" conflict 1 of 1 ends"
    eol = b"\r\n" if lines[marks[0]].endswith(b"\r\n") else b"\n"
    final_eol_added = not lines[marks[-1]].endswith(b"\n")
    prefix = b"".join(lines[: marks[0]])
    suffix = b"".join(lines[marks[-1] + 1 :])
    for position, (head, tail) in enumerate(pairwise(marks[1:])):
        header = lines[head].rstrip(b"\r\n")
        label = f"side #{position // 2 + 1}"
        if position % 2:
            label = "base" if len(sides) == 2 else f"base #{position // 2 + 1}"
        hunk = b"".join(lines[head + 1 : tail])
        if final_eol_added:
            assert hunk.endswith(eol)
            hunk = hunk[: -len(eol)]
        # The term's bytes, once, in its own section (context lines outside the block).
        assert prefix + hunk + suffix == terms[position]
        if hunk and not hunk.endswith(b"\n"):
            label += " (no terminating newline)"
        char = b"+" if position % 2 == 0 else b"-"
        assert header == char * length + b" " + label.encode(), header
    assert not prefix or prefix.endswith(b"\n")  # the context before is whole lines
    assert conflicts.parse(rendered, len(sides)) == (sides, bases)


@PROPERTY
@given(
    base=st.one_of(st.none(), texts),
    sides=st.lists(texts, min_size=2, max_size=4),
    gaps=st.lists(st.sampled_from([0, 1, 300]), min_size=4, max_size=4),
)
def test_conflict_renders_each_side_once_and_parses_back(
    base: bytes | None, sides: list[bytes], gaps: list[int]
) -> None:
    f: RelPath = ("f",)
    sim = Sim(len(sides) + 1)
    if base is not None:
        sim.issue(len(sides), Write(f, Content.of(base)))
        for replica in range(sim.n):
            sim.catch_up(replica)
    for author, data in enumerate(sides):  # racing writers: none has seen another
        sim.tick(gaps[author])
        assert sim.issue(author, Write(f, Content.of(data)))
    sim.deliver_all([], [])
    node = sim.replicas[0].state.tree.lookup(f)
    assert isinstance(node, FileNode)
    # Each racing write adds its bytes as a side and the base it had seen (design §5:
    # current + (new - base)); only jj's simplification (a side equal to a base cancels,
    # equal sides collapse) removes anything.
    seen_base = None if base is None else Content.of(base)
    expected = Merge.resolved(Content.of(sides[0]))
    for side in sides[1:]:
        expected = Merge((*expected.adds, Content.of(side)), (*expected.removes, seen_base))
        expected = expected.simplify()
    assert node.value == expected
    value = node.value
    assume(not value.is_resolved())
    got_sides = [b"" if v is None else v.inline_bytes() for v in value.adds]
    got_bases = [b"" if v is None else v.inline_bytes() for v in value.removes]
    assert None not in got_sides
    assert None not in got_bases
    check_rendering(got_sides, got_bases)  # type: ignore[arg-type]


@PROPERTY
@given(sides=st.lists(texts, min_size=2, max_size=4), bases=st.data())
def test_rendering_of_arbitrary_terms(sides: list[bytes], bases: st.DataObject) -> None:
    drawn = bases.draw(st.lists(texts, min_size=len(sides) - 1, max_size=len(sides) - 1))
    check_rendering(sides, drawn)


# --- property 5: no acknowledged write is lost -------------------------------------------
#
# Workload: Write, Append, Rm and Mv on three files at the root, every write and append
# carrying a unique token ``<k>``. With no directories, symlinks or copies there are no
# kinds clashes, no aside names and no duplicated bytes, so the checker below is exact:
# it knows where every token is at every step (from the folded tree), and a token may
# disappear only as the rules allow. Where a token is means its path: a file renamed
# over another takes over that path's history (its inode changes, the bytes there do
# not move), and jj's algebra lets a writer who had seen a side there replace it.
#
# The checker replays the final log from scratch (property 1 makes that the replicas'
# tree) and, at every entry E, requires of each token that was in some file's side before
# E and is in none after E:
#
# - E is a write, an rm or a mv naming the path the token was at (an append never drops
#   bytes), and
# - E had seen every placement of the token (the write or append that made it, and every
#   move that carried it to another path): the placement is E's author's own
#   (one author is one timeline), or its sequence is at most E's ``seen``, or it is
#   outside the race window (E's time minus its time is more than the window).
#
# That is design §5 read per token: a racing write, rm or mv keeps every side ("a race
# keeps every side", "structural races lose nothing"); only an entry that had seen the
# bytes where they were, or that comes after the window, may replace or remove them.
# Also: every write's token is in the tree right after its own entry.

TOKEN = re.compile(rb"<\d+>")
ROOT_FILES: list[RelPath] = [("a",), ("b",), ("c",)]
root_files = st.sampled_from(ROOT_FILES)
PLACEHOLDER = Content.of(b"?")
token_ops: st.SearchStrategy[Op] = weighted(  # type: ignore[assignment]
    (4, st.builds(Write, root_files, st.just(PLACEHOLDER))),
    (2, st.builds(Append, root_files, st.just(PLACEHOLDER))),
    (1, st.builds(Rm, root_files)),
    (2, st.builds(Mv, root_files, root_files)),
)


class TokenSim(Sim):
    """A `Sim` whose writes and appends carry unique tokens instead of their content."""

    next_token: int = 0

    def issue(self, mount: int, op: Op, *, gap: int = 1) -> Entry | None:
        if isinstance(op, Write | Append):
            self.next_token += 1
            op = type(op)(op.path, Content.of(b"<%d>" % self.next_token))
        return super().issue(mount, op, gap=gap)


def locate(tree: Tree) -> dict[bytes, RelPath]:
    """Return where each token is: the path of the file that has it in a side."""
    where: dict[bytes, RelPath] = {}
    for path, node in tree.walk():
        if not isinstance(node, FileNode):
            continue
        for side in node.value.adds:
            data = b"" if side is None else side.inline_bytes()
            assert data is not None
            for token in TOKEN.findall(data):
                assert where.setdefault(token, path) == path, f"{token!r} in two files"
    return where


def check_no_write_lost(
    logged: list[Logged], window_ms: int, *, fold_window_ms: int | None = None
) -> None:
    """Replay ``logged`` and check every step (``fold_window_ms`` tests the checker)."""
    state = ChangeState(window_ms=window_ms if fold_window_ms is None else fold_window_ms)
    placements: dict[bytes, list[tuple[int, int, str]]] = {}
    before: dict[bytes, RelPath] = {}
    for item in logged:
        entry = item.entry
        duplicate = state.applied.contains(entry.author, entry.counter)
        fold(state, item)
        after = locate(state.tree)
        if not duplicate and isinstance(entry.op, Write | Append):
            data = entry.op.content.inline_bytes()
            assert data is not None
            assert data in after, f"{data!r} missing right after its own entry {item.seq}"
            placements[data] = [(item.seq, item.time_ms, entry.author)]
        for token, path in before.items():
            if token not in after:
                why = f"{token!r} at {path} dropped by {item.seq} {entry}"
                assert not isinstance(entry.op, Append), why
                assert path in touched_paths(entry.op), why
                for seq, time_ms, author in placements[token]:
                    assert (
                        author == entry.author
                        or seq <= entry.seen
                        or item.time_ms - time_ms > window_ms
                    ), f"{why}: it had not seen {seq} by {author} at {time_ms}"
            elif after[token] != path:
                placements[token].append((item.seq, item.time_ms, entry.author))
        before = after


@PROPERTY
@given(
    n=st.integers(2, 4),
    plan=steps(token_ops),
    order=st.lists(st.integers(0, 63), max_size=4),
)
def test_no_acknowledged_write_is_lost(n: int, plan: list[Step], order: list[int]) -> None:
    sim = TokenSim(n)
    run(sim, plan)
    sim.deliver_all(order, [0])
    logged = sim.logged()
    check_no_write_lost(logged, sim.window_ms)
    assert replay(logged, sim.window_ms).tree.hash() == sim.replicas[0].state.tree.hash()


def test_lost_write_checker_is_not_vacuous() -> None:
    """A racing write dropped by the fold (here: folded with no window) is caught."""
    first = Entry(Write(("a",), Content.of(b"<1>")), "m0", 1, 0)
    second = Entry(Write(("a",), Content.of(b"<2>")), "m1", 1, 0)
    logged = [Logged(1, T0, first), Logged(2, T0 + 1, second)]
    check_no_write_lost(logged, DEFAULT_WINDOW_MS)  # a conflict: both survive
    try:
        check_no_write_lost(logged, DEFAULT_WINDOW_MS, fold_window_ms=0)
    except AssertionError:
        return
    raise AssertionError("the checker accepted a dropped racing write")


# --- regressions the properties found (each failed before the fix) -----------------------


class Log:
    """A tiny log folded directly: explicit authors, ``seen`` and sequencer times."""

    def __init__(self) -> None:
        self.state = ChangeState()
        self.counters: dict[str, int] = {}

    def add(self, author: str, op: Op, *, seen: int | None = None, at: int) -> int:
        self.counters[author] = self.counters.get(author, 0) + 1
        seq = self.state.seq + 1
        entry = Entry(op, author, self.counters[author], self.state.seq if seen is None else seen)
        fold(self.state, Logged(seq, T0 + at, entry))
        return seq

    def value(self, *path: str) -> Merge:
        node = self.state.tree.lookup(path)
        assert isinstance(node, FileNode), f"{path} is {node!r}"
        return node.value


def c(data: bytes) -> Content:
    return Content.of(data)


def test_stale_racer_gets_an_empty_base_not_a_guess() -> None:
    """Versions older than the window are dropped; a racer that had seen nothing then
    got the oldest value still known as its base, which cancelled the racing side."""
    log = Log()
    log.add("a", Write(("f",), c(b"v1")), at=0)
    log.add("a", Write(("f",), c(b"v2")), at=5000)
    log.add("a", Write(("f",), c(b"v1")), at=10000)
    log.add("b", Write(("f",), c(b"B")), seen=0, at=10500)  # races a's last write
    assert log.value("f") == Merge((c(b"v1"), c(b"B")), (None,))


def test_hot_file_racer_gets_an_empty_base() -> None:
    log = Log()
    for i in range(MAX_VERSIONS + 6):
        log.add("a", Write(("f",), c(b"%d" % i)), at=i)
    log.add("b", Write(("f",), c(b"B")), seen=0, at=100)
    assert log.value("f") == Merge((c(b"%d" % (MAX_VERSIONS + 5)), c(b"B")), (None,))


def test_rename_onto_a_free_name_races_a_create_there() -> None:
    """Add/add: ``mv f g`` and a create of g by an author who had not seen the move."""
    log = Log()
    log.add("a", Write(("f",), c(b"F")), at=0)
    seen = log.state.seq
    log.add("a", Mv(("f",), ("g",)), at=10)
    log.add("b", Write(("g",), c(b"G")), seen=seen, at=20)
    assert log.value("g") == Merge((c(b"F"), c(b"G")), (None,))


def test_rm_racing_a_rename_onto_its_path_keeps_the_renamed_file() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"F")), at=0)
    log.add("a", Write(("g",), c(b"old")), at=1)
    b_seen = log.state.seq  # b has seen the old g
    log.add("c", Rm(("g",)), at=2)
    log.add("a", Mv(("f",), ("g",)), at=3)
    log.add("b", Rm(("g",)), seen=b_seen, at=4)
    assert log.value("g") == Merge.resolved(c(b"F"))


def test_rename_over_a_file_keeps_racing_versions_of_the_renamed_one() -> None:
    """b renames c over a without having seen a's write to c, then writes a: a's bytes
    raced both and must survive."""
    log = Log()
    log.add("a", Write(("c",), c(b"old-c")), at=0)
    log.add("a", Write(("a",), c(b"old-a")), at=0)
    b_seen = log.state.seq
    log.add("a", Write(("c",), c(b"X")), at=2000)
    log.add("b", Mv(("c",), ("a",)), seen=b_seen, at=2001)
    assert log.value("a") == Merge.resolved(c(b"X"))
    log.add("b", Write(("a",), c(b"B")), seen=b_seen, at=2002)
    # The base is what b had seen at a.
    assert log.value("a") == Merge((c(b"X"), c(b"B")), (c(b"old-a"),))


def test_rm_r_racing_a_directory_rename_keeps_the_renamed_files() -> None:
    log = Log()
    log.add("a", Write(("d", "x"), c(b"X")), at=0)
    log.add("a", Mkdir(("e",)), at=0)
    b_seen = log.state.seq  # b has seen d/x and an empty e
    log.add("a", Mv(("d",), ("e",)), at=5000)  # replaces the empty e
    log.add("b", Rm(("e",), recursive=True), seen=b_seen, at=5001)
    assert log.value("e", "x") == Merge.resolved(c(b"X"))


def test_write_racing_a_directory_rename_is_an_add_add_conflict() -> None:
    log = Log()
    log.add("a", Write(("d", "x"), c(b"X")), at=0)
    log.add("a", Mkdir(("e",)), at=0)
    b_seen = log.state.seq
    log.add("a", Mv(("d",), ("e",)), at=5000)
    log.add("b", Write(("e", "x"), c(b"B")), seen=b_seen, at=5001)
    assert log.value("e", "x") == Merge((c(b"X"), c(b"B")), (None,))


def test_a_move_the_writer_had_seen_is_no_race() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"F")), at=0)
    log.add("a", Mv(("f",), ("g",)), at=1)
    log.add("b", Write(("g",), c(b"G")), at=2)  # b had seen the move
    assert log.value("g") == Merge.resolved(c(b"G"))
    log.add("a", Mv(("g",), ("h",)), at=3)
    log.add("b", Rm(("h",)), at=4)
    assert log.state.tree.lookup(("h",)) is None
