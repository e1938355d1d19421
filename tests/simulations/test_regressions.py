"""Every bug the simulator found: its pinned seed, and a minimal engine test (jj's rule).

An engine bug not fixed yet is ``xfail(strict=True)``: when the fold is fixed it
passes, strict xfail turns that into a failure, and whoever fixed it removes the
marker here and the entry in simulations/known.py (bugs 1 and 2 went that way).
The seeds are pinned with the exact command a failing run printed; a later change
to the engine or the workload can steer a seed elsewhere, which is why each bug
also has a minimal engine test.
The last group pins seeds where a checker itself was wrong (a false alarm), so the
checker's exact rule does not regress.
"""

from __future__ import annotations

from collections import Counter

import pytest

from engine import fold as fold_module
from engine.content import Content
from engine.fold import ChangeState, Event, fold
from engine.merge import Merge
from engine.ops import Append, Chmod, Cp, Entry, Logged, Mv, Op, Rm, Utimes, Write
from engine.tree import FileNode
from simulations.failure import CheckFailedError
from simulations.known import Findings
from simulations.model import SimpleFiles
from simulations.oracle import Oracle
from simulations.runner import RunConfig, run

T0 = 1_700_000_000_000


def fold_steps(steps: list[tuple[str, int, int, Op]]) -> tuple[ChangeState, list[list[Event]]]:
    """Fold (author, counter, seen, op) steps at seq 1, 2, ... 10 ms apart."""
    state = ChangeState()
    events = [
        fold(state, Logged(seq, T0 + 10 * seq, Entry(op, author, counter, seen)))
        for seq, (author, counter, seen, op) in enumerate(steps, 1)
    ]
    return state, events


def c(data: bytes) -> Content:
    return Content.of(data)


# -- bug 1: an op that changed nothing emitted an event (fixed in engine/fold.py) ---------


def test_seed_5_no_phantom_event() -> None:
    # First found as: python -m simulations run --seed 5 --mounts 7 --steps 120 --faults swarm
    # (m0x0 folding seq 9, chmod 'a' to the mode it had: phantom event on 'a').
    result = run(RunConfig(5, 7, 120, "swarm"))
    assert result.ok, result.report()
    assert not result.known


def test_chmod_and_utimes_that_change_nothing_emit_no_event() -> None:
    _, events = fold_steps(
        [
            ("a", 1, 0, Write(("f",), c(b"x\n"))),
            ("a", 2, 1, Chmod(("f",), 0o644)),  # the mode it has
            ("a", 3, 2, Utimes(("f",), T0 + 10, T0 + 10)),  # the times it has
        ]
    )
    assert events[1:] == [[], []]


# -- bug 2: replaced contents came back as conflict sides (fixed in engine/fold.py) -------


def test_seed_545_conflict_sides_stay_bounded() -> None:
    # python -m simulations run --seed 545 --mounts 8 --steps 120 --faults swarm
    # (8 mounts on one file: 348 sides after 64 entries; the next seed, 375, took 536 s).
    result = run(RunConfig(545, 8, 120, "swarm"))
    assert result.ok, result.report()
    assert result.stopped is None
    assert not result.known


def test_stale_writers_after_an_append_do_not_resurrect_the_base() -> None:
    steps: list[tuple[str, int, int, Op]] = [
        ("a", 1, 0, Write(("f",), c(b"base\n"))),
        ("a", 2, 1, Write(("f",), c(b"A\n"))),
        ("b", 1, 1, Write(("f",), c(b"B\n"))),  # races A: conflict A | B, base "base"
        ("c", 1, 3, Append(("f",), c(b"x\n"))),  # every term gets "x"
    ]
    # Five writers who had seen the conflict (seq 3) but not the append.
    steps += [(f"w{i}", 1, 3, Write(("f",), c(b"W%d\n" % i))) for i in range(5)]
    state, _ = fold_steps(steps)
    node = state.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    sides = [v.inline_bytes() for v in node.value.adds if v is not None]
    assert b"base\n" not in sides  # replaced by A and B; nobody wrote it again
    assert len(sides) <= len(steps)


# -- bug 3: mv over a file dropped the moved file's versions (fixed in engine/fold.py) ---


def test_seed_164_no_lost_write() -> None:
    # python -m simulations run --seed 164 --mounts 5 --steps 120 --faults swarm
    # failed checker c: "the bytes of m4x0.6 (seq 28) vanished from a file at seq 36:
    # write 'h' by m0x0, which had seen only up to seq 25, 177 ms later".
    result = run(RunConfig(164, 5, 120, "swarm"))
    assert result.ok, result.report()


