"""Per-file metadata in the engine: codec, fold rules, snapshots, validation, tree merges."""

from __future__ import annotations

import dataclasses
import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import validate
from engine.codec import CODEC_VERSION, decode_entry, encode_entry
from engine.errors import CodecError, FsError, InvalidInputError
from engine.fold import ChangeState, Event
from engine.merge import Merge
from engine.metadata import MAX_KEY_BYTES, MAX_VALUE_BYTES, check_key, check_value, render
from engine.ops import (
    Cp,
    Entry,
    Mkdir,
    Mv,
    Rm,
    SetMetadata,
    Symlink,
    Utimes,
    Write,
)
from engine.snapshot import SNAPSHOT_VERSION, decode_snapshot, encode_snapshot
from engine.tree import AnyNode, Tree
from engine.treemerge import fresh_state, merge_trees
from tests.engine.test_fold import Log, c


def meta_of(log: Log, *path: str) -> dict[str, str]:
    node = log.state.tree.lookup(path)
    assert node is not None, path
    return {key: render(slot.value) for key, slot in (node.meta or {}).items()}


def setm(path: tuple[str, ...], clear: bool = False, **items: str | None) -> SetMetadata:
    return SetMetadata(path, tuple(sorted(items.items())), clear=clear)


def block(side1: str, base: str, side2: str) -> str:
    nl = " (no terminating newline)"
    return (
        f"<<<<<<< conflict 1 of 1\n+++++++ side #1{nl}\n{side1}\n"
        f"------- base{nl if base else ''}\n{base}\n"
        f"+++++++ side #2{nl}\n{side2}\n>>>>>>> conflict 1 of 1 ends"
    )


# -- codec -------------------------------------------------------------------------------

#: Entries encoded by the codec before metadata existed (version 1, from git history).
V1_ENTRIES = [
    (
        "0101020164016601000668656c6c6f0a8003026d310100762771e6",
        Entry(Write(("d", "f"), c(b"hello\n"), 0o600), "m1", 1, 0),
    ),
    ("01050201640166010167026d3207030cc38719", Entry(Mv(("d", "f"), ("g",)), "m2", 7, 3)),
    ("01090101670980c0a8ca9a3a026d310201dfe604a8", Entry(Utimes(("g",), -5, 10**12), "m1", 2, 1)),
]


@pytest.mark.parametrize(("hex_bytes", "entry"), V1_ENTRIES)
def test_entries_of_the_old_version_still_decode_and_keep_their_bytes(
    hex_bytes: str, entry: Entry
) -> None:
    data = bytes.fromhex(hex_bytes)
    assert data[0] == 1
    decoded = decode_entry(data)
    # A version-1 entry decodes as one (the fold treats it as version 1 did) and is
    # written back as version 1, byte for byte.
    assert decoded == dataclasses.replace(entry, legacy_writeback=True)
    assert encode_entry(decoded) == data


def test_set_metadata_round_trips_as_version_2() -> None:
    entry = Entry(SetMetadata(("d", "f"), (("a", "1"), ("b", None), ("é", "x")), True), "m", 3, 2)
    with pytest.raises(InvalidInputError):  # "é" is not a valid key
        encode_entry(entry)
    entry = Entry(SetMetadata(("d", "f"), (("a", "1"), ("b", None), ("c", "ünï")), True), "m", 3, 2)
    data = encode_entry(entry)
    assert data[0] == CODEC_VERSION == 2
    assert decode_entry(data) == entry
    root = Entry(SetMetadata((), (), clear=True), "m", 1, 0)
    assert decode_entry(encode_entry(root)) == root


keys = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True).filter(
    lambda k: k not in ("org", "repo")
)
values = st.none() | st.text(min_size=1, max_size=50).filter(lambda v: "\x00" not in v)


