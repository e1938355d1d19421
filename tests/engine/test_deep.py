"""Trees no input can break (issue 13): depth 5,000, and 100,000 entries in one directory.

Python stops a recursion at 1,000 frames, and a log can legally hold a tree of any
depth (``mkdir -p`` of a long path is one entry) and any width. Every walk of a tree
in the engine is iterative, so such a tree folds through every op, hashes, clones,
merges, diffs, round-trips through a snapshot and is rebuilt by a cold replica (from
the whole log, or from a snapshot and the tail), with the results a shallow tree
gives: the property test runs one program on a chain 5,000 directories deep and on
one 3 deep and finds the same tree once each chain is collapsed to one name.

The trees are built with few ops (one ``Mkdir(parents=True)``), or, for the wide
directory, directly as the state 100,000 writes leave (checked against the fold on a
small one), so the file runs in seconds.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.codec import encode_entry
from engine.content import Content
from engine.diff import DiffEntry, Side, diff_trees
from engine.fold import AppliedOps, ChangeState, Event, fold
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
    Symlink,
    Utimes,
    Write,
)
from engine.paths import RelPath
from engine.replica import Replica
from engine.snapshot import decode_snapshot, encode_snapshot
from engine.tree import ROOT_INO, AnyNode, DirNode, FileNode, SymlinkNode, Tree, Version, merge_key
from engine.treemerge import fresh_state, merge_trees

DEPTH = 5_000
WIDE = 100_000
T0 = 1_700_000_000_000


def chain(top: str, depth: int = DEPTH) -> RelPath:
    """``top/d/d/.../d``: ``depth`` components."""
    return (top,) + ("d",) * (depth - 1)


def c(data: bytes) -> Content:
    return Content.of(data)


@dataclass
class Log:
    """A change's log and the live state folding it (one sequence and 1 ms per entry)."""

    state: ChangeState = field(default_factory=ChangeState)
    entries: list[Logged] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    #: The sequencer time of the last entry.
    now_ms: int = T0

    def add(
        self, op: Op, *, author: str = "ma", seen: int | None = None, dt_ms: int = 1
    ) -> list[Event]:
        seq = self.state.seq + 1
        self.counters[author] = self.counters.get(author, 0) + 1
        entry = Entry(op, author, self.counters[author], self.state.seq if seen is None else seen)
        self.now_ms += dt_ms
        logged = Logged(seq, self.now_ms, entry)
        events = fold(self.state, logged)
        self.entries.append(logged)
        return events

    def file(self, path: RelPath) -> FileNode:
        node = self.state.tree.lookup(path)
        assert isinstance(node, FileNode), f"{len(path)} components: {type(node).__name__}"
        return node


def replay(entries: Iterable[Logged], state: ChangeState | None = None) -> Replica:
    """A cold replica: ``state`` (a fresh one by default) and ``entries`` through the codec."""
    replica = Replica("mcold", state if state is not None else ChangeState())
    for logged in entries:
        prev = replica.seq
        folded = replica.receive(logged.seq, prev, logged.time_ms, encode_entry(logged.entry))
        assert [f.seq for f in folded] == [logged.seq]
    return replica


def assert_same_state(a: ChangeState, b: ChangeState) -> None:
    assert a.tree.hash() == b.tree.hash()
    assert encode_snapshot(a) == encode_snapshot(b)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- depth 5,000 ---------------------------------------------------------------------------


@functools.cache
def deep_base() -> tuple[tuple[Logged, ...], bytes]:
    """The log and snapshot of `deep_log`, built once."""
    log = Log()
    assert len(log.add(Mkdir(chain("a"), parents=True))) == DEPTH
    log.add(Write((*chain("a"), "f"), c(b"bottom\n")))
    return tuple(log.entries), encode_snapshot(log.state)


def deep_log() -> Log:
    """A 5,000-deep chain ``a/d/.../d`` built by one entry, and a file at its bottom."""
    entries, snapshot = deep_base()
    return Log(decode_snapshot(snapshot), list(entries), {"ma": 2}, entries[-1].time_ms)


