"""The simulator: a quick seed sweep, determinism, and checkers that can fail.

The quick sweep is what CI runs (a couple of hundred seeds in well under a minute);
`test_long_sweep` is the long mode, marked slow. The checker tests feed each
checker a violation, directly or by breaking the engine with monkeypatch, and
assert it is caught: a checker that cannot fail checks nothing.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from engine import fold as fold_module
from engine import snapshot as snapshot_module
from engine.content import Content
from engine.fold import ChangeState, Event, fold
from engine.merge import Merge
from engine.ops import Append, Entry, Logged, Write
from engine.tree import DirNode, FileNode
from simulations import coverage, world
from simulations.checkers import (
    PrefixHashes,
    check_event_set,
    check_events,
    clone_state,
    replay_from_scratch,
)
from simulations.failure import CheckFailedError
from simulations.known import Findings
from simulations.model import SimpleFiles
from simulations.oracle import Oracle
from simulations.runner import RunConfig, run, sweep
from simulations.sequencer import Sequencer

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000
QUICK_SEEDS = range(200)
QUICK_STEPS = 100


def quick_configs(seeds: range, steps: int = QUICK_STEPS) -> list[RunConfig]:
    return [RunConfig(seed, 2 + seed % 7, steps) for seed in seeds]


# -- the sweeps ------------------------------------------------------------------------


def test_quick_sweep_passes_and_reaches_every_required_path() -> None:
    result = sweep(quick_configs(QUICK_SEEDS))
    assert not result.failures, "\n".join(r.report() for r in result.failures)
    assert coverage.missing(result.coverage) == [], coverage.render(result.coverage)
    assert result.acked > 0.8 * result.entries


@pytest.mark.slow
def test_long_sweep(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.option.markexpr or "").replace("not slow", ""):
        pytest.skip("the long sweep runs only when asked for: pytest -m slow")
    configs = [RunConfig(seed, 2 + seed % 7, 400, "all") for seed in range(10_000, 10_300)]
    configs += quick_configs(range(20_000, 21_000), steps=200)
    result = sweep(configs, jobs=os.cpu_count() or 1)
    assert not result.failures, "\n".join(r.report() for r in result.failures)
    assert coverage.missing(result.coverage) == []


def test_no_faults_profile_injects_nothing() -> None:
    result = run(RunConfig(7, 4, 80, "none"))
    assert result.ok, result.report()
    points = ("crash_restart", "partition_release", "clock_jump", "append_retry")
    for point in (*points, "delivery_lost", "resubscribed", "redelivered"):
        assert result.coverage[point] == 0, point
    assert result.faults == []


# -- determinism (checker f) -----------------------------------------------------------


def test_one_seed_gives_one_trace_hash() -> None:
    first, second = run(RunConfig(11, 5, 80)), run(RunConfig(11, 5, 80))
    assert first.trace_hash == second.trace_hash
    assert first.coverage == second.coverage
    assert run(RunConfig(12, 5, 80)).trace_hash != first.trace_hash


def _hash_in_subprocess(hash_seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations",
            *["run", "--seed", "11", "--mounts", "5", "--steps", "80"],
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("trace hash:")]
    return line.split(":", 1)[1].strip()


def test_trace_hash_does_not_depend_on_pythonhashseed() -> None:
    in_process = run(RunConfig(11, 5, 80)).trace_hash
    assert _hash_in_subprocess("0") == in_process
    assert _hash_in_subprocess("1") == in_process


# -- the command line ------------------------------------------------------------------


def test_run_prints_seed_commit_hash_and_on_failure_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations.__main__ import main

    assert main(["run", "--seed", "3", "--mounts", "3", "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert "seed:       3" in out
    assert "commit:" in out
    assert "trace hash: " in out
    # Break the fold: events are never emitted. The run must fail and say how to rerun it.
    monkeypatch.setattr(fold_module._Folder, "_event", lambda self, path, recursive=False: None)
    assert main(["run", "--seed", "3", "--mounts", "3", "--steps", "40"]) == 1
    out = capsys.readouterr().out
    assert "FAILED checker e:events-equal-diff" in out
    assert "reproduce: python -m simulations run --seed 3 --mounts 3 --steps 40" in out


def test_sweep_reports_seeds_per_second_and_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    from simulations.__main__ import main

    status = main(["sweep", "--seeds", "0..3", "--steps", "30"])
    out = capsys.readouterr().out
    assert "3 seeds, 0 failed" in out
    assert "seeds/s" in out
    assert "conflict_created" in out
    assert status in (0, 1)  # 3 short seeds need not reach every required point


# -- the sequencer ---------------------------------------------------------------------


def test_sequencer_dedupes_within_the_window_and_stores_again_after() -> None:
    seq = Sequencer(dedupe_window_ms=120_000)
    first = seq.append(b"x", "m0x0.1", T0)
    again = seq.append(b"x", "m0x0.1", T0 + 119_000)
    assert (again.seq, again.duplicate) == (first.seq, True)
    later = seq.append(b"x", "m0x0.1", T0 + 121_000)
    assert not later.duplicate
    assert [e.seq for e in seq.entries] == [1, 2]
    assert seq.entries[1].prev_seq == 1


def test_sequencer_gaps_prev_seq_and_clock() -> None:
    seq = Sequencer()
    a = seq.append(b"a", "a", T0, gap=2)
    b = seq.append(b"b", "b", T0 - 50)  # the clock read earlier: the stamp does not go back
    assert (a.seq, b.seq) == (3, 4)
    assert seq.entries[1].prev_seq == 3
    assert b.time_ms == a.time_ms
    seq.jump_clock(-5000)
    c = seq.append(b"c", "c", T0)
    assert c.time_ms == T0 - 5000  # after a backward jump the stamp follows the clock
    assert [e.seq for e in seq.tail(3)] == [4, 5]


# -- each checker can fail -------------------------------------------------------------


def test_checker_a_rejects_two_trees_at_one_prefix() -> None:
    prefix = PrefixHashes()
    prefix.observe("m0x0", 5, "aa" * 32)
    prefix.observe("m1x0", 5, "aa" * 32)
    with pytest.raises(CheckFailedError, match="a:same-prefix-same-tree"):
        prefix.observe("m2x0", 5, "bb" * 32)


def _logged(seq: int, author: str, counter: int, seen: int, op: object) -> Logged:
    assert isinstance(op, Write | Append)
    return Logged(seq, T0 + seq, Entry(op, author, counter, seen))


def test_checker_b_rejects_a_live_hash_the_replay_does_not_give() -> None:
    from engine.codec import encode_entry

    seq = Sequencer()
    entry = Entry(Write(("f",), Content.of(b"x")), "m0x0", 1, 0)
    seq.append(encode_entry(entry), entry.op_id, T0)
    prefix = PrefixHashes()
    prefix.observe("m0x0", 1, "cc" * 32)
    with pytest.raises(CheckFailedError, match="b:replay-equals-live"):
        replay_from_scratch(seq.entries, 1000, prefix)


def test_checker_e_rejects_missing_and_phantom_events() -> None:
    with pytest.raises(CheckFailedError, match="no event covers"):
        check_event_set("m0x0", 3, [("a", "f")], [Event(("b",), recursive=True)])
    check_event_set("m0x0", 3, [("a", "f")], [Event(("a",), recursive=True)])
    with pytest.raises(CheckFailedError, match="phantom event"):
        check_event_set("m0x0", 3, [], [Event(("a",))])


def test_checker_e_refolds_and_compares_with_the_replica() -> None:
    from engine.replica import Folded

    state = ChangeState()
    before = clone_state(state)
    logged = _logged(1, "m0x0", 1, 0, Write(("f",), Content.of(b"x")))
    events = fold(state, logged)
    check_events("m0x0", clone_state(before), [Folded(1, logged.time_ms, logged.entry, events)])
    with pytest.raises(CheckFailedError, match="folding the entry again gave events"):
        check_events("m0x0", before, [Folded(1, logged.time_ms, logged.entry, [])])


def test_checker_c_rejects_a_racing_write_that_replaced_unseen_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fold that never sees races: the later write replaces bytes its author never saw.
    monkeypatch.setattr(fold_module._Folder, "_unseen_recent", lambda self, version: False)
    oracle = Oracle(1000, Counter(), Findings())
    oracle.observe(_logged(1, "m0x0", 1, 0, Write(("f",), Content.of(b"@@w1@@\n"))))
    oracle.observe(_logged(2, "m1x0", 1, 1, Write(("f",), Content.of(b"@@w2@@\n"))))
    oracle.observe(_logged(3, "m2x0", 1, 2, Write(("f",), Content.of(b"@@w3@@\n"))))
    with pytest.raises(CheckFailedError, match="c:no-lost-write"):
        oracle.observe(_logged(4, "m3x0", 1, 2, Write(("f",), Content.of(b"@@w4@@\n"))))


def test_checker_c_rejects_a_retried_op_applied_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fold_module.AppliedOps, "contains", lambda self, author, counter: False)
    oracle = Oracle(1000, Counter(), Findings())
    append = Append(("f",), Content.of(b"@@a1@@\n"))
    oracle.observe(_logged(1, "m0x0", 1, 0, append))
    with pytest.raises(CheckFailedError, match="took effect twice"):
        oracle.observe(_logged(2, "m0x0", 1, 0, append))


def test_checker_d_rejects_a_conflict_without_a_race(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fold whose sequential writes keep the old value as a side.
    def conflicting_edit(before: Merge, new: Merge, terms: object) -> Merge:
        return Merge((*before.adds, *new.adds), (*before.removes, None))

    monkeypatch.setattr(fold_module, "_written_back", conflicting_edit)
    oracle = Oracle(1000, Counter(), Findings())
    oracle.observe(_logged(1, "m0x0", 1, 0, Write(("f",), Content.of(b"@@w1@@\n"))))
    with pytest.raises(CheckFailedError, match="d:conflict-iff-race"):
        oracle.observe(_logged(2, "m1x0", 1, 1, Write(("f",), Content.of(b"@@w2@@\n"))))


def test_checker_d_model_rejects_a_missed_race() -> None:
    model = SimpleFiles(1000, Counter())
    state = ChangeState()
    for logged in (
        _logged(1, "m0x0", 1, 0, Write(("f",), Content.of(b"@@w1@@\n"))),
        _logged(2, "m1x0", 1, 1, Write(("f",), Content.of(b"@@w2@@\n"))),
    ):
        pending = model.before(logged, state.tree)
        assert pending is not None
        fold(state, logged)
        model.after(logged, state.tree, pending)
    racing = _logged(3, "m2x0", 1, 1, Write(("f",), Content.of(b"@@w3@@\n")))
    pending = model.before(racing, state.tree)
    assert pending is not None
    node = state.tree.lookup(("f",))
    assert isinstance(node, FileNode)
    node.value = Merge.resolved(Content.of(b"@@w3@@\n"))  # what a fold missing the race leaves
    with pytest.raises(CheckFailedError, match="raced seq 2 by m1x0"):
        model.after(racing, state.tree, pending)


def test_a_broken_snapshot_is_caught_at_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    real = snapshot_module.decode_snapshot

    def lossy(data: bytes) -> ChangeState:
        state = real(data)
        root = state.tree.root
        assert isinstance(root, DirNode)
        for name in sorted(root.children)[:1]:
            del root.children[name]
        return state

    monkeypatch.setattr("simulations.mount.decode_snapshot", lossy)
    failures = [
        r.failure for r in (run(RunConfig(seed, 4, 120, "all")) for seed in range(6)) if r.failure
    ]
    assert failures, "no seed restarted from a non-empty snapshot"
    assert all(f.checker == "a:same-prefix-same-tree" for f in failures), failures


def test_checker_h_rejects_a_spill_that_changes_what_readers_see() -> None:
    from simulations.blobs import BlobStore
    from simulations.checkers import check_spill

    blobs, state = BlobStore(), ChangeState()
    fold(state, _logged(1, "m0x0", 1, 0, Write(("f",), Content.of(b"@@w1@@\n"))))
    original = Entry(Append(("f",), Content.of(b"@@a2@@\n")), "m0x0", 2, 1)
    spilled = Entry(Append(("f",), Content.from_segments([blobs.put(b"@@a2@@\n")])), "m0x0", 2, 1)
    # Same bytes, other segments: readers cannot tell, so it passes.
    check_spill(state, Logged(2, T0 + 2, spilled), original, blobs.bytes_of)
    broken = Entry(Append(("f",), Content.from_segments([blobs.put(b"@@a3@@\n")])), "m0x0", 2, 1)
    with pytest.raises(CheckFailedError, match="h:spill-keeps-the-fold"):
        check_spill(state, Logged(2, T0 + 2, broken), original, blobs.bytes_of)


def test_lost_deliveries_without_resubscribing_leave_a_mount_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(world.World, "_on_resubscribe", lambda self, event: None)
    results = [run(RunConfig(seed, 3, 120, "all")) for seed in range(8)]
    failures = [r.failure for r in results if r.failure]
    assert failures, "no delivery was lost"
    assert {f.checker for f in failures} == {"liveness"}, failures


def test_a_child_change_that_does_not_start_from_the_sealed_state_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(world, "fresh_state", lambda tree, window_ms: ChangeState())
    seeds = [s for s in range(30) if run(RunConfig(s, 3, 150)).coverage["change_forked"]]
    failures = [r.failure for r in (run(RunConfig(s, 3, 150)) for s in seeds[:10]) if r.failure]
    assert failures, "no seed forked a change off a non-empty tree"
    assert {f.checker for f in failures} == {"a:same-prefix-same-tree"}, failures


DETERMINISTIC_MODULES = (
    "blobs",
    "checkers",
    "coverage",
    "failure",
    "faults",
    "known",
    "model",
    "mount",
    "oracle",
    "sequencer",
    "trace",
    "workload",
    "world",
)
NONDETERMINISTIC = {"time", "datetime", "asyncio", "threading", "os", "secrets", "uuid"}


@pytest.mark.parametrize("name", DETERMINISTIC_MODULES)
def test_the_simulated_world_imports_no_clock_and_no_io(name: str) -> None:
    tree = ast.parse((ROOT / "simulations" / f"{name}.py").read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & NONDETERMINISTIC
    assert world.__name__ == "simulations.world"
