"""The replica state machine: issuing entries and folding deliveries in any order."""

from __future__ import annotations

import errno

import pytest

from engine import fold as fold_module
from engine.codec import encode_entry
from engine.content import Content
from engine.errors import CodecError, FsError
from engine.fold import ChangeState, Event
from engine.ops import Entry, Mkdir, Mv, Rm, Write
from engine.replica import CorruptEntryError, FoldFailedError, Replica
from engine.snapshot import encode_snapshot
from engine.tree import FileNode

T0 = 1_700_000_000_000


def payload(author: str, counter: int, data: bytes, *, name: str = "f", seen: int = 0) -> bytes:
    return encode_entry(Entry(Write((name,), Content.of(data)), author, counter, seen))


def content(replica: Replica, name: str = "f") -> bytes | None:
    node = replica.state.tree.lookup((name,))
    assert isinstance(node, FileNode)
    assert node.value.is_resolved()
    value = node.value.adds[0]
    return None if value is None else value.inline_bytes()


# A change's log in a shared stream: sequences with gaps, chained by prev_seq.
LOG = [
    (5, 0, T0, payload("w", 1, b"1")),
    (9, 5, T0 + 1, payload("w", 2, b"12")),
    (12, 9, T0 + 2, payload("w", 3, b"123")),
]


def test_in_order_deliveries_fold_each_once_with_events() -> None:
    replica = Replica("r")
    for seq, prev, time_ms, data in LOG:
        folded = replica.receive(seq, prev, time_ms, data)
        assert [f.seq for f in folded] == [seq]
        assert folded[0].events == [Event(("f",))]
        assert folded[0].time_ms == time_ms
    assert replica.seq == 12
    assert content(replica) == b"123"


def test_duplicates_are_ignored() -> None:
    replica = Replica("r")
    assert len(replica.receive(*LOG[0])) == 1
    before = replica.state.tree.hash()
    assert replica.receive(*LOG[0]) == []  # already folded
    assert replica.state.tree.hash() == before
    assert replica.receive(*LOG[2]) == []  # early: buffered
    assert replica.receive(*LOG[2]) == []  # early duplicate: still one buffered
    assert replica.waiting == 1
    assert [f.seq for f in replica.receive(*LOG[1])] == [9, 12]
    assert replica.receive(*LOG[1]) == []
    assert replica.receive(*LOG[2]) == []
    assert (replica.seq, replica.waiting) == (12, 0)
    assert content(replica) == b"123"


def test_out_of_order_deliveries_wait_for_their_predecessor() -> None:
    replica = Replica("r")
    assert replica.receive(*LOG[2]) == []
    assert replica.receive(*LOG[1]) == []
    assert (replica.seq, replica.waiting) == (0, 2)
    assert replica.state.tree.lookup(("f",)) is None  # nothing folded out of order
    folded = replica.receive(*LOG[0])
    assert [f.seq for f in folded] == [5, 9, 12]
    assert [f.entry.counter for f in folded] == [1, 2, 3]
    assert (replica.seq, replica.waiting) == (12, 0)
    assert content(replica) == b"123"


def test_corrupt_payload_names_its_sequence_and_stops_folding() -> None:
    replica = Replica("r")
    replica.receive(*LOG[0])
    good = LOG[1][3]
    corrupt = good[:-1] + bytes([good[-1] ^ 0xFF])  # CRC mismatch
    with pytest.raises(CorruptEntryError) as caught:
        replica.receive(9, 5, T0 + 1, corrupt)
    assert caught.value.seq == 9
    assert "sequence 9" in str(caught.value)
    assert isinstance(caught.value, CodecError)
    # Every later delivery raises it again, even a valid one; nothing more is folded.
    for delivery in (LOG[2], (9, 5, T0 + 1, good), LOG[0]):
        with pytest.raises(CorruptEntryError) as again:
            replica.receive(*delivery)
        assert again.value is caught.value
    assert replica.seq == 5
    assert content(replica) == b"1"


def test_corrupt_entry_buffered_early_raises_when_it_is_reached() -> None:
    replica = Replica("r")
    assert replica.receive(12, 9, T0 + 2, b"\x01garbage") == []  # not decoded yet
    assert replica.receive(*LOG[1]) == []
    # The entries before the corrupt one are folded and returned with their events...
    folded = replica.receive(*LOG[0])
    assert [f.seq for f in folded] == [LOG[0][0], LOG[1][0]]
    assert all(f.events for f in folded)
    assert replica.seq == 9
    # ...and from then on every call raises, naming the corrupt sequence.
    with pytest.raises(CorruptEntryError) as caught:
        replica.receive(13, 12, T0 + 3, payload("w", 4, b"x"))
    assert caught.value.seq == 12
    assert replica.seq == 9


def test_unknown_codec_version_is_corruption_too() -> None:
    replica = Replica("r")
    data = LOG[0][3]
    with pytest.raises(CorruptEntryError) as caught:
        replica.receive(5, 0, T0, bytes([99]) + data[1:])
    assert caught.value.seq == 5


def test_issue_stamps_seen_and_counts() -> None:
    replica = Replica("me")
    first = replica.issue(Write(("g",), Content.of(b"x")))
    assert first == Entry(Write(("g",), Content.of(b"x")), "me", 1, 0)
    assert first.op_id == "me.1"
    replica.receive(*LOG[0])
    replica.receive(*LOG[1])
    second = replica.issue(Write(("g",), Content.of(b"y")))
    assert second is not None
    assert (second.counter, second.seen) == (2, 9)
    replica.receive(*LOG[2])
    third = replica.issue(Rm(("f",)))
    assert third is not None
    assert (third.counter, third.seen) == (3, 12)
    assert replica.counter == 3
    # Issuing does not fold: the tree changes only when the entry comes back.
    assert replica.state.tree.lookup(("g",)) is None