def test_every_op_on_a_5000_deep_tree() -> None:
    log = deep_log()
    bottom = chain("a")
    f = (*bottom, "f")
    assert log.add(Append(f, c(b"more\n"))) == [Event(f)]
    assert log.add(Chmod(f, 0o600)) == [Event(f)]
    assert log.add(Utimes(f, 1, 2)) == [Event(f)]
    assert log.add(Symlink((*bottom, "l"), "f")) == [Event((*bottom, "l"))]
    assert log.add(Mkdir((*bottom, "x", "y"), parents=True)) == [
        Event((*bottom, "x")),
        Event((*bottom, "x", "y"), recursive=True),
    ]
    assert log.file(f).value == Merge.resolved(c(b"bottom\nmore\n"))
    assert (log.file(f).mode, log.file(f).atime_ms, log.file(f).mtime_ms) == (0o600, 1, 2)

    # cp -r of the whole chain: a fresh copy, inodes in sorted pre-order.
    next_ino = log.state.tree.next_ino
    assert log.add(Cp(("a",), ("b",), recursive=True)) == [Event(("b",), recursive=True)]
    copied = log.state.tree.lookup(chain("b"))
    assert isinstance(copied, DirNode)
    assert sorted(copied.children) == ["f", "l", "x"]
    assert log.file((*chain("b"), "f")).value == log.file(f).value
    top = log.state.tree.lookup(("b",))
    assert top is not None
    assert top.ino == next_ino
    assert log.state.tree.next_ino == next_ino + DEPTH + 4  # the chain, f, l, x, y

    # mv carries the whole chain (and records the move on every file it carries).
    moved_file = log.file((*chain("b"), "f"))
    assert log.add(Mv(("b",), ("c",))) == [
        Event(("b",), recursive=True),
        Event(("c",), recursive=True),
    ]
    assert log.file((*chain("c"), "f")) is moved_file
    assert moved_file.versions[-1].seq == log.state.seq
    assert log.add(Chmod(("c",), 0o700)) == [Event(("c",))]
    assert log.add(Rm(("c",), recursive=True)) == [Event(("c",), recursive=True)]
    assert log.state.tree.lookup(("c",)) is None

    # Add wins deep down: an rm -r keeps the chain to a file another author wrote
    # unseen within the window, and removes the rest.
    seen = log.state.seq
    log.add(Write(f, c(b"racing\n")), author="mb", seen=seen - 1)
    assert log.add(Rm(("a",), recursive=True), seen=seen) == [Event(("a",), recursive=True)]
    kept = log.state.tree.lookup(bottom)
    assert isinstance(kept, DirNode)
    assert sorted(kept.children) == ["f"]
    # Outside the window the rm wins: nothing is left.
    assert log.add(Rm(("a",), recursive=True), dt_ms=5_000) == [Event(("a",), recursive=True)]
    assert log.state.tree.root.children == {}
    log.state.tree.hash()


def test_deep_tree_hash_clone_snapshot_and_cold_mounts() -> None:
    log = deep_log()
    log.add(Symlink((*chain("a"), "l"), "f"))
    mid = encode_snapshot(log.state)
    at = log.state.seq
    log.add(Cp(("a",), ("b",), recursive=True))
    log.add(Mv(("b",), ("c",)))
    log.add(Write((*chain("c"), "f"), c(b"changed\n")), author="mb", seen=at)
    state = log.state

    clone = state.tree.clone()
    assert clone.hash() == state.tree.hash()
    assert clone.lookup((*chain("a"), "f")) is not state.tree.lookup((*chain("a"), "f"))

    data = encode_snapshot(state)
    restored = decode_snapshot(data)
    assert encode_snapshot(restored) == data
    assert_same_state(restored, state)

    # A cold mount folds the whole log; another starts from the snapshot in the middle.
    assert_same_state(replay(log.entries).state, state)
    assert_same_state(replay(log.entries[at:], decode_snapshot(mid)).state, state)


def test_deep_merge_diff_and_fresh_state() -> None:
    base = deep_log()
    f = (*chain("a"), "f")
    left, right = (
        Log(decode_snapshot(encode_snapshot(base.state)), now_ms=base.now_ms) for _ in range(2)
    )
    left.add(Write(f, c(b"left\n")), author="ml", dt_ms=60_000)
    left.add(Mkdir((*chain("a"), "only-left"), parents=True), author="ml")
    right.add(Write(f, c(b"right\n")), author="mr", dt_ms=60_000)
    right.add(Cp(("a",), ("r",), recursive=True), author="mr")

    merged = merge_trees(base.state.tree, left.state.tree, right.state.tree)
    assert merged.conflicts == (f,)
    value = merged.tree.lookup(f)
    assert isinstance(value, FileNode)
    assert value.value == Merge((c(b"left\n"), c(b"right\n")), (c(b"bottom\n"),))
    assert isinstance(merged.tree.lookup((*chain("a"), "only-left")), DirNode)
    assert isinstance(merged.tree.lookup((*chain("r"), "f")), FileNode)
    assert merged.tree.next_ino == 1 + sum(1 for _ in merged.tree.walk())

    # One side removed the whole chain, the other changed its bottom file: the chain
    # stays down to it (modify/delete conflict with an empty side).
    gone = Log(decode_snapshot(encode_snapshot(base.state)), now_ms=base.now_ms)
    gone.add(Rm(("a",), recursive=True), author="mr", dt_ms=60_000)
    kept = merge_trees(base.state.tree, left.state.tree, gone.state.tree)
    assert kept.conflicts == (f,)
    bottom = kept.tree.lookup(chain("a"))
    assert isinstance(bottom, DirNode)
    assert sorted(bottom.children) == ["f", "only-left"]

    entries = diff_trees(base.state.tree, right.state.tree)
    assert [(e.path, e.status) for e in entries] == [(f, "modified"), ((*chain("r"), "f"), "added")]

    fresh = fresh_state(left.state.tree, 1000)
    assert fresh.tree.hash() == left.state.tree.hash()
    assert fresh.tree.next_ino == left.state.tree.next_ino
    assert all(not node.versions for _, node in fresh.tree.walk())


