"""The fold's rules, one test each (docs/conflicts.md)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from hypothesis import event, given
from hypothesis import strategies as st

from engine import conflicts, driver
from engine import fold as fold_module
from engine.content import BlobRef, Content, digest_of
from engine.fold import ChangeState, Event, fold
from engine.merge import Merge
from engine.ops import Append, Chmod, Cp, Entry, Logged, Mkdir, Mv, Op, Rm, Symlink, Utimes, Write
from engine.snapshot import decode_snapshot, encode_snapshot
from engine.tree import DirNode, FileNode, SymlinkNode

T0 = 1_700_000_000_000


class Log:
    """A tiny log: appends entries with increasing seqs and times and folds them."""

    def __init__(self, window_ms: int = 1000) -> None:
        self.state = ChangeState(window_ms=window_ms)
        self.seq = 0
        self.counters: dict[str, int] = {}

    def add(self, author: str, op: Op, *, seen: int | None = None, dt_ms: int = 1) -> list[Event]:
        self.seq += 1
        self.counters[author] = self.counters.get(author, 0) + 1
        entry = Entry(op, author, self.counters[author], self.state.seq if seen is None else seen)
        return fold(self.state, Logged(self.seq, T0 + self.seq * dt_ms, entry))

    def file(self, *path: str) -> FileNode:
        node = self.state.tree.lookup(path)
        assert isinstance(node, FileNode), f"{path} is {node!r}"
        return node


def c(data: bytes) -> Content:
    return Content.of(data)


def test_sequential_writes_never_conflict() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"1")))
    log.add("b", Write(("f",), c(b"2")))  # b had seen a's write
    assert log.file("f").value == Merge.resolved(c(b"2"))


def test_racing_writes_conflict_with_base() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"base\n")))
    seen = log.state.seq
    log.add("a", Write(("f",), c(b"x\n")), seen=seen)
    log.add("b", Write(("f",), c(b"y\n")), seen=seen)
    value = log.file("f").value
    assert value.adds == (c(b"x\n"), c(b"y\n"))
    assert value.removes == (c(b"base\n"),)


def test_add_add_conflict_has_absent_base() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x")), seen=0)
    log.add("b", Write(("f",), c(b"y")), seen=0)
    assert log.file("f").value == Merge((c(b"x"), c(b"y")), (None,))


def test_add_add_with_equal_bytes_is_one_file() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"same")), seen=0)
    log.add("b", Write(("f",), c(b"same")), seen=0)
    assert log.file("f").value == Merge.resolved(c(b"same"))


def test_same_author_concurrent_writes_last_wins() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x")), seen=0)
    log.add("a", Write(("f",), c(b"y")), seen=0)
    assert log.file("f").value == Merge.resolved(c(b"y"))


def test_outside_window_later_wins() -> None:
    log = Log(window_ms=1000)
    log.add("a", Write(("f",), c(b"x")), seen=0, dt_ms=2000)
    log.add("b", Write(("f",), c(b"y")), seen=0, dt_ms=2000)
    assert log.file("f").value == Merge.resolved(c(b"y"))


def test_write_resolves_conflict() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x")), seen=0)
    log.add("b", Write(("f",), c(b"y")), seen=0)
    assert not log.file("f").value.is_resolved()
    log.add("c", Write(("f",), c(b"fixed")))
    assert log.file("f").value == Merge.resolved(c(b"fixed"))


def test_three_racing_writes_keep_three_sides() -> None:
    log = Log()
    for author, data in (("a", b"1"), ("b", b"2"), ("c", b"3")):
        log.add(author, Write(("f",), c(data)), seen=0)
    value = log.file("f").value
    assert value.adds == (c(b"1"), c(b"2"), c(b"3"))
    assert value.removes == (None, None)


def test_racer_who_saw_first_side_replaces_only_it() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"A")), seen=0)
    log.add("b", Write(("f",), c(b"B")), seen=0)
    log.add("c", Write(("f",), c(b"C")), seen=1)  # c had seen A but not B
    value = log.file("f").value
    assert value.adds == (c(b"B"), c(b"C"))
    assert value.removes == (None,)


def test_concurrent_appends_all_survive() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"0")))
    for author in "abc":
        log.add(author, Append(("f",), c(author.encode())), seen=1)
    assert log.file("f").value == Merge.resolved(c(b"0abc"))


def test_write_racing_rm_keeps_bytes_either_order() -> None:
    log = Log()
    log.add("a", Write(("d", "f"), c(b"old")))  # parent created (add wins)
    seen = log.state.seq
    log.add("a", Write(("d", "f"), c(b"new")), seen=seen)
    log.add("b", Rm(("d",), recursive=True), seen=seen)
    assert log.file("d", "f").value == Merge.resolved(c(b"new"))

    log2 = Log()
    log2.add("a", Write(("d", "f"), c(b"old")))
    seen = log2.state.seq
    log2.add("b", Rm(("d",), recursive=True), seen=seen)
    log2.add("a", Write(("d", "f"), c(b"new")), seen=seen)
    assert log2.file("d", "f").value == Merge.resolved(c(b"new"))


def test_rm_outside_window_wins() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x")), seen=0, dt_ms=5000)
    log.add("b", Rm(("f",)), seen=0, dt_ms=5000)
    assert log.state.tree.lookup(("f",)) is None


def test_rm_of_seen_file_removes_it() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x")))
    events = log.add("b", Rm(("f",)))
    assert log.state.tree.lookup(("f",)) is None
    assert events == [Event(("f",))]


def test_write_racing_mv_keeps_bytes() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"old")))
    seen = log.state.seq
    log.add("a", Write(("f",), c(b"new")), seen=seen)
    log.add("b", Mv(("f",), ("g",)), seen=seen)
    assert log.file("g").value == Merge.resolved(c(b"new"))
    assert log.state.tree.lookup(("f",)) is None

    log2 = Log()
    log2.add("a", Write(("f",), c(b"old")))
    seen = log2.state.seq
    log2.add("b", Mv(("f",), ("g",)), seen=seen)
    log2.add("a", Write(("f",), c(b"new")), seen=seen)
    assert log2.file("g").value == Merge.resolved(c(b"old"))
    assert log2.file("f").value == Merge.resolved(c(b"new"))


def test_mv_over_racing_write_is_a_conflict() -> None:
    log = Log()
    log.add("a", Write(("src",), c(b"moved")))
    log.add("a", Write(("dst",), c(b"orig")))
    seen = log.state.seq
    log.add("b", Write(("dst",), c(b"raced")), seen=seen)
    log.add("a", Mv(("src",), ("dst",)), seen=seen)
    value = log.file("dst").value
    assert value.adds == (c(b"raced"), c(b"moved"))
    assert value.removes == (c(b"orig"),)


def test_concurrent_mkdir_is_one_directory() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)), seen=0)
    events = log.add("b", Mkdir(("d",)), seen=0)
    assert events == []
    root = log.state.tree.root
    assert list(root.children) == ["d"]


def test_kinds_clash_puts_incoming_aside() -> None:
    log = Log()
    log.add("a", Write(("x",), c(b"file")), seen=0)
    log.add("b", Mkdir(("x",)), seen=0)
    root = log.state.tree.root
    assert isinstance(root.children["x"], FileNode)
    assert isinstance(root.children["x.conflict-1"], DirNode)
    log.add("c", Write(("x", "inner"), c(b"in")), seen=0)
    assert log.file("x.conflict-1", "inner").value == Merge.resolved(c(b"in"))


def test_crossed_directory_moves_lose_nothing() -> None:
    log = Log()
    log.add("a", Write(("x", "fx"), c(b"1")))
    log.add("a", Write(("y", "fy"), c(b"2")))
    seen = log.state.seq
    log.add("a", Mv(("x",), ("y", "x")), seen=seen)
    # b moves y into x, but x now lives in y: the parent x is recreated (add wins),
    # so paths never form a cycle and both subtrees survive.
    log.add("b", Mv(("y",), ("x", "y")), seen=seen)
    assert log.file("x", "y", "x", "fx").value == Merge.resolved(c(b"1"))
    assert log.file("x", "y", "fy").value == Merge.resolved(c(b"2"))


def test_move_into_own_subtree_is_skipped() -> None:
    log = Log()
    log.add("a", Mkdir(("x",)))
    before = log.state.tree.hash()
    assert log.add("b", Mv(("x",), ("x", "inner"))) == []
    assert log.state.tree.hash() == before


def test_cp_copies_conflict_and_directories() -> None:
    log = Log()
    log.add("a", Write(("d", "f"), c(b"1")))
    log.add("a", Symlink(("d", "l"), "f"))
    log.add("a", Cp(("d",), ("e",), recursive=True))
    assert log.file("e", "f").value == Merge.resolved(c(b"1"))
    link = log.state.tree.lookup(("e", "l"))
    assert isinstance(link, SymlinkNode)
    assert link.target == "f"
    assert log.file("e", "f").ino != log.file("d", "f").ino


def test_chmod_utimes_on_missing_path_do_nothing() -> None:
    log = Log()
    before = log.state.tree.hash()
    assert log.add("a", Chmod(("nope",), 0o600)) == []
    assert log.add("a", Utimes(("nope",), 1, 2)) == []
    assert log.state.tree.hash() == before


def test_duplicate_op_id_is_applied_once() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x")))
    entry = Entry(Append(("f",), c(b"!")), "a", 2, log.state.seq)
    fold(log.state, Logged(2, T0 + 2, entry))
    fold(log.state, Logged(3, T0 + 3, entry))
    assert log.file("f").value == Merge.resolved(c(b"x!"))
    assert log.state.seq == 3


def writeback(log: Log, path: tuple[str, ...], data: bytes) -> Write:
    """The write a mount logs for ``data`` (`engine.driver.writeback`, inline terms)."""
    value = log.file(*path).value
    term_bytes = [b"" if v is None else v.inline_bytes() or b"" for v in value.terms()]
    return driver.writeback(Write(path, c(data)), value, term_bytes, data)


def test_rewriting_materialized_conflict_keeps_it() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x\n")), seen=0)
    log.add("b", Write(("f",), c(b"y\n")), seen=0)
    rendered = conflicts.materialize([b"x\n", b"y\n"], [b""])
    before = log.file("f").value
    log.add("c", writeback(log, ("f",), rendered))
    assert log.file("f").value is before  # unchanged: the very same value
    edited = rendered.replace(b"y\n", b"Y\n")
    log.add("c", writeback(log, ("f",), edited))
    assert log.file("f").value.adds == (c(b"x\n"), c(b"Y\n"))


def test_a_block_written_without_terms_is_plain_bytes() -> None:
    # Version 2: the fold never parses bytes; only the terms a mount logged keep a conflict.
    log = Log()
    log.add("a", Write(("f",), c(b"x\n")), seen=0)
    log.add("b", Write(("f",), c(b"y\n")), seen=0)
    rendered = conflicts.materialize([b"x\n", b"y\n"], [b""])
    log.add("c", Write(("f",), c(rendered)))
    assert log.file("f").value == Merge.resolved(c(rendered))


def test_a_version_1_block_is_still_parsed_by_the_fold() -> None:
    # Entries decoded from codec version 1 fold as they did (a v1 log replays alike).
    state = ChangeState()
    rendered = conflicts.materialize([b"x\n", b"y\n"], [b""]).replace(b"y\n", b"Y\n")
    for seq, (author, seen, data) in enumerate(
        [("a", 0, b"x\n"), ("b", 0, b"y\n"), ("c", 2, rendered)], 1
    ):
        entry = Entry(Write(("f",), c(data)), author, 1, seen, legacy_writeback=True)
        fold(state, Logged(seq, T0 + seq, entry))
    node = state.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    assert node.value.adds == (c(b"x\n"), c(b"Y\n"))


def _blob(data: bytes) -> Content:
    return Content.from_segments([BlobRef(digest_of(data), len(data))])


def test_a_writeback_folds_alike_inline_spilled_and_with_blob_sides() -> None:
    big_x, big_y = b"x" * 70_000 + b"\n", b"y" * 70_000 + b"\n"
    for x, y in [(b"x\n", b"y\n"), (big_x, big_y)]:
        holder = _blob if len(x) > 1000 else c
        log = Log()
        log.add("a", Write(("f",), holder(x)), seen=0)
        log.add("b", Write(("f",), holder(y)), seen=0)
        value = log.file("f").value
        block = conflicts.materialize([x, y.upper()], [b""])
        op = driver.writeback(Write(("f",), c(block)), value, [x, b"", y], block)
        assert op.terms[0] is value.adds[0]  # an unchanged side is the one the file holds
        entry = Entry(op, "c", 1, 2)
        refs = [BlobRef(seg.digest, seg.size) for seg in driver.inline_segments(entry)]
        values = []
        for each in (entry, driver.spilled(entry, refs)):
            copy = Log()
            copy.add("a", Write(("f",), holder(x)), seen=0)
            copy.add("b", Write(("f",), holder(y)), seen=0)
            fold(copy.state, Logged(3, T0 + 3, each))
            values.append(copy.file("f").value)
        assert values[0] == values[1] == Merge((value.adds[0], c(y.upper())), (c(b""),))


def test_a_writeback_of_another_conflict_shape_is_plain_bytes() -> None:
    # The writer saw a 2-sided conflict; by the time its entry folds the file is
    # resolved (an unseen write outside the window): its bytes are plain, as any write.
    log = Log()
    log.add("a", Write(("f",), c(b"x\n")), seen=0)
    log.add("b", Write(("f",), c(b"y\n")), seen=0)
    block = conflicts.materialize([b"x\n", b"Y\n"], [b""])
    op = writeback(log, ("f",), block)
    assert len(op.terms) == 3
    log.add("a", Write(("f",), c(b"z\n")))  # resolves it
    log.add("c", op, seen=2, dt_ms=2_000)  # far outside the window
    assert log.file("f").value == Merge.resolved(c(block))


def test_rm_dir_events_are_recursive_and_mv_names_both_paths() -> None:
    log = Log()
    log.add("a", Write(("d", "f"), c(b"x")))
    assert log.add("a", Mv(("d",), ("e",))) == [Event(("d",), True), Event(("e",), True)]
    assert log.add("a", Rm(("e",), recursive=True)) == [Event(("e",), True)]
    assert log.state.tree.root.children == {}


# -- found by the simulator (docs/simulations.md, "Bugs found") -----------------------


def _fold_at(steps: list[tuple[int, str, int, int, Op]]) -> ChangeState:
    """Fold (time offset ms, author, counter, seen, op) at seq 1, 2, ..."""
    state = ChangeState()
    for seq, (dt_ms, author, counter, seen, op) in enumerate(steps, 1):
        fold(state, Logged(seq, T0 + dt_ms, Entry(op, author, counter, seen)))
    return state


def test_a_racer_whose_view_the_file_forgot_gets_an_empty_base() -> None:
    # Seeds 20271 and 20538 (the second across a forward clock jump): "a" writes back
    # what "c" had seen, more than a window after b's writes, so the file forgets the
    # value before them; "c" races a's write and its base is empty, never a guess.
    seen, w = c(b"seen\n"), c(b"w\n")
    for gap_ms, expected in [
        (500, Merge.resolved(w)),  # every version in the window: the base is known
        (3_000, Merge((seen, w), (None,))),  # a stale racer
        (178_000, Merge((seen, w), (None,))),  # the server's clock jumped forward
    ]:
        state = _fold_at(
            [
                (0, "a", 1, 0, Write(("f",), seen)),
                (10, "b", 1, 1, Write(("f",), c(b"y\n"))),
                (20, "b", 2, 2, Write(("f",), c(b"z\n"))),
                (gap_ms, "a", 2, 3, Write(("f",), seen)),
                (gap_ms + 16, "c", 1, 1, Write(("f",), w)),  # had seen seq 1 only
            ]
        )
        node = state.tree.lookup(("f",))
        assert isinstance(node, FileNode)
        assert node.value == expected, gap_ms


def test_a_racing_copy_of_a_conflict_adds_no_side_the_file_holds() -> None:
    # Seed 20625: copies of one conflict copied back and forth, racing, doubled its
    # sides each time (179 sides, 65 distinct): the same writes seen through a copy.
    a, b, c3 = c(b"A\n"), c(b"B\n"), c(b"C\n")
    state = _fold_at(
        [
            (10, "a", 1, 0, Write(("f",), a)),
            (20, "b", 1, 0, Write(("f",), b)),  # add/add: A | B
            (30, "a", 2, 2, Cp(("f",), ("g",))),  # g: A | B
            (40, "c", 1, 0, Write(("f",), c3)),  # f: A | B | C
            (50, "d", 1, 0, Cp(("g",), ("f",))),  # races c's write; f holds A and B
        ]
    )
    assert state.tree.lookup(("f",)).value == Merge((a, b, c3), (None, None))  # type: ignore[union-attr]


def test_a_racing_copy_of_an_older_conflict_keeps_every_content_once() -> None:
    # Seed 20800: the copy holds the conflict as it was before an append; racing, both
    # survive, each content once (four sides from two writes, an append and a copy).
    a, b, x = c(b"A\n"), c(b"B\n"), c(b"x\n")
    state = _fold_at(
        [
            (10, "a", 1, 0, Write(("f",), a)),
            (20, "b", 1, 0, Write(("f",), b)),
            (30, "a", 2, 2, Cp(("f",), ("g",))),
            (40, "b", 2, 3, Append(("f",), x)),  # f: A+x | B+x, base x
            (50, "c", 1, 0, Cp(("g",), ("f",))),  # c had seen nothing of f
        ]
    )
    node = state.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    assert node.value.adds == (a.concat(x), b.concat(x), a, b)


# -- a fold that raises changes nothing (issue 13) ------------------------------------------

_PATHS: list[tuple[str, ...]] = [
    ("a",),
    ("b",),
    ("a", "x"),
    ("a", "y"),
    ("b", "x"),
    ("a", "x", "z"),
]


@st.composite
def _programs(draw: st.DrawFn) -> list[tuple[str, Op, int, int]]:
    """Entries (author, op, entries the author had not seen, ms since the last one)."""
    path = st.sampled_from(_PATHS)
    data = st.sampled_from([b"1\n", b"2\n", b""]).map(c)
    op = st.one_of(
        st.builds(Write, path, data),
        st.builds(Append, path, data),
        st.builds(Mkdir, path, parents=st.booleans()),
        st.builds(Rm, path, recursive=st.booleans()),
        st.builds(Mv, path, path),
        st.builds(Cp, path, path, recursive=st.booleans()),
        st.builds(Chmod, path, st.sampled_from([0o600, 0o755])),
        st.builds(Utimes, path, st.just(5), st.integers(5, 6)),
        st.builds(Symlink, path, st.just("t")),
    )
    entry = st.tuples(
        st.sampled_from(["a", "b"]), op, st.integers(0, 2), st.sampled_from([1, 2000])
    )
    setup: list[tuple[str, Op, int, int]] = [
        ("a", Mkdir(("a", "x"), parents=True), 0, 1),
        ("a", Write(("a", "y"), c(b"y\n")), 0, 1),
        ("a", Write(("a", "x", "z"), c(b"z\n")), 0, 1),
        ("a", Write(("b",), c(b"b\n")), 0, 1),
    ]
    return setup + draw(st.lists(entry, min_size=1, max_size=10))


class _InjectedError(Exception):
    """The failure injected into a fold."""


@contextlib.contextmanager
def _fail_at(helper: str, calls: int) -> Iterator[None]:
    """Make the fold's ``helper`` raise on its call number ``calls + 1`` (counted from 0)."""
    original = getattr(fold_module._Folder, helper)
    count = 0

    def failing(self: object, *args: object, **kwargs: object) -> object:
        nonlocal count
        count += 1
        if count > calls:
            raise _InjectedError(f"{helper} call {count}")
        return original(self, *args, **kwargs)

    setattr(fold_module._Folder, helper, failing)
    try:
        yield
    finally:
        setattr(fold_module._Folder, helper, original)


