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

import pytest

from engine.content import Content
from engine.fold import ChangeState, Event, fold
from engine.ops import Append, Chmod, Entry, Logged, Mv, Op, Rm, Utimes, Write
from engine.tree import FileNode
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
    ],
)
def test_checker_false_alarm_stays_fixed(
    seed: int, mounts: int, steps: int, faults: str, window_ms: int, why: str
) -> None:
    result = run(RunConfig(seed, mounts, steps, faults, window_ms))
    assert result.ok, f"{why}\n{result.report()}"