# -- 100,000 entries in one directory ------------------------------------------------------


def wide_state(n: int) -> ChangeState:
    """The state ``Mkdir(w)`` then ``n`` writes ``w/f<i>`` (one author, 1 ms apart) leave.

    Built directly: folding 100,000 entries takes longer than this whole file may.
    `test_wide_state_is_what_the_fold_builds` checks it against the fold.
    """
    directory = DirNode(
        ino=ROOT_INO + 1,
        mode=0o755,
        mtime_ms=T0 + 1,
        atime_ms=T0 + 1,
        versions=[Version(1, T0 + 1, "ma", None)],
    )
    value = Merge.resolved(c(b"x"))
    for i in range(n):
        seq = i + 2
        directory.children[f"f{i:06d}"] = FileNode(
            ino=ROOT_INO + 2 + i,
            mode=0o644,
            mtime_ms=T0 + seq,
            atime_ms=T0 + seq,
            versions=[Version(seq, T0 + seq, "ma", None)],
            value=value,
        )
    tree = Tree(next_ino=ROOT_INO + 2 + n)
    tree.root.children["w"] = directory
    applied = AppliedOps()
    applied.watermark["ma"] = n + 1
    return ChangeState(tree=tree, seq=n + 1, applied=applied)


def wide_log(n: int) -> Log:
    log = Log()
    log.add(Mkdir(("w",)))
    for i in range(n):
        log.add(Write(("w", f"f{i:06d}"), c(b"x")))
    return log


def test_wide_state_is_what_the_fold_builds() -> None:
    assert encode_snapshot(wide_state(50)) == encode_snapshot(wide_log(50).state)


def test_every_op_on_100000_entries_in_one_directory() -> None:
    base = wide_state(WIDE)
    base_hash = base.tree.hash()
    snapshot = encode_snapshot(base)
    log = Log(base, counters={"ma": WIDE + 1}, now_ms=T0 + WIDE + 1)
    assert log.add(Write(("w", "new"), c(b"new\n"))) == [Event(("w", "new"))]
    assert log.add(Append(("w", "new"), c(b"more\n"))) == [Event(("w", "new"))]
    assert log.add(Chmod(("w", "f000007"), 0o600)) == [Event(("w", "f000007"))]
    assert log.add(Utimes(("w", "f000008"), 1, 2)) == [Event(("w", "f000008"))]
    assert log.add(Symlink(("w", "l"), "new")) == [Event(("w", "l"))]
    assert log.add(Mkdir(("w", "sub", "deeper"), parents=True)) == [
        Event(("w", "sub")),
        Event(("w", "sub", "deeper"), recursive=True),
    ]

    # The snapshot of the wide state round-trips; diff it with the state now.
    restored = decode_snapshot(snapshot)
    assert encode_snapshot(restored) == snapshot
    assert restored.tree.hash() == base_hash
    assert diff_trees(restored.tree, log.state.tree) == [
        DiffEntry(
            ("w", "f000007"),
            "modified",
            Side("file", 0o644, Merge.resolved(c(b"x"))),
            Side("file", 0o600, Merge.resolved(c(b"x"))),
        ),
        DiffEntry(("w", "l"), "added", None, Side("symlink", 0o777, target="new")),
        DiffEntry(
            ("w", "new"), "added", None, Side("file", 0o644, Merge.resolved(c(b"new\nmore\n")))
        ),
    ]

    assert log.add(Cp(("w",), ("w2",), recursive=True)) == [Event(("w2",), recursive=True)]
    assert log.add(Mv(("w2",), ("w3",))) == [
        Event(("w2",), recursive=True),
        Event(("w3",), recursive=True),
    ]
    copy = log.state.tree.lookup(("w3",))
    assert isinstance(copy, DirNode)
    assert len(copy.children) == WIDE + 3  # and new, l, sub
    assert log.add(Rm(("w3", "f000009"))) == [Event(("w3", "f000009"))]
    assert log.add(Rm(("w",), recursive=True)) == [Event(("w",), recursive=True)]
    assert log.add(Rm(("w3",), recursive=True), dt_ms=5_000) == [Event(("w3",), recursive=True)]
    assert log.state.tree.root.children == {}
    # A cold mount from the snapshot folds the tail to the same state.
    assert_same_state(replay(log.entries, restored).state, log.state)