#: Helpers of the fold a failure is injected into: between them, every kind of change.
_HELPERS = ["_record", "_event", "_new_dir", "_protected", "_place", "_set_value"]


@given(_programs())
def test_a_fold_that_raises_leaves_the_state_as_it_was(
    program: list[tuple[str, Op, int, int]],
) -> None:
    """All or nothing: whatever point of an entry fails, the state is the one before it.

    Before each entry is folded, a copy of the state folds it with a failure injected
    into each of the fold's helpers in turn, at each of its calls (up to the third): by
    then the entry had changed part of the tree. Each time, the copy (tree, versions,
    inodes, sequence, applied ops: the snapshot's bytes, which hold all of them, and the
    tree hash) must be exactly as before. The entry then folds for real.
    """
    state = ChangeState()
    counters: dict[str, int] = {}
    for seq, (author, op, unseen, dt_ms) in enumerate(program, 1):
        counters[author] = counters.get(author, 0) + 1
        entry = Entry(op, author, counters[author], max(0, state.seq - unseen))
        logged = Logged(seq, T0 + seq * dt_ms, entry)
        before, before_hash = encode_snapshot(state), state.tree.hash()
        for helper in _HELPERS:
            for calls in range(3):
                copy = decode_snapshot(before)
                try:
                    with _fail_at(helper, calls):
                        fold(copy, logged)
                except _InjectedError:
                    event(f"{helper} raised in {type(op).__name__}")
                    assert copy.seq == seq - 1
                    assert copy.tree.hash() == before_hash
                    assert encode_snapshot(copy) == before
                else:
                    break  # the entry calls the helper fewer times: on to the next one
        fold(state, logged)


def test_applied_ops_stay_bounded_when_a_counter_never_arrives() -> None:
    """A gap (a failed write, a switch carrying the counter) must not keep every later op."""
    from engine.fold import SPARSE_OPS_KEPT, AppliedOps

    applied = AppliedOps()
    applied.add("m1", 1)
    for counter in range(3, 3 + 3 * SPARSE_OPS_KEPT):  # counter 2 never comes
        applied.add("m1", counter)
        assert len(applied.sparse.get("m1", ())) <= SPARSE_OPS_KEPT
    last = 2 + 3 * SPARSE_OPS_KEPT
    assert applied.contains("m1", last)
    assert not applied.contains("m1", last + 1)
    # Reordered deliveries within the window are still each folded once.
    fresh = AppliedOps()
    for counter in (2, 1, 4, 3):
        assert not fresh.contains("m2", counter)
        fresh.add("m2", counter)
    assert fresh.watermark["m2"] == 4
    assert "m2" not in fresh.sparse
