"""engine.driver: the mount's retry, placement, spill, switch and snapshot decisions."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine import conflicts, driver
from engine.content import BlobRef, Content, Inline
from engine.fold import ChangeState, fold
from engine.merge import Merge
from engine.ops import Entry, Logged, Mkdir, Write
from engine.replica import Folded, Replica
from engine.tree import FileNode


def test_retry_doubles_its_wait_and_gives_up_after_the_attempts() -> None:
    policy = driver.RetryPolicy(attempts=4, first_backoff_ms=50, budget_ms=10_000)
    assert [policy.delay_ms(n, 0) for n in (1, 2, 3)] == [50, 100, 200]
    assert policy.delay_ms(4, 0) is None


def test_retry_gives_up_once_the_budget_is_spent() -> None:
    policy = driver.RetryPolicy(attempts=10, first_backoff_ms=50, budget_ms=1_000)
    assert policy.delay_ms(2, 999) == 100
    assert policy.delay_ms(2, 1_000) is None


def test_retry_counts_failures_from_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        driver.RetryPolicy().delay_ms(0, 0)


def test_the_message_id_is_the_op_id() -> None:
    entry = Entry(Mkdir(("d",)), "m1", 7, 0)
    assert driver.msg_id(entry) == entry.op_id == "m1.7"


def test_placement_threshold() -> None:
    assert driver.goes_inline(driver.INLINE_THRESHOLD_BYTES)
    assert not driver.goes_inline(driver.INLINE_THRESHOLD_BYTES + 1)


def test_a_spill_keeps_the_content_identity() -> None:
    blob = BlobRef("b" * 64, 3)
    content = Content.from_segments([Inline(b"head"), blob, Inline(b"tail")])
    entry = Entry(Write(("f",), content), "m1", 1, 0)
    inline = driver.inline_segments(entry)
    assert [seg.data for seg in inline] == [b"head", b"tail"]
    refs = [BlobRef(seg.digest, seg.size) for seg in inline]
    moved = driver.spilled(entry, refs)
    assert isinstance(moved.op, Write)
    assert moved.op.content.segments == (refs[0], blob, refs[1])
    assert moved.op_id == entry.op_id
    assert moved.op.content.key == content.key
    assert driver.inline_segments(moved) == []


def test_a_spill_refuses_blobs_that_do_not_match() -> None:
    entry = Entry(Write(("f",), Content.of(b"abc")), "m1", 1, 0)
    with pytest.raises(ValueError, match="do not match"):
        driver.spilled(entry, [BlobRef("0" * 64, 3)])
    with pytest.raises(ValueError, match="do not match"):
        driver.spilled(entry, [])


def test_ops_without_bytes_have_nothing_to_spill() -> None:
    assert driver.inline_segments(Entry(Mkdir(("d",)), "m1", 1, 0)) == []


def test_a_switch_keeps_the_op_counter_growing() -> None:
    old = Replica("m1", ChangeState())
    old.counter = 9
    new = Replica("m1", ChangeState())
    new.counter = 2
    assert driver.carry_counter(old, new) is new
    assert new.counter == 9
    ahead = Replica("m1", ChangeState())
    ahead.counter = 12
    assert driver.carry_counter(old, ahead).counter == 12


def _folded(author: str, seq: int) -> Folded:
    return Folded(seq, seq, Entry(Mkdir((f"d{seq}",)), author, seq, seq - 1), [])


def test_the_author_of_the_crossing_entry_snapshots_and_only_it() -> None:
    mine = driver.SnapshotCadence(3)
    theirs = driver.SnapshotCadence(3)
    batch = [_folded("a", 1), _folded("b", 2), _folded("a", 3)]
    assert mine.observe(batch, "a")
    assert not theirs.observe(batch, "b")
    assert mine.entries == theirs.entries == 3
    assert not mine.observe([_folded("b", 4), _folded("b", 5), _folded("b", 6)], "a")


def test_a_read_only_mount_and_a_cadence_of_none_never_snapshot() -> None:
    assert not driver.SnapshotCadence(1).observe([_folded("a", 1)], "a", writable=False)
    assert not driver.SnapshotCadence(None).observe([_folded("a", 1)], "a")
    with pytest.raises(ValueError, match="positive"):
        driver.SnapshotCadence(0)


def test_a_cadence_resumes_from_the_entries_a_snapshot_held() -> None:
    cadence = driver.SnapshotCadence(10, entries=9)
    assert cadence.observe([_folded("a", 10)], "a")


# -- write-backs (docs/conflicts.md, rule 6) ----------------------------------------------

T0 = 1_700_000_000_000


def _conflict(sides: list[bytes]) -> tuple[ChangeState, Merge]:
    """A state whose file ``f`` is an add/add conflict of ``sides`` (authors a, b, ...)."""
    state = ChangeState()
    for seq, side in enumerate(sides, 1):
        entry = Entry(Write(("f",), Content.of(side)), f"w{seq}", 1, 0)
        fold(state, Logged(seq, T0 + seq, entry))
    node = state.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    return state, node.value


def _term_bytes(value: Merge) -> list[bytes]:
    return [b"" if v is None else v.inline_bytes() or b"" for v in value.terms()]


def test_a_writeback_logs_the_terms_reusing_the_unchanged_ones() -> None:
    _, value = _conflict([b"x\n", b"y\n"])
    block = conflicts.materialize([b"x\n", b"Y\n"], [b""])
    op = driver.writeback(Write(("f",), Content.of(block)), value, _term_bytes(value), block)
    assert op.content == Content.of(block)
    assert op.terms[0] is value.adds[0]
    assert op.terms[1:] == (Content(), Content.of(b"Y\n"))


def test_every_block_may_be_one() -> None:
    assert driver.may_be_block(conflicts.materialize([b"a\n", b"b\n"], [b""]))
    assert driver.may_be_block(conflicts.materialize([b"<<<<<<<\n", b"b"], [b""]))
    assert not driver.may_be_block(b"<<<<<<< HEAD\nx\n=======\ny\n>>>>>>> other\n")


def test_what_is_not_a_writeback_stays_a_plain_write() -> None:
    _, value = _conflict([b"x\n", b"y\n"])
    plain = Write(("f",), Content.of(b"z\n"))
    assert driver.writeback(plain, value, _term_bytes(value), b"z\n") is plain
    block = conflicts.materialize([b"x\n", b"y\n"], [b""])
    broken = block.replace(b">>>>>>>", b"", 1)
    assert driver.writeback(plain, value, _term_bytes(value), broken) is plain
    three = conflicts.materialize([b"x\n", b"y\n", b"z\n"], [b"", b""])
    assert driver.writeback(plain, value, _term_bytes(value), three) is plain
    resolved = Merge.resolved(Content.of(b"x\n"))
    assert driver.writeback(plain, resolved, [b"x\n"], block) is plain
    assert driver.writeback(plain, None, [], block) is plain
    with pytest.raises(ValueError, match="term bytes"):
        driver.writeback(plain, value, [b"x\n"], block)


_lines = st.lists(st.sampled_from([b"a\n", b"b\n", b"c", b"<<<<<<< x\n", b"\r\n"]), max_size=4)


@given(
    sides=st.lists(_lines.map(b"".join), min_size=2, max_size=3, unique=True),
    edit=st.integers(min_value=0, max_value=2),
    extra=_lines.map(b"".join),
)
def test_a_writeback_folds_alike_inline_and_spilled(
    sides: list[bytes], edit: int, extra: bytes
) -> None:
    state, value = _conflict(sides)
    assume(not value.is_resolved())
    held = _term_bytes(value)
    new_sides = [b"" if v is None else v.inline_bytes() or b"" for v in value.adds]
    new_sides[edit % len(new_sides)] += extra
    bases = [b"" if v is None else v.inline_bytes() or b"" for v in value.removes]
    block = conflicts.materialize(new_sides, bases)
    op = driver.writeback(Write(("f",), Content.of(block)), value, held, block)
    entry = Entry(op, "c", 1, state.seq)
    refs = [BlobRef(seg.digest, seg.size) for seg in driver.inline_segments(entry)]
    results = []
    for each in (entry, driver.spilled(entry, refs)):
        copy, _ = _conflict(sides)
        fold(copy, Logged(state.seq + 1, T0 + 5_000, each))
        node = copy.tree.lookup(("f",))
        assert isinstance(node, FileNode)
        results.append(node.value)
    assert results[0] == results[1]
    assert op.terms  # a block of the conflict it was read from is always a write-back
    assert results[0] != Merge.resolved(Content.of(block))  # never the marker text