def test_merge_of_100000_entries_in_one_directory() -> None:
    base = wide_state(WIDE)
    left, right = (
        Log(ChangeState(base.tree.clone(), base.seq), now_ms=T0 + WIDE + 1) for _ in range(2)
    )
    left.add(Write(("w", "f000001"), c(b"left\n")), author="ml", dt_ms=60_000)
    left.add(Rm(("w", "f000002")), author="ml")
    right.add(Write(("w", "f000001"), c(b"right\n")), author="mr", dt_ms=60_000)
    right.add(Write(("w", "added"), c(b"r\n")), author="mr")
    merged = merge_trees(base.tree, left.state.tree, right.state.tree)
    assert merged.conflicts == (("w", "f000001"),)
    directory = merged.tree.lookup(("w",))
    assert isinstance(directory, DirNode)
    assert len(directory.children) == WIDE
    assert "f000002" not in directory.children
    assert "added" in directory.children


# -- the hashes and bytes of before: nothing else changed -----------------------------------


def test_deep_and_wide_hashes_and_snapshots_are_the_recursive_ones() -> None:
    """Pinned from the recursive implementation (run with a raised recursion limit)."""
    log = deep_log()
    log.add(Cp(("a",), ("b",), recursive=True))
    log.add(Mv(("b",), ("c",)))
    assert log.state.tree.hash() == DEEP_HASH
    assert digest(encode_snapshot(log.state)) == DEEP_SNAPSHOT
    right = deep_log()
    right.add(Write((*chain("a"), "f"), c(b"right\n")), author="mr", dt_ms=60_000)
    right.add(Cp(("a",), ("r",), recursive=True), author="mr")
    merged = merge_trees(deep_log().state.tree, log.state.tree, right.state.tree)
    assert merged.conflicts == ()
    assert merged.tree.hash() == DEEP_MERGE_HASH
    wide = wide_state(1_000)
    assert wide.tree.hash() == WIDE_HASH


DEEP_HASH = "31c53fb8fb1a6c3a28b2874d071280cc6570593fd51861d4aee389056e59894a"
# Snapshot format version 2 (per-file metadata); the version-1 encoding digested to
# f03fbafbdebd5c26ecf98fd35a09c816d1e7c3c5983ed89b3c0d6b77748f3baf (tree hash unchanged).
DEEP_SNAPSHOT = "f3d265d101994869ade7e9823d4ea520eef07d635398caeef5dfe19c22c3e3f8"
DEEP_MERGE_HASH = "7c05ad7e24f7d8b68ae67efb177bfba4e1aefce2bf408cf6e30ceef6ecfa7966"
WIDE_HASH = "3d583fd5777c9f8d03609db23ad3c0bb95b44ffdaae52a2cfbed93e5b1926695"


# -- the property: depth changes nothing but the depth ---------------------------------------

TOPS = ("a", "b", "c")
SHALLOW = 3


@st.composite
def programs(draw: st.DrawFn) -> list[tuple[str, tuple[object, ...], str, int, int]]:
    """Ops naming chain tops, chain bottoms and files there (built per depth by `build`)."""
    top = st.sampled_from(TOPS)
    step = st.one_of(
        st.tuples(st.just("write"), st.tuples(top, st.sampled_from([b"1\n", b"2\n"]))),
        st.tuples(st.just("append"), st.tuples(top)),
        st.tuples(st.just("mkdir"), st.tuples(top)),
        st.tuples(st.just("rm"), st.tuples(top, st.booleans())),
        st.tuples(st.just("mv"), st.tuples(top, top)),
        st.tuples(st.just("mvfile"), st.tuples(top, top)),
        st.tuples(st.just("cp"), st.tuples(top, top)),
        st.tuples(st.just("chmod"), st.tuples(top, st.booleans())),
        st.tuples(st.just("utimes"), st.tuples(top, st.booleans())),
        st.tuples(st.just("symlink"), st.tuples(top)),
    )
    n = draw(st.integers(1, 8))
    return [
        (
            *draw(step),
            draw(st.sampled_from(["ma", "mb"])),
            draw(st.integers(0, 2)),  # how many entries the author had not seen
            draw(st.sampled_from([1, 2_000])),  # ms since the previous entry
        )
        for _ in range(n)
    ]