@pytest.mark.parametrize("last", [Write(("h",), c(b"a overwrites\n")), Rm(("h",))])
def test_mover_cannot_clobber_bytes_it_carried_unseen(last: Op) -> None:
    state, _ = fold_steps(
        [
            ("a", 1, 0, Write(("f",), c(b"old\n"))),
            ("a", 2, 1, Write(("h",), c(b"h0\n"))),
            ("b", 1, 2, Write(("f",), c(b"new from b\n"))),
            ("a", 3, 2, Mv(("f",), ("h",))),  # a had not seen b's write: h carries it
            ("a", 4, 2, last),  # a still has not seen it
        ]
    )
    node = state.tree.lookup(("h",))
    assert isinstance(node, FileNode)
    assert c(b"new from b\n") in node.value.adds


# -- bug 4: a racing copy of a conflict added the sides the file held again (fixed) -------


def test_seed_20625_a_racing_copy_of_a_conflict_adds_no_side_twice() -> None:
    # python -m simulations run --seed 20625 --mounts 2 --steps 200 --faults swarm
    # failed checker d's bound: "after seq 163 (cp 'g' 'a' by m1x0, seen 36) 'a' has 179
    # sides" (65 distinct): copies of one conflict copied back and forth, racing.
    # Minimal engine test: tests/engine/test_fold.py,
    # test_a_racing_copy_of_a_conflict_adds_no_side_the_file_holds.
    result = run(RunConfig(20625, 2, 200, "swarm"))
    assert result.ok, result.report()


def test_a_racing_copy_of_copies_stays_bounded() -> None:
    steps: list[tuple[str, int, int, Op]] = [
        ("a", 1, 0, Write(("f",), c(b"A\n"))),
        ("b", 1, 0, Write(("f",), c(b"B\n"))),  # add/add: A | B
    ]
    # Two authors copy the conflict back and forth, each racing the other.
    for i in range(6):
        src, dst = (("f",), ("g",)) if i % 2 == 0 else (("g",), ("f",))
        steps.append(("ab"[i % 2], 2 + i, 0, Cp(src, dst)))
    state, _ = fold_steps(steps)
    for path in (("f",), ("g",)):
        node = state.tree.lookup(path)
        assert isinstance(node, FileNode)
        assert sorted(v.inline_bytes() or b"" for v in node.value.adds if v) == [b"A\n", b"B\n"]


# -- bug 5 (fixed): a write-back spilled to a blob was not a write-back any more --------


def test_seed_358_a_spilled_writeback_keeps_the_conflict() -> None:
    # python -m simulations run --seed 358 --mounts 3 --steps 200 --faults swarm
    # failed checker h: "seq 105 (m2x0.27) was spilled to blobs; folding it inline would
    # leave 'f' otherwise" (an 8 KiB conflict block written back; the server took 6 KiB).
    result = run(RunConfig(358, 3, 200, "swarm", strict=True))
    assert result.ok, result.report()


def test_a_spilled_writeback_folds_like_the_inline_one() -> None:
    from engine import conflicts, driver
    from engine.content import BlobRef

    steps: list[tuple[str, int, int, Op]] = [
        ("a", 1, 0, Write(("f",), c(b"x\n"))),
        ("b", 1, 0, Write(("f",), c(b"y\n"))),  # add/add: x | y
    ]
    state, _ = fold_steps(steps)
    node = state.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    block = conflicts.materialize([b"x\n", b"Y\n"], [b""])  # side #2 edited inside
    # What the writer's mount logs (`RepoMount._written_back`): the block and its terms.
    op = driver.writeback(Write(("f",), c(block)), node.value, [b"x\n", b"", b"y\n"], block)
    entry = Entry(op, "c", 1, 2)
    refs = [BlobRef(seg.digest, seg.size) for seg in driver.inline_segments(entry)]
    spilled = driver.spilled(entry, refs)
    assert spilled.op.content.inline_bytes() is None  # the block and the edited term
    assert isinstance(spilled.op, Write)
    assert [t.inline_bytes() for t in spilled.op.terms] == [None, b"", None]
    results = []
    for each in (entry, spilled):
        copy = ChangeState()
        for seq, (author, counter, seen, each_op) in enumerate(steps, 1):
            fold(copy, Logged(seq, T0 + 10 * seq, Entry(each_op, author, counter, seen)))
        fold(copy, Logged(3, T0 + 30, each))
        folded = copy.tree.lookup(("f",))
        assert isinstance(folded, FileNode)
        results.append(folded.value)
    assert results[0].adds == (c(b"x\n"), c(b"Y\n"))  # inline: rule 6 keeps the conflict
    assert results[1] == results[0]  # spilled: the same
    assert state.seq == 2