@given(
    st.dictionaries(keys, values, max_size=8),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_set_metadata_codec_round_trip(
    items: dict[str, str | None], clear: bool, seen: int
) -> None:
    try:
        entry = Entry(SetMetadata(("p",), tuple(sorted(items.items())), clear), "m", 1, seen)
        data = encode_entry(entry)
    except InvalidInputError:
        # only lone surrogates are unencodable
        assert any(v is not None and not v.isprintable() for v in items.values())
        return
    assert decode_entry(data) == entry
    assert encode_entry(decode_entry(data)) == data


@pytest.mark.parametrize(
    "items",
    [
        pytest.param((("b", "1"), ("a", "2")), id="unsorted"),
        pytest.param((("a", "1"), ("a", "2")), id="duplicate"),
        pytest.param((("org", "1"),), id="reserved"),
        pytest.param((("a", ""),), id="empty-value"),
        pytest.param((("a", "x" * (MAX_VALUE_BYTES + 1)),), id="long-value"),
        pytest.param((("k" * (MAX_KEY_BYTES + 1), "1"),), id="long-key"),
    ],
)
def test_unrepresentable_metadata_is_refused_when_encoding(
    items: tuple[tuple[str, str | None], ...],
) -> None:
    with pytest.raises(InvalidInputError):
        encode_entry(Entry(SetMetadata(("f",), items), "m", 1, 0))


def _sealed(body: bytes) -> bytes:
    import zlib

    return body + zlib.crc32(body).to_bytes(4, "big")


def _set_body(version: int, items: bytes, count: int) -> bytes:
    # kind 10, path ("f",), clear False, items, author "m", counter 1, seen 0
    return bytes([version, 10, 1, 1]) + b"f" + bytes([0, count]) + items + b"\x01m\x01\x00"


@pytest.mark.parametrize(
    ("items", "count", "message"),
    [
        (b"\x03org\x01\x01x", 1, "reserved"),
        (b"\x01b\x01\x01x\x01a\x01\x01x", 2, "not increasing"),
        (b"\x01a\x02\x01x", 1, "metadata tag 2"),
        (b"\x01a\x01\x00", 1, "empty metadata value"),
        (b"\x03a b\x00", 1, "invalid metadata key"),
    ],
)
def test_corrupt_metadata_entries_are_codec_errors(items: bytes, count: int, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        decode_entry(_sealed(_set_body(2, items, count)))


def test_a_metadata_op_inside_a_version_1_entry_is_corrupt() -> None:
    good = _sealed(_set_body(2, b"\x01a\x01\x01x", 1))
    assert decode_entry(good).op == SetMetadata(("f",), (("a", "x"),))
    with pytest.raises(CodecError, match="unknown op kind 10"):
        decode_entry(_sealed(_set_body(1, b"\x01a\x01\x01x", 1)))


def test_key_and_value_checks() -> None:
    assert check_key("owner.agent_1-x") == "owner.agent_1-x"
    assert check_value("k", "") is None
    assert check_value("k", None) is None
    assert check_value("k", "v") == "v"
    for bad in ("org", "repo", "", ".x", "a:b", "k" * (MAX_KEY_BYTES + 1), 3):
        with pytest.raises(InvalidInputError):
            check_key(bad)
    for bad_value in (3, b"x", "x" * (MAX_VALUE_BYTES + 1), "a\x00"):
        with pytest.raises(InvalidInputError):
            check_value("k", bad_value)


# -- fold --------------------------------------------------------------------------------


def test_sets_merge_keys_and_deletes_remove_them() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x")))
    assert log.add("a", setm(("f",), status="draft", owner="a")) == [Event(("f",))]
    log.add("b", setm(("f",), status="done"))
    assert meta_of(log, "f") == {"owner": "a", "status": "done"}
    log.add("a", setm(("f",), owner=None))
    assert meta_of(log, "f") == {"status": "done"}
    assert log.add("a", setm(("f",), True)) == [Event(("f",))]
    assert log.state.tree.lookup(("f",)).meta is None  # type: ignore[union-attr]


def test_a_set_that_changes_no_value_emits_no_event() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    log.add("a", setm(("d",), k="v"))
    assert log.add("b", setm(("d",), k="v")) == []
    assert log.add("b", setm(("d",), other=None)) == []
    assert log.add("b", setm(("nope",), k="v")) == []


def test_racing_sets_of_one_key_conflict_and_different_keys_both_apply() -> None:
    log = Log()
    log.add("a", Write(("f",), c(b"x")))
    log.add("a", setm(("f",), status="draft"))
    seen = log.state.seq
    log.add("a", setm(("f",), status="a", mine="a"), seen=seen)
    events = log.add("b", setm(("f",), status="b", yours="b"), seen=seen)
    assert events == [Event(("f",))]
    assert meta_of(log, "f") == {
        "mine": "a",
        "status": block("a", "draft", "b"),
        "yours": "b",
    }
    slot = log.state.tree.lookup(("f",)).meta["status"]  # type: ignore[union-attr,index]
    assert slot.value == Merge((c(b"a"), c(b"b")), (c(b"draft"),))
    # The content did not conflict.
    assert log.file("f").value == Merge.resolved(c(b"x"))
    # A set by an author who has seen both resolves it.
    log.add("a", setm(("f",), status="final"))
    assert meta_of(log, "f")["status"] == "final"


def test_racing_sets_of_a_new_key_have_an_empty_base_and_equal_values_agree() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    seen = log.state.seq
    log.add("a", setm(("d",), k="1", same="s"), seen=seen)
    log.add("b", setm(("d",), k="2", same="s"), seen=seen)
    assert meta_of(log, "d") == {"k": block("1", "", "2"), "same": "s"}


def test_outside_the_race_window_the_later_set_wins() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    seen = log.state.seq
    log.add("a", setm(("d",), k="1"), seen=seen)
    log.add("b", setm(("d",), k="2"), seen=seen, dt_ms=5000)
    assert meta_of(log, "d") == {"k": "2"}


def test_a_racing_delete_keeps_the_value_it_had_not_seen_add_wins() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    log.add("a", setm(("d",), k="old", j="old"))
    seen = log.state.seq
    log.add("a", setm(("d",), k="new"), seen=seen)
    log.add("b", setm(("d",), k=None, j=None), seen=seen)
    # k was set by a after b's view: kept; j was only ever seen by b: deleted.
    assert meta_of(log, "d") == {"k": "new"}
    log.add("b", setm(("d",), True))  # b has now seen it: the clear applies
    assert meta_of(log, "d") == {}


def test_a_set_racing_a_delete_is_applied() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    log.add("a", setm(("d",), k="old"))
    seen = log.state.seq
    log.add("a", setm(("d",), k=None), seen=seen)
    log.add("b", setm(("d",), k="b"), seen=seen)
    assert meta_of(log, "d") == {"k": "b"}


def test_mv_carries_cp_copies_and_rm_removes_metadata() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    log.add("a", Write(("d", "f"), c(b"x")))
    log.add("a", setm(("d",), dir="1"))
    log.add("a", setm(("d", "f"), file="1"))
    log.add("a", Symlink(("l",), "d/f"))
    log.add("a", setm(("l",), link="1"))
    log.add("a", Cp(("d",), ("e",), recursive=True))
    log.add("a", Mv(("d",), ("m",)))
    for top in ("e", "m"):
        assert meta_of(log, top) == {"dir": "1"}
        assert meta_of(log, top, "f") == {"file": "1"}
    assert meta_of(log, "l") == {"link": "1"}
    # A copy is a new node: a racing set at the copy conflicts with the copied value.
    seen = log.state.seq
    log.add("a", Cp(("e", "f"), ("g",)), seen=seen)
    log.add("b", setm(("g",), file="b"), seen=seen)
    assert meta_of(log, "g") == {"file": block("1", "", "b")}
    assert meta_of(log, "e", "f") == {"file": "1"}
    log.add("a", Rm(("e",), recursive=True))
    log.add("a", Mkdir(("e",)))
    log.add("a", Write(("e", "f"), c(b"y")))
    assert meta_of(log, "e") == {}
    assert meta_of(log, "e", "f") == {}


def test_a_rename_over_a_file_keeps_the_moved_files_metadata() -> None:
    log = Log()
    log.add("a", Write(("src",), c(b"s")))
    log.add("a", Write(("dst",), c(b"d")))
    log.add("a", setm(("src",), who="src"))
    log.add("a", setm(("dst",), who="dst", other="dst"))
    log.add("a", Mv(("src",), ("dst",)))
    assert meta_of(log, "dst") == {"who": "src"}


def test_metadata_is_in_the_tree_hash_and_replay_is_deterministic() -> None:
    def build(with_meta: bool) -> Log:
        log = Log()
        log.add("a", Write(("f",), c(b"x")))
        if with_meta:
            seen = log.state.seq
            log.add("a", setm(("f",), k="1"), seen=seen)
            log.add("b", setm(("f",), k="2"), seen=seen)
            log.add("a", setm(("f",), k=None), seen=seen)
        return log

    plain, meta1, meta2 = build(False), build(True), build(True)
    assert meta1.state.tree.hash() == meta2.state.tree.hash() != plain.state.tree.hash()
    # Clearing every key leaves a node that hashes as if it never had any.
    meta1.add("c", setm(("f",), True))
    node = meta1.state.tree.lookup(("f",))
    assert node is not None
    assert node.meta is None
    assert meta1.state.tree.hash() == plain.state.tree.hash()  # sets leave mtime alone


def test_a_failed_fold_rolls_metadata_back() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    log.add("a", setm(("d",), k="1"))
    before = log.state.tree.hash()

    class BoomError(Exception):
        pass

    import engine.fold as fold_module

    original = fold_module._Folder._event

    def explode(self: object, path: object, *, recursive: bool = False) -> None:
        raise BoomError

    fold_module._Folder._event = explode  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(BoomError):
            log.add("a", setm(("d",), k="2", j="3"))
    finally:
        fold_module._Folder._event = original  # type: ignore[method-assign]
    assert log.state.tree.hash() == before
    assert meta_of(log, "d") == {"k": "1"}


# -- validation --------------------------------------------------------------------------


def test_validate_refuses_missing_paths_and_skips_no_ops() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    tree = log.state.tree
    with pytest.raises(FsError) as info:
        validate.check(tree, setm(("nope",), k="v"))
    assert info.value.errno == errno.ENOENT
    assert validate.check(tree, setm(("d",), k="v"))
    assert not validate.check(tree, setm(("d",), k=None))
    assert not validate.check(tree, setm(("d",), True))
    log.add("a", setm(("d",), k="v"))
    assert not validate.check(log.state.tree, setm(("d",), k="v"))
    assert validate.check(log.state.tree, setm(("d",), True))
    seen = log.state.seq
    log.add("a", setm(("d",), k="1"), seen=seen)
    log.add("b", setm(("d",), k="2"), seen=seen)
    # A set of a conflicted key is never a no-op: it resolves the conflict.
    assert validate.check(log.state.tree, setm(("d",), k="1"))


# -- snapshots ---------------------------------------------------------------------------

#: A snapshot encoded before metadata existed (version 1, from git history): directory
#: d, a conflicted d/f (two racing writes) and a symlink l.
V1_SNAPSHOT = bytes.fromhex(
    "0105e807050201610300016202000001ed03000000020164016c0002ed0382a0abfef96282a0abfef962"
    "010182a0abfef9620161000101660103a40388a0abfef96284a0abfef962030284a0abfef96201610003"
    "86a0abfef9620161010101010005626173650a0488a0abfef9620162010101010002780a020101000278"
    "0a01010005626173650a01010002790a0204ff038aa0abfef9628aa0abfef96201058aa0abfef9620162"
    "0003642f6608cb8b07"
)
V1_TREE_HASH = "ac907338f7ff3d781df55a814877a4020e8c9ba62d21f2b35fb65de115887660"


def test_an_old_snapshot_still_loads() -> None:
    assert V1_SNAPSHOT[0] == 1
    state = decode_snapshot(V1_SNAPSHOT)
    assert state.seq == 5
    assert state.tree.hash() == V1_TREE_HASH
    node = state.tree.lookup(("d", "f"))
    assert node is not None
    assert node.meta is None
    assert node.value == Merge((c(b"x\n"), c(b"y\n")), (c(b"base\n"),))  # type: ignore[union-attr]
    assert state.tree.lookup(("l",)) is not None
    # Re-encoded, it is a version-2 snapshot of the same state.
    again = encode_snapshot(state)
    assert again[0] == SNAPSHOT_VERSION == 2
    assert decode_snapshot(again).tree.hash() == V1_TREE_HASH


def test_snapshots_carry_metadata_and_its_race_state() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    log.add("a", Symlink(("l",), "d"))
    log.add("a", setm(("d",), k="base", other="o"))
    log.add("a", setm(("l",), link="1"))
    log.add("a", setm((), root="r"))
    seen = log.state.seq
    log.add("a", setm(("d",), k="a"), seen=seen)
    restored = ChangeState()
    decoded = decode_snapshot(encode_snapshot(log.state))
    restored.tree, restored.seq, restored.applied = decoded.tree, decoded.seq, decoded.applied
    assert decoded.tree.hash() == log.state.tree.hash()
    assert encode_snapshot(decoded) == encode_snapshot(log.state)
    # A racing set folded after the snapshot is decided as on the live replica.
    live_events = log.add("b", setm(("d",), k="b"), seen=seen)
    replay = Log()
    replay.state, replay.seq, replay.counters = decoded, log.seq - 1, {"a": 6}
    assert replay.add("b", setm(("d",), k="b"), seen=seen) == live_events
    assert replay.state.tree.hash() == log.state.tree.hash()
    assert meta_of(replay, "d")["k"] == block("a", "base", "b")
    assert meta_of(replay) == {"root": "r"}


def test_corrupt_metadata_in_a_snapshot_is_a_codec_error() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    log.add("a", setm(("d",), a="1", b="2"))
    data = bytearray(encode_snapshot(log.state))
    # Swap the two key names: "a" ... "b" become "b" ... "a" (not increasing).
    first, second = data.index(b"\x01a\x01"), data.index(b"\x01b\x01")
    data[first + 1], data[second + 1] = ord("b"), ord("a")
    with pytest.raises(CodecError):
        decode_snapshot(_sealed(bytes(data[:-4])))


# -- tree merges -------------------------------------------------------------------------


def _node(tree: Tree, *path: str) -> AnyNode:
    node = tree.lookup(path)
    assert node is not None
    return node


def _meta(tree: Tree, *path: str) -> dict[str, str]:
    return {k: render(s.value) for k, s in (_node(tree, *path).meta or {}).items()}


def _fork(base: ChangeState) -> Log:
    log = Log()
    log.state = fresh_state(base.tree, base.window_ms)
    return log


def test_a_fresh_state_keeps_metadata_without_its_versions() -> None:
    log = Log()
    log.add("a", Mkdir(("d",)))
    log.add("a", setm(("d",), k="v"))
    child = fresh_state(log.state.tree, 1000)
    slot = _node(child.tree, "d").meta["k"]  # type: ignore[index]
    assert render(slot.value) == "v"
    assert slot.versions == ()
    assert child.tree.hash() == log.state.tree.hash()


def test_tree_merges_merge_metadata_key_by_key() -> None:
    base = Log()
    base.add("a", Write(("f",), c(b"x")))
    base.add("a", Mkdir(("d",)))
    base.add("a", setm(("f",), status="base", gone="g", same="s"))
    left, right = _fork(base.state), _fork(base.state)
    left.add("l", setm(("f",), status="left", gone=None))
    left.add("l", setm(("d",), side="left"))
    right.add("r", setm(("f",), reviewed="yes", same="s"))
    clean = merge_trees(base.state.tree, left.state.tree, right.state.tree)
    assert not clean.is_conflicted
    assert _meta(clean.tree, "f") == {"reviewed": "yes", "same": "s", "status": "left"}
    assert _meta(clean.tree, "d") == {"side": "left"}
    # Both sides set one key differently: a conflict, reported at the node's path.
    right.add("r", setm(("f",), status="right"))
    right.add("r", setm(("d",), side="right"))
    merged = merge_trees(base.state.tree, left.state.tree, right.state.tree)
    assert merged.conflicts == (("d",), ("f",))
    assert _meta(merged.tree, "f")["status"] == block("left", "base", "right")
    assert _meta(merged.tree, "d")["side"] == block("left", "", "right")
    assert render(_node(merged.tree, "f").value) == "x"  # type: ignore[union-attr]
