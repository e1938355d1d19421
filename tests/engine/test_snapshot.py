"""Snapshots round-trip the full replica state, and a fold after a round trip is identical."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.codec import Writer
from engine.content import BlobRef, Content
from engine.errors import CodecError
from engine.fold import ChangeState, fold
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
)
from engine.snapshot import SNAPSHOT_VERSION, decode_snapshot, encode_snapshot
from engine.tree import DirNode, FileNode, SymlinkNode, Tree, merge_key

T0 = 1_700_000_000_000

names = st.sampled_from(["a", "b", "c", "d.txt"])
paths = st.lists(names, min_size=1, max_size=3).map(tuple)
contents = st.one_of(
    st.binary(max_size=12).map(Content.of),
    st.builds(
        lambda data, size: Content.from_segments([BlobRef("ab" * 32, size), *data.segments]),
        st.binary(max_size=4).map(Content.of),
        st.integers(1, 1 << 40),
    ),
)
modes = st.integers(0, 0o7777)
ops: st.SearchStrategy[Op] = st.one_of(
    st.builds(Write, paths, contents, modes),
    st.builds(Append, paths, contents, modes),
    st.builds(Mkdir, paths, modes, st.booleans()),
    st.builds(Rm, paths, st.booleans()),
    st.builds(Mv, paths, paths),
    st.builds(Cp, paths, paths, st.booleans()),
    st.builds(Chmod, paths, modes),
    st.builds(Symlink, paths, st.text(min_size=1, max_size=5).filter(lambda t: "\x00" not in t)),
    st.builds(Utimes, paths, st.integers(-(2**40), 2**40), st.integers(-(2**40), 2**40)),
    st.builds(
        SetMetadata,
        paths,
        st.lists(
            st.tuples(st.sampled_from(["k", "s.x"]), st.sampled_from([None, "1", "ü"])),
            max_size=2,
            unique_by=lambda item: item[0],
        ).map(lambda items: tuple(sorted(items))),
        st.booleans(),
    ),
)
steps = st.tuples(
    ops,
    st.sampled_from(["m1", "m2", "m3"]),
    st.integers(0, 3),  # counter jump: 0 repeats an op id (a retried append logged twice)
    st.integers(0, 6),  # how far behind the head the author's ``seen`` is
    st.integers(-1500, 1500),  # sequencer time step, negative for a clock jump back
)


class Log:
    """Folds generated steps into a state, stamping seqs and times like a sequencer."""

    def __init__(self, window_ms: int = 1000) -> None:
        self.state = ChangeState(window_ms=window_ms)
        self.seq = 0
        self.time_ms = T0
        self.counters: dict[str, int] = {}

    def entries(self, generated: list[tuple[Op, str, int, int, int]]) -> list[Logged]:
        out: list[Logged] = []
        for op, author, jump, behind, dt_ms in generated:
            counter = max(1, self.counters.get(author, 0) + jump)
            self.counters[author] = counter
            self.seq += 1
            self.time_ms += dt_ms
            seen = max(0, self.seq - 1 - behind)
            out.append(Logged(self.seq, self.time_ms, Entry(op, author, counter, seen)))
        return out


def fold_all(state: ChangeState, entries: list[Logged]) -> list[list[tuple[tuple[str, ...], bool]]]:
    return [[(e.path, e.recursive) for e in fold(state, logged)] for logged in entries]


def dump(state: ChangeState) -> tuple[object, ...]:
    """Everything the fold reads, in a comparable form (the tree hash omits inodes and versions)."""
    nodes: list[object] = []
    for path, node in state.tree.walk():
        versions = [
            (v.seq, v.time_ms, v.author, None if v.before is None else merge_key(v.before))
            for v in node.versions
        ]
        common = (path, type(node).__name__, node.ino, node.mode, node.mtime_ms, node.atime_ms)
        if isinstance(node, FileNode):
            nodes.append((*common, versions, merge_key(node.value), node.value.adds))
        elif isinstance(node, SymlinkNode):
            nodes.append((*common, versions, node.target))
        else:
            nodes.append((*common, versions))
    applied = (
        sorted(state.applied.watermark.items()),
        sorted((a, sorted(s)) for a, s in state.applied.sparse.items()),
    )
    return (state.seq, state.window_ms, state.tree.next_ino, applied, nodes)


@given(
    prefix=st.lists(steps, max_size=30),
    tail=st.lists(steps, max_size=10),
    window_ms=st.sampled_from([0, 250, 1000]),
)
def test_round_trip_then_fold_is_identical(
    prefix: list[tuple[Op, str, int, int, int]],
    tail: list[tuple[Op, str, int, int, int]],
    window_ms: int,
) -> None:
    log = Log(window_ms)
    live = log.state
    fold_all(live, log.entries(prefix))
    data = encode_snapshot(live)
    restored = decode_snapshot(data)
    assert restored.tree.hash() == live.tree.hash()
    assert dump(restored) == dump(live)
    assert encode_snapshot(restored) == data  # one encoding per state
    later = log.entries(tail)
    assert fold_all(restored, later) == fold_all(live, later)
    assert restored.tree.hash() == live.tree.hash()
    assert dump(restored) == dump(live)


def test_empty_state_round_trips() -> None:
    state = ChangeState()
    restored = decode_snapshot(encode_snapshot(state))
    assert dump(restored) == dump(state)
    assert restored.tree.hash() == state.tree.hash()


def test_deep_tree_round_trips_beyond_the_recursion_limit() -> None:
    state = ChangeState()
    depth = 3000
    fold(state, Logged(1, T0, Entry(Mkdir(("d",) * depth, parents=True), "m1", 1, 0)))
    fold(
        state,
        Logged(2, T0 + 1, Entry(Write(("d",) * depth + ("f",), Content.of(b"x")), "m1", 2, 1)),
    )
    restored = decode_snapshot(encode_snapshot(state))
    assert dump(restored) == dump(state)


def test_every_truncation_is_a_codec_error() -> None:
    log = Log()
    state = log.state
    fold_all(
        state,
        log.entries(
            [
                (Write(("a", "f"), Content.of(b"1\n")), "m1", 1, 0, 5),
                (Write(("a", "f"), Content.of(b"2\n")), "m2", 1, 1, 5),
                (Symlink(("l",), "a/f"), "m1", 2, 0, 5),
            ]
        ),
    )
    data = encode_snapshot(state)
    for size in range(len(data)):
        with pytest.raises(CodecError):
            decode_snapshot(data[:size])


def test_every_flipped_byte_is_a_codec_error() -> None:
    log = Log()
    fold_all(log.state, log.entries([(Write(("f",), Content.of(b"x")), "m1", 1, 0, 5)]))
    data = encode_snapshot(log.state)
    for index in range(len(data)):
        corrupt = bytearray(data)
        corrupt[index] ^= 0x40
        with pytest.raises(CodecError):
            decode_snapshot(bytes(corrupt))


def test_unknown_version_is_reported_as_such() -> None:
    data = bytearray(encode_snapshot(ChangeState()))
    data[0] = SNAPSHOT_VERSION + 1
    with pytest.raises(CodecError, match="unknown snapshot codec version"):
        decode_snapshot(bytes(data))


def _snapshot_body(write_body: object) -> bytes:
    w = Writer(SNAPSHOT_VERSION)
    assert callable(write_body)
    write_body(w)
    return w.finish()


def _root_head(w: Writer, *, ino: int = 1, kind: int = 0) -> None:
    w.u8(kind)
    w.uint(ino)
    w.uint(0o755)
    w.sint(0)
    w.sint(0)
    w.uint(0)  # no versions


def test_well_formed_but_invalid_states_are_rejected() -> None:
    def duplicate_ino(w: Writer) -> None:
        w.uint(0), w.uint(1000), w.uint(3), w.uint(0)
        _root_head(w)
        w.uint(2), w.str_("a"), w.str_("b")
        for _ in range(2):
            _root_head(w, ino=2)
            w.uint(0)

    def unsorted_children(w: Writer) -> None:
        w.uint(0), w.uint(1000), w.uint(4), w.uint(0)
        _root_head(w)
        w.uint(2), w.str_("b"), w.str_("a")

    def root_is_a_file(w: Writer) -> None:
        w.uint(0), w.uint(1000), w.uint(2), w.uint(0)
        _root_head(w, kind=1)

    def sparse_below_watermark(w: Writer) -> None:
        w.uint(0), w.uint(1000), w.uint(2), w.uint(1)
        w.str_("m1"), w.uint(5), w.uint(1), w.uint(6)

    for case in (duplicate_ino, unsorted_children, root_is_a_file, sparse_below_watermark):
        with pytest.raises(CodecError):
            decode_snapshot(_snapshot_body(case))


def test_restored_state_is_independent() -> None:
    state = ChangeState()
    fold(state, Logged(1, T0, Entry(Mkdir(("d",)), "m1", 1, 0)))
    restored = decode_snapshot(encode_snapshot(state))
    fold(restored, Logged(2, T0, Entry(Write(("d", "f"), Content.of(b"x")), "m1", 2, 1)))
    assert isinstance(state.tree.lookup(("d",)), DirNode)
    assert state.tree.lookup(("d", "f")) is None
    assert isinstance(restored.tree, Tree)