def build(kind: str, args: tuple[object, ...], depth: int) -> Op:
    top = str(args[0])
    bottom = chain(top, depth)
    if kind == "write":
        data = args[1]
        assert isinstance(data, bytes)
        return Write((*bottom, "f"), c(data))
    if kind == "append":
        return Append((*bottom, "f"), c(b"+\n"))
    if kind == "mkdir":
        return Mkdir((*bottom, "x", "y"), parents=True)
    if kind == "rm":
        return Rm((top,), recursive=True) if args[1] else Rm((*bottom, "f"))
    if kind == "mv":
        return Mv((top,), (str(args[1]),))
    if kind == "mvfile":
        return Mv((*bottom, "f"), (*chain(str(args[1]), depth), "f"))
    if kind == "cp":
        return Cp((top,), (str(args[1]),), recursive=True)
    if kind == "chmod":
        return Chmod((top,) if args[1] else (*bottom, "f"), 0o700)
    if kind == "utimes":
        return Utimes((top,) if args[1] else (*bottom, "f"), 5, 6)
    assert kind == "symlink"
    return Symlink((*bottom, "l"), "f")


def collapse(path: RelPath) -> RelPath:
    """Replace each run of ``d`` components by one ``d*``: chains of any depth look alike."""
    out: list[str] = []
    for name, run in itertools.groupby(path):
        if name == "d":
            out.append("d*")
        else:
            out.extend(run)
    return tuple(out)


def shape(tree: Tree) -> set[tuple[object, ...]]:
    """What a reader observes of every node, paths collapsed as `collapse` does."""
    out: set[tuple[object, ...]] = set()
    stack: list[tuple[RelPath, AnyNode]] = [((), tree.root)]
    while stack:
        path, node = stack.pop()
        what: object = "dir"
        if isinstance(node, FileNode):
            what = merge_key(node.value)
        elif isinstance(node, SymlinkNode):
            what = node.target
        out.add((path, type(node).__name__, node.mode, node.mtime_ms, node.atime_ms, what))
        if isinstance(node, DirNode):
            for name, child in node.children.items():
                if name != "d":
                    stack.append(((*path, name), child))
                else:
                    stack.append((path if path[-1:] == ("d*",) else (*path, "d*"), child))
    return out


def collapsed_events(events: list[Event]) -> list[tuple[RelPath, bool]]:
    out: list[tuple[RelPath, bool]] = []
    for event in events:
        item = (collapse(event.path), event.recursive)
        if not out or out[-1] != item:
            out.append(item)
    return out


def setup(depth: int) -> Log:
    log = Log()
    log.add(Mkdir(chain("a", depth), parents=True))
    log.add(Write((*chain("a", depth), "f"), c(b"0\n")))
    return log


@functools.cache
def deep_setup() -> ChangeState:
    return setup(DEPTH).state


def copy_state(state: ChangeState) -> ChangeState:
    applied = AppliedOps()
    applied.watermark = dict(state.applied.watermark)
    applied.sparse = {author: set(counters) for author, counters in state.applied.sparse.items()}
    return ChangeState(state.tree.clone(), state.seq, applied, state.window_ms)


@settings(max_examples=10)
@given(programs())
def test_a_program_does_the_same_on_a_5000_deep_chain_as_on_a_3_deep_one(
    program: list[tuple[str, tuple[object, ...], str, int, int]],
) -> None:
    shallow = setup(SHALLOW)
    deep = Log(copy_state(deep_setup()), counters={"ma": 2}, now_ms=shallow.now_ms)
    for kind, args, author, unseen, dt_ms in program:
        seen = max(0, shallow.state.seq - unseen)
        got = [
            log.add(build(kind, args, depth), author=author, seen=seen, dt_ms=dt_ms)
            for log, depth in ((shallow, SHALLOW), (deep, DEPTH))
        ]
        assert collapsed_events(got[1]) == collapsed_events(got[0]), kind
    assert shape(deep.state.tree) == shape(shallow.state.tree)
    deep.state.tree.hash()