# -- the model forgets what the fold forgets (checker d false alarms, seeds 20271, 20538) --


def _model_fold(logs: list[Logged]) -> None:
    model, state = SimpleFiles(1000, Counter()), ChangeState()
    for logged in logs:
        pending = model.before(logged, state.tree)
        fold(state, logged)
        if pending is not None:
            model.after(logged, state.tree, pending)


def test_the_model_gives_a_racer_whose_view_was_forgotten_an_empty_base() -> None:
    # The file forgot its value at seq 1 (b's versions are more than a window older than
    # a's write-back), so c's racing write gets an empty base: a conflict, although the
    # file holds again what c had seen. The model predicted "not raced" (S == X).
    for gap_ms in (3_000, 178_000):  # a stale racer; a forward clock jump (seed 20538)
        steps = [
            (0, "a", 1, 0, b"seen\n"),
            (10, "b", 1, 1, b"y\n"),
            (20, "b", 2, 2, b"z\n"),
            (gap_ms, "a", 2, 3, b"seen\n"),
            (gap_ms + 16, "c", 1, 1, b"w\n"),
        ]
        _model_fold(
            [
                Logged(seq, T0 + dt, Entry(Write(("f",), c(data)), author, n, seen))
                for seq, (dt, author, n, seen, data) in enumerate(steps, 1)
            ]
        )


def test_the_model_still_requires_the_conflict_when_the_base_is_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fold that, not knowing the base, drops the racer's bytes must still fail.
    monkeypatch.setattr(fold_module.FileNode, "value_at", lambda self, seen: self.value)
    steps = [
        (0, "a", 1, 0, b"seen\n"),
        (10, "b", 1, 1, b"y\n"),
        (20, "b", 2, 2, b"z\n"),
        (3_000, "a", 2, 3, b"seen\n"),
        (3_016, "c", 1, 1, b"w\n"),
    ]
    logs = [
        Logged(seq, T0 + dt, Entry(Write(("f",), c(data)), author, n, seen))
        for seq, (dt, author, n, seen, data) in enumerate(steps, 1)
    ]
    with pytest.raises(CheckFailedError, match="raced seq 4 by a"):
        _model_fold(logs)


# -- checker d's bound counts what a copy brings (false alarm, seed 20800) ---------------


def _oracle_fold(steps: list[tuple[str, int, int, Op]]) -> None:
    oracle = Oracle(1000, Counter(), Findings())
    for seq, (author, counter, seen, op) in enumerate(steps, 1):
        oracle.observe(Logged(seq, T0 + 10 * seq, Entry(op, author, counter, seen)))


def test_the_bound_lets_a_racing_copy_bring_the_moved_sides() -> None:
    # f: A+x | B+x after an append; g: A | B copied before it. A racing copy of g onto f
    # keeps all four (two writes, an append, a copy): the old bound ("no more sides
    # than writes, moves and copies") called that terms coming back.
    _oracle_fold(
        [
            ("a", 1, 0, Write(("f",), c(b"@@w1@@\n"))),
            ("b", 1, 0, Write(("f",), c(b"@@w2@@\n"))),
            ("a", 2, 2, Cp(("f",), ("g",))),
            ("b", 2, 3, Append(("f",), c(b"@@a3@@\n"))),
            ("c", 1, 0, Cp(("g",), ("f",))),
        ]
    )


def test_the_bound_counts_the_file_a_move_lands_on_in_an_aside() -> None:
    # Seed 602: mv a b/a where b is a file: the directory goes aside (b.conflict-1, reused
    # if it exists) and a lands on the file already there, racing it.
    _oracle_fold(
        [
            ("a", 1, 0, Write(("b",), c(b"@@w1@@\n"))),
            ("b", 1, 0, Write(("b", "a"), c(b"@@w2@@\n"))),  # lands in b.conflict-1/a
            ("a", 2, 1, Write(("a",), c(b"@@w3@@\n"))),
            ("a", 3, 1, Mv(("a",), ("b", "a"))),  # races b's write there
        ]
    )