def test_issue_with_an_earlier_seen_makes_a_write_made_since_race() -> None:
    """A FUSE handle publishes bytes read earlier: ``seen`` says when, and must be <= seq."""
    replica = Replica("me", ChangeState(window_ms=1_000))
    replica.receive(*LOG[0])  # "1" by w, folded when the handle read it
    read_at = replica.seq
    replica.receive(*LOG[1])  # w writes "12" while the handle is open
    with pytest.raises(ValueError, match="outside"):
        replica.issue(Write(("f",), Content.of(b"mine")), seen=replica.seq + 1)
    with pytest.raises(ValueError, match="outside"):
        replica.issue(Write(("f",), Content.of(b"mine")), seen=-1)
    assert replica.counter == 0
    entry = replica.issue(Write(("f",), Content.of(b"mine")), seen=read_at)
    assert entry is not None
    assert entry.seen == read_at
    replica.receive(13, 9, T0 + 3, encode_entry(entry))
    node = replica.state.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    sides = sorted(v.inline_bytes() for v in node.value.adds if v is not None)
    assert sides == [b"12", b"mine"]  # w's unseen write survives beside ours


def test_issue_returns_none_for_a_no_op_and_does_not_count_it() -> None:
    replica = Replica("me")
    replica.receive(1, 0, T0, encode_entry(Entry(Mkdir(("d",)), "w", 1, 0)))
    replica.receive(2, 1, T0, payload("w", 2, b"x", name="x"))
    assert replica.issue(Mkdir(("d",), parents=True)) is None
    assert replica.issue(Mv(("x",), ("x",))) is None
    assert replica.counter == 0
    entry = replica.issue(Mkdir(("d", "e"), parents=True))
    assert entry is not None
    assert entry.counter == 1


def test_issue_raises_for_an_invalid_op_and_does_not_count_it() -> None:
    replica = Replica("me")
    with pytest.raises(FsError) as caught:
        replica.issue(Rm(("missing",)))
    assert caught.value.errno == errno.ENOENT
    with pytest.raises(FsError):
        replica.issue(Mkdir(("a", "b")))  # no parent, no -p
    assert replica.counter == 0
    assert replica.issue(Write(("a",), Content.of(b""))) is not None
    assert replica.counter == 1


def test_a_replica_folds_its_own_entries_like_any_other() -> None:
    mine, other = Replica("me"), Replica("you")
    entry = mine.issue(Write(("f",), Content.of(b"mine")))
    assert entry is not None
    data = encode_entry(entry)
    for replica in (mine, other):
        folded = replica.receive(3, 0, T0, data)
        assert [f.entry for f in folded] == [entry]
    assert mine.state.tree.hash() == other.state.tree.hash()


# -- an entry whose fold raises (issue 13) --------------------------------------------------


def _boom_on(monkeypatch: pytest.MonkeyPatch, path: tuple[str, ...]) -> None:
    """Make the fold raise for an op on ``path``, after it changed the tree."""
    original = fold_module._Folder.apply

    def apply(self: fold_module._Folder) -> None:
        original(self)  # the entry is applied, then fails: the fold must undo it
        if getattr(self.entry.op, "path", None) == path:
            raise RuntimeError("injected failure")

    monkeypatch.setattr(fold_module._Folder, "apply", apply)


def test_an_entry_whose_fold_raises_breaks_the_replica_at_its_sequence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _boom_on(monkeypatch, ("boom",))
    control = Replica("c")
    replica = Replica("r")
    for r in (replica, control):
        r.receive(5, 0, T0, payload("w", 1, b"1"))
    boom = encode_entry(Entry(Mkdir(("boom",)), "w", 2, 5))
    assert replica.receive(12, 9, T0 + 2, boom) == []  # early: buffered
    # 9 folds, then 12 raises: 9 is returned, the replica stops at 12.
    folded = replica.receive(9, 5, T0 + 1, payload("w", 3, b"12"))
    control.receive(9, 5, T0 + 1, payload("w", 3, b"12"))
    assert [f.seq for f in folded] == [9]
    broken = replica.broken
    assert isinstance(broken, FoldFailedError)
    assert isinstance(broken, CorruptEntryError)
    assert broken.seq == 12
    assert "sequence 12" in str(broken)
    assert "RuntimeError: injected failure" in str(broken)
    assert isinstance(broken.__cause__, RuntimeError)
    # The state is the one before the entry: sequence, tree, versions, applied ops.
    assert replica.seq == 9
    assert replica.state.tree.lookup(("boom",)) is None
    assert replica.state.tree.hash() == control.state.tree.hash()
    assert encode_snapshot(replica.state) == encode_snapshot(control.state)
    # Every later delivery raises the same error.
    with pytest.raises(FoldFailedError) as again:
        replica.receive(13, 12, T0 + 3, payload("w", 4, b"123"))
    assert again.value is broken


def test_an_entry_whose_fold_raises_first_raises_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    _boom_on(monkeypatch, ("f",))
    replica = Replica("r")
    with pytest.raises(FoldFailedError) as caught:
        replica.receive(5, 0, T0, payload("w", 1, b"1"))
    assert caught.value.seq == 5
    assert replica.broken is caught.value
    assert replica.seq == 0
    assert encode_snapshot(replica.state) == encode_snapshot(Replica("r").state)
