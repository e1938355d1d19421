"""Checker (i) has teeth: folds that break the metadata race rules fail it; correct ones pass."""

from __future__ import annotations

from collections import Counter

import pytest

from engine import fold as fold_module
from engine.content import Content
from engine.ops import Cp, Entry, Logged, Mkdir, Op, Rm, SetMetadata, Write
from engine.tree import MetaSlot, Tree
from simulations import coverage
from simulations.failure import CheckFailedError
from simulations.known import Findings
from simulations.oracle import Oracle
from simulations.runner import RunConfig, sweep
from simulations.workload import Mix, Workload

T0 = 1_700_000_000_000


def logged(seq: int, author: str, counter: int, seen: int, op: Op, *, dt_ms: int = 1) -> Logged:
    return Logged(seq, T0 + seq * dt_ms, Entry(op, author, counter, seen))


def setm(path: tuple[str, ...], **items: str | None) -> SetMetadata:
    return SetMetadata(path, tuple(sorted(items.items())))


def oracle_with_file() -> Oracle:
    oracle = Oracle(1000, coverage.new(), Findings())
    oracle.observe(logged(1, "m0x0", 1, 0, Write(("f",), Content.of(b"@@w1@@\n"))))
    oracle.observe(logged(2, "m0x0", 2, 1, setm(("f",), status="m1")))
    return oracle


def test_racing_sets_pass_and_are_counted() -> None:
    oracle = oracle_with_file()
    oracle.observe(logged(3, "m0x0", 3, 2, setm(("f",), status="m2")))
    oracle.observe(logged(4, "m1x0", 1, 2, setm(("f",), status="m3", owner="m4")))
    oracle.observe(logged(5, "m1x0", 2, 4, setm(("f",), status="m5")))  # resolves
    assert oracle.coverage["metadata_set"] == 4
    assert oracle.coverage["metadata_conflict"] == 1
    assert oracle.coverage["metadata_resolved"] == 1


def test_a_racing_set_that_replaced_an_unseen_value_is_a_lost_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fold_module._Folder, "_unseen_recent", lambda self, version: False)
    oracle = oracle_with_file()
    oracle.observe(logged(3, "m0x0", 3, 2, setm(("f",), status="m2")))
    with pytest.raises(CheckFailedError, match=r"i:metadata-race-rules.*lost set"):
        oracle.observe(logged(4, "m1x0", 1, 2, setm(("f",), status="m3")))


def test_a_racing_delete_that_removed_an_unseen_value_is_a_lost_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fold whose deletes are not add-wins (they never see races).
    monkeypatch.setattr(fold_module._Folder, "_unseen_recent", lambda self, version: False)
    oracle = oracle_with_file()
    oracle.observe(logged(3, "m0x0", 3, 2, setm(("f",), status="m2")))
    with pytest.raises(CheckFailedError, match="lost set"):
        oracle.observe(logged(4, "m1x0", 1, 2, SetMetadata(("f",), (), clear=True)))


def test_a_racing_delete_keeps_the_value_with_the_real_fold() -> None:
    oracle = oracle_with_file()
    oracle.observe(logged(3, "m0x0", 3, 2, setm(("f",), status="m2")))
    oracle.observe(logged(4, "m1x0", 1, 2, SetMetadata(("f",), (), clear=True)))
    node = oracle.tree.lookup(("f",))
    assert node is not None
    assert node.meta is not None
    assert node.meta["status"].value.adds[0] == Content.of(b"m2")


def test_a_conflict_without_a_race_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fold that takes every set for a racing one over an unknown base.
    monkeypatch.setattr(fold_module._Folder, "_unseen_recent", lambda self, version: True)
    monkeypatch.setattr(MetaSlot, "value_at", lambda self, seen: None)
    oracle = Oracle(1000, coverage.new(), Findings())
    oracle.observe(logged(1, "m0x0", 1, 0, Mkdir(("d",))))
    oracle.observe(logged(2, "m0x0", 2, 1, setm(("d",), k="m1")))
    with pytest.raises(CheckFailedError, match="without racing a set"):
        oracle.observe(logged(3, "m0x0", 3, 2, setm(("d",), k="m2")))


def test_a_copy_is_a_carrier_and_rm_is_not_a_loss() -> None:
    oracle = oracle_with_file()
    oracle.observe(logged(3, "m0x0", 3, 2, Cp(("f",), ("g",))))
    # A racing set at the copy by an author who had not seen the copy: both survive.
    oracle.observe(logged(4, "m1x0", 1, 2, setm(("g",), status="m9")))
    node = oracle.tree.lookup(("g",))
    assert node is not None
    assert node.meta is not None
    assert not node.meta["status"].value.is_resolved()
    oracle.observe(logged(5, "m1x0", 2, 4, Rm(("g",))))
    assert oracle.tree.lookup(("g",)) is None


def test_seeds_without_metadata_draw_the_ops_they_drew_before() -> None:
    import random

    # The metadata stream is separate: the main stream is not consumed by it.
    for seed in range(30):
        rng = random.Random(seed)
        mix = Mix.choose(rng)
        workload = Workload(rng, mix)
        if workload.meta_rate == 0.0:
            state_before = rng.getstate()
            workload.next_op(Tree())
            assert rng.getstate() != state_before  # the op came from the main stream
            return
    pytest.fail("no seed among 30 without metadata")


def test_a_quick_sweep_reaches_the_metadata_races() -> None:
    result = sweep([RunConfig(seed, 2 + seed % 7, 100) for seed in range(40)])
    assert not result.failures, "\n".join(r.report() for r in result.failures)
    reached = Counter({k: result.coverage[k] for k in coverage.POINTS if k.startswith("metadata")})
    assert reached["metadata_set"] > 100, reached
    assert reached["metadata_conflict"] > 0, reached
