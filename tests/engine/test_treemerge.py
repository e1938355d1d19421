"""engine.treemerge: three-way tree merge (properties and the rules of its docstring).

Trees are built with the real fold: a base, then each side folds its own edits on a
copy of the base (another author, later, so nothing races), as two changes forked
from one sealed parent would.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from engine import conflicts
from engine.content import Content
from engine.fold import ChangeState, fold
from engine.merge import Merge, Value
from engine.ops import Entry, Logged, Mkdir, Op, Rm, Symlink, Write
from engine.paths import RelPath
from engine.snapshot import decode_snapshot, encode_snapshot
from engine.tree import DirNode, FileNode, SymlinkNode, Tree
from engine.treemerge import fresh_state, fresh_tree, merge_trees

UNIVERSE: list[RelPath] = [("a",), ("b",), ("d", "x"), ("d", "y"), ("e", "f", "z")]
CONTENTS = [b"one\n", b"two\n", b"three\n", b""]
BASE_T, SIDE_T = 1_000, 60_000


@dataclass
class Builder:
    """Folds ops as one author into a state, one sequence each."""

    state: ChangeState
    author: str
    time_ms: int
    counter: int = 0

    def apply(self, *ops: Op) -> Builder:
        for op in ops:
            self.counter += 1
            entry = Entry(op, self.author, self.counter, seen=self.state.seq)
            fold(self.state, Logged(self.state.seq + 1, self.time_ms, entry))
        return self


def fork(state: ChangeState, author: str, time_ms: int = SIDE_T) -> Builder:
    """A builder on an independent copy of ``state`` (same sequence)."""
    copy = ChangeState(tree=state.tree.clone(), seq=state.seq, window_ms=state.window_ms)
    return Builder(copy, author, time_ms)


def write(path: RelPath, data: bytes) -> Write:
    return Write(path, Content.of(data))


def build_base(files: dict[RelPath, bytes]) -> ChangeState:
    builder = Builder(ChangeState(), "base", BASE_T)
    builder.apply(*(write(p, files[p]) for p in sorted(files)))
    return builder.state


def file_values(tree: Tree) -> dict[RelPath, Merge]:
    return {p: n.value for p, n in tree.walk() if isinstance(n, FileNode)}


def value(values: dict[RelPath, Merge], path: RelPath) -> Value:
    found = values.get(path)
    return None if found is None else found.adds[0]


# -- strategies --------------------------------------------------------------------------

contents = st.sampled_from(CONTENTS)
base_files = st.dictionaries(st.sampled_from(UNIVERSE), contents)
edit = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(UNIVERSE), contents),
    st.tuples(st.just("rm"), st.sampled_from(UNIVERSE), st.just(b"")),
    st.tuples(st.just("rm-dir"), st.sampled_from([("d",), ("e",)]), st.just(b"")),
)
edits = st.lists(edit, max_size=6)


def to_ops(items: list[tuple[str, RelPath, bytes]]) -> list[Op]:
    ops: list[Op] = []
    for kind, path, data in items:
        if kind == "write":
            ops.append(write(path, data))
        else:
            ops.append(Rm(path, recursive=kind == "rm-dir"))
    return ops


def sides(
    base: dict[RelPath, bytes], left: list[tuple[str, RelPath, bytes]], right: list
) -> tuple[ChangeState, ChangeState, ChangeState]:
    b = build_base(base)
    return (
        b,
        fork(b, "left").apply(*to_ops(left)).state,
        fork(b, "right").apply(*to_ops(right)).state,
    )


# -- properties --------------------------------------------------------------------------


@given(base_files, edits)
def test_merging_a_change_with_itself_is_a_no_op(base: dict, left: list) -> None:
    b = build_base(base)
    l_state = fork(b, "left").apply(*to_ops(left)).state
    for result in (
        merge_trees(b.tree, b.tree, b.tree),
        merge_trees(l_state.tree, l_state.tree, l_state.tree),
        merge_trees(b.tree, l_state.tree, l_state.tree),  # both sides made the same edits
    ):
        assert not result.conflicts
    assert merge_trees(b.tree, b.tree, b.tree).tree.hash() == b.tree.hash()
    assert merge_trees(b.tree, l_state.tree, l_state.tree).tree.hash() == l_state.tree.hash()


@given(base_files, edits)
def test_a_change_on_one_side_only_is_taken_whole(base: dict, left: list) -> None:
    b = build_base(base)
    changed = fork(b, "left").apply(*to_ops(left)).state.tree
    assert merge_trees(b.tree, changed, b.tree).tree.hash() == changed.hash()
    assert merge_trees(b.tree, b.tree, changed).tree.hash() == changed.hash()


@given(base_files, edits, edits)
def test_a_conflict_iff_both_sides_changed_a_file_differently(
    base: dict, left: list, right: list
) -> None:
    b, l_state, r_state = sides(base, left, right)
    result = merge_trees(b.tree, l_state.tree, r_state.tree)
    bv, lv, rv = (file_values(s.tree) for s in (b, l_state, r_state))
    expected = sorted(
        p
        for p in UNIVERSE
        if value(lv, p) != value(bv, p)
        and value(rv, p) != value(bv, p)
        and value(lv, p) != value(rv, p)
    )
    assert list(result.conflicts) == expected
    merged = file_values(result.tree)
    for p in UNIVERSE:
        want = Merge((value(lv, p), value(rv, p)), (value(bv, p),)).simplify()
        got = merged.get(p, Merge.resolved(None))
        assert got == want, p
    # Swapping the sides conflicts on the same paths.
    assert merge_trees(b.tree, r_state.tree, l_state.tree).conflicts == result.conflicts


@given(base_files, edits, edits)
def test_a_later_write_resolves_every_conflict(base: dict, left: list, right: list) -> None:
    b, l_state, r_state = sides(base, left, right)
    result = merge_trees(b.tree, l_state.tree, r_state.tree)
    state = fresh_state(result.tree, window_ms=1000)
    Builder(state, "resolver", SIDE_T + 1).apply(
        *(write(p, b"resolved\n") for p in result.conflicts)
    )
    values = file_values(state.tree)
    for p in result.conflicts:
        assert values[p] == Merge.resolved(Content.of(b"resolved\n"))
    assert all(v.is_resolved() for v in values.values())


@given(base_files, edits, edits)
def test_a_merged_tree_round_trips_through_a_snapshot(base: dict, left: list, right: list) -> None:
    b, l_state, r_state = sides(base, left, right)
    merged = merge_trees(b.tree, l_state.tree, r_state.tree).tree
    inos = [node.ino for _, node in merged.walk()]
    assert len(set(inos)) == len(inos)
    assert merged.next_ino > max(inos)
    state = fresh_state(merged, window_ms=1000)
    assert decode_snapshot(encode_snapshot(state)).tree.hash() == merged.hash()


# -- rules -------------------------------------------------------------------------------


def test_a_content_conflict_reads_back_like_a_realtime_race() -> None:
    base = build_base({("notes.md",): b"base\n"})
    left = fork(base, "left").apply(write(("notes.md",), b"left\n")).state
    right = fork(base, "right").apply(write(("notes.md",), b"right\n")).state
    result = merge_trees(base.tree, left.tree, right.tree)
    assert result.conflicts == (("notes.md",),)
    node = result.tree.lookup(("notes.md",))
    assert isinstance(node, FileNode)

    # The same two writes racing on one change (each author had seen only the base).
    race = fork(base, "x", SIDE_T).state
    seq = race.seq
    for counter, (author, data) in enumerate((("left", b"left\n"), ("right", b"right\n")), 1):
        entry = Entry(write(("notes.md",), data), author, counter, seen=seq)
        fold(race, Logged(race.seq + 1, SIDE_T, entry))
    raced = race.tree.lookup(("notes.md",))
    assert isinstance(raced, FileNode)
    assert node.value == raced.value
    assert conflicts.materialize([b"left\n", b"right\n"], [b"base\n"]) == (
        b"<<<<<<< conflict 1 of 1\n+++++++ side #1\nleft\n------- base\nbase\n"
        b"+++++++ side #2\nright\n>>>>>>> conflict 1 of 1 ends\n"
    )


def test_add_add_is_a_conflict_with_an_empty_base_and_equal_adds_are_one_file() -> None:
    base = build_base({})
    left = fork(base, "left").apply(write(("n",), b"l\n"), write(("same",), b"s\n")).state
    right = fork(base, "right").apply(write(("n",), b"r\n"), write(("same",), b"s\n")).state
    result = merge_trees(base.tree, left.tree, right.tree)
    assert result.conflicts == (("n",),)
    node = result.tree.lookup(("n",))
    assert isinstance(node, FileNode)
    assert node.value == Merge((Content.of(b"l\n"), Content.of(b"r\n")), (None,))
    same = result.tree.lookup(("same",))
    assert isinstance(same, FileNode)
    assert same.value == Merge.resolved(Content.of(b"s\n"))


def test_modify_delete_is_a_conflict_with_an_empty_side() -> None:
    base = build_base({("f",): b"base\n"})
    left = fork(base, "left").apply(Rm(("f",))).state
    right = fork(base, "right").apply(write(("f",), b"edited\n")).state
    result = merge_trees(base.tree, left.tree, right.tree)
    assert result.conflicts == (("f",),)
    node = result.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    assert node.value == Merge((None, Content.of(b"edited\n")), (Content.of(b"base\n"),))


def test_a_deleted_directory_keeps_what_the_other_side_added_in_it() -> None:
    base = build_base({("d", "old"): b"1\n", ("d", "keep"): b"2\n"})
    left = fork(base, "left").apply(Rm(("d",), recursive=True)).state
    right = fork(base, "right").apply(write(("d", "new"), b"3\n")).state
    result = merge_trees(base.tree, left.tree, right.tree)
    assert not result.conflicts
    d = result.tree.lookup(("d",))
    assert isinstance(d, DirNode)
    assert sorted(d.children) == ["new"]
    # With nothing added, the directory goes, even when the other side changed it.
    assert merge_trees(base.tree, left.tree, base.tree).tree.lookup(("d",)) is None
    trimmed = fork(base, "right").apply(Rm(("d", "old"))).state
    assert merge_trees(base.tree, left.tree, trimmed.tree).tree.lookup(("d",)) is None


def test_kinds_clash_keeps_left_and_puts_right_aside() -> None:
    base = build_base({})
    left = fork(base, "left").apply(write(("x",), b"file\n")).state
    right = fork(base, "right").apply(Mkdir(("x",)), write(("x", "y"), b"in dir\n")).state
    result = merge_trees(base.tree, left.tree, right.tree)
    assert result.conflicts == (("x",),)
    assert isinstance(result.tree.lookup(("x",)), FileNode)
    aside = result.tree.lookup(("x.conflict-1", "y"))
    assert isinstance(aside, FileNode)
    assert aside.value == Merge.resolved(Content.of(b"in dir\n"))


def test_two_symlink_targets_keep_both() -> None:
    base = build_base({})
    left = fork(base, "left").apply(Symlink(("l",), "a")).state
    right = fork(base, "right").apply(Symlink(("l",), "b")).state
    result = merge_trees(base.tree, left.tree, right.tree)
    assert result.conflicts == (("l",),)
    kept, aside = result.tree.lookup(("l",)), result.tree.lookup(("l.conflict-1",))
    assert isinstance(kept, SymlinkNode)
    assert isinstance(aside, SymlinkNode)
    assert (kept.target, aside.target) == ("a", "b")


def test_modes_merge_without_conflict() -> None:
    from engine.ops import Chmod

    base = build_base({("f",): b"x\n"})
    left = fork(base, "left").apply(Chmod(("f",), 0o755)).state
    right = fork(base, "right").apply(write(("f",), b"y\n")).state
    result = merge_trees(base.tree, left.tree, right.tree)
    assert not result.conflicts
    node = result.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    assert (node.mode, node.value) == (0o755, Merge.resolved(Content.of(b"y\n")))


def test_fresh_tree_drops_versions_and_shares_no_node() -> None:
    base = build_base({("d", "f"): b"x\n"})
    assert any(node.versions for _, node in base.tree.walk())
    copy = fresh_tree(base.tree)
    assert copy.hash() == base.tree.hash()
    assert not any(node.versions for _, node in copy.walk())
    originals = {id(node) for _, node in base.tree.walk()}
    assert not originals & {id(node) for _, node in copy.walk()}
    state = fresh_state(base.tree, window_ms=250)
    assert (state.seq, state.window_ms, state.applied.watermark) == (0, 250, {})