def test_a_version_forgotten_before_the_clock_stepped_back_races_nothing() -> None:
    # Seed 2851: b's bytes stay in f (appends keep them) while a's appends, seconds
    # later, make f forget b's version; then the server's clock steps back and c, which
    # never saw b's write, replaces f stamped 400 ms after it. The fold no longer knows
    # b's version, so nothing races (docs/conflicts.md): checker c called it a lost write.
    oracle = Oracle(1000, Counter(), Findings())
    steps = [
        (0, "a", 1, 0, Write(("f",), c(b"@@w1@@\n"))),
        (100, "b", 1, 1, Write(("f",), c(b"@@w2@@\n"))),
        (2_000, "a", 2, 2, Append(("f",), c(b"@@a3@@\n"))),
        (4_000, "a", 3, 3, Append(("f",), c(b"@@a4@@\n"))),
        (6_000, "a", 4, 4, Append(("f",), c(b"@@a5@@\n"))),
        (500, "c", 1, 1, Write(("f",), c(b"@@w6@@\n"))),  # after the step back
    ]
    for seq, (dt_ms, author, counter, seen, op) in enumerate(steps, 1):
        oracle.observe(Logged(seq, T0 + dt_ms, Entry(op, author, counter, seen)))
    node = oracle.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    assert node.value == Merge.resolved(c(b"@@w6@@\n"))


def test_the_bound_catches_a_write_that_adds_two_sides(monkeypatch: pytest.MonkeyPatch) -> None:
    # Bug 2's shape: a racing write that re-adds a replaced content beside its own.
    def resurrecting(before: Merge, new: Merge, seen: Merge) -> Merge:
        return Merge((*before.adds, *new.adds, c(b"ghost\n")), (*before.removes, None, None))

    real = Merge.plus_diff
    monkeypatch.setattr(
        Merge,
        "plus_diff",
        lambda self, new, old: (
            resurrecting(self, new, old) if old.adds == (None,) else real(self, new, old)
        ),
    )
    with pytest.raises(CheckFailedError, match="more than the 2 this entry may leave"):
        _oracle_fold(
            [
                ("a", 1, 0, Write(("f",), c(b"@@w1@@\n"))),
                ("b", 1, 0, Write(("f",), c(b"@@w2@@\n"))),  # add/add, empty base
            ]
        )


# -- checker false alarms (simulator bugs), pinned so the exact rules stay exact ---------


@pytest.mark.parametrize(
    ("seed", "mounts", "steps", "faults", "window_ms", "why"),
    [
        (43, 3, 120, "swarm", 1000, "d: a write racing a no-change write-back still races"),
        (162, 3, 400, "all", 1000, "d: a racing write of the bytes already there: no conflict"),
        (277, 6, 400, "all", 1000, "d: a write below a file lands in the aside directory"),
        (0, 2, 400, "all", 1000, "c: a copy is the copier's write, followed per file"),
        (233, 4, 400, "all", 1000, "c: a moved value's bases cancel equal destination sides"),
        (51, 4, 120, "swarm", 1000, "c: replacing bytes seen at that path, copied there again"),
        (975, 4, 120, "swarm", 1000, "c: moving onto bytes seen at the destination"),
        (5076, 3, 300, "swarm", 250, "c: replacing bytes seen at that path (250 ms window)"),
        (1864, 4, 120, "swarm", 1000, "d: mv of a conflict block over the conflict: rule 6"),
        (1977, 5, 120, "swarm", 1000, "d: mv of a conflict block over the conflict: rule 6"),
        (3871, 2, 120, "swarm", 1000, "d: racing bytes equal to a base cancel it"),
        (20271, 2, 200, "swarm", 1000, "d: a racer whose view the file forgot: empty base"),
        (20538, 2, 200, "swarm", 1000, "d: the same, across a forward clock jump"),
        (20800, 2, 200, "swarm", 1000, "d bound: a racing copy brings the moved value's sides"),
        (602, 2, 200, "swarm", 1000, "d bound: a move onto a file in an aside directory"),
        (2851, 4, 200, "swarm", 1000, "c: a forgotten version races nothing after a step back"),
    ],
)
def test_checker_false_alarm_stays_fixed(
    seed: int, mounts: int, steps: int, faults: str, window_ms: int, why: str
) -> None:
    result = run(RunConfig(seed, mounts, steps, faults, window_ms))
    assert result.ok, f"{why}\n{result.report()}"
