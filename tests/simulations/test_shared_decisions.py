"""The simulator runs the mount's own decisions (engine.driver), not copies of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import simulations.mount
import simulations.world
from engine import driver
from simulations.runner import RunConfig, run

ROOT = Path(__file__).resolve().parents[2]


def _module_constants(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names.update(t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper())
    return names


def test_the_simulated_mount_copies_no_decision_constant() -> None:
    for name in ("mount.py", "world.py"):
        constants = _module_constants(ROOT / "simulations" / name)
        copied = {c for c in constants if "APPEND" in c or "BACKOFF" in c or "INLINE" in c}
        assert not copied, f"simulations/{name} copies {copied}"


def test_the_simulator_imports_the_production_decisions() -> None:
    assert simulations.world.driver is driver
    assert simulations.mount.driver is driver
    mount = simulations.mount.SimMount(0, 1000, 4)
    assert isinstance(mount.cadence, driver.SnapshotCadence)


def _retries_and_give_ups(seed: int) -> tuple[int, bool]:
    result = run(RunConfig(seed, 3, 150, "swarm"))
    return result.coverage["append_retry"], result.ok


def test_changing_the_production_retry_policy_changes_the_simulation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Find a seed whose appends fail and are retried under the production policy.
    seed = next(s for s in range(40) if _retries_and_give_ups(s)[0] > 0)
    retries, _ = _retries_and_give_ups(seed)
    assert retries > 0
    # With a policy that never retries, the same seed retries nothing: the simulator
    # asks engine.driver, so it follows whatever the mount would do.
    monkeypatch.setattr(driver, "DEFAULT_RETRY", driver.RetryPolicy(attempts=1))
    assert _retries_and_give_ups(seed)[0] == 0


def test_the_simulated_mounts_store_snapshots_on_the_production_cadence() -> None:
    mount = simulations.mount.SimMount(0, 1000, 2)
    assert mount.replica is not None
    assert mount.snapshot is None
    # Entries by another author never make this mount snapshot; its own crossing does.
    from engine.codec import encode_entry
    from engine.content import Content
    from engine.ops import Entry, Write

    other = Entry(Write(("a",), Content.of(b"1")), "zz", 1, 0)
    own = Entry(Write(("b",), Content.of(b"2")), mount.author, 1, 0)
    folded = mount.replica.receive(1, 0, 10, encode_entry(other))
    assert not mount.observe_folds(folded)
    folded = mount.replica.receive(2, 1, 20, encode_entry(own))
    assert mount.observe_folds(folded)
    assert mount.snapshot is not None


# -- placement, spills and switches (engine.driver) ------------------------------------


def _blobs_and_spills(seed: int) -> tuple[int, int, bool]:
    result = run(RunConfig(seed, 3, 150, "swarm"))
    return result.coverage["blob_content"], result.coverage["spill"], result.ok


def test_the_simulated_mount_places_and_spills_content_as_the_driver_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A seed whose large contents go to blobs and whose server refuses medium ones.
    seed = next(s for s in range(80) if all(_blobs_and_spills(s)[:2]))
    blobs, spills, ok = _blobs_and_spills(seed)
    assert blobs > 0
    assert spills > 0
    assert ok
    # A driver that keeps every content inline and finds nothing to spill: the same
    # seed stores no blob (what the server refuses is given up, as ENAMETOOLONG).
    monkeypatch.setattr(driver, "goes_inline", lambda size: True)
    monkeypatch.setattr(driver, "inline_segments", lambda entry: [])
    blobs, spills, _ = _blobs_and_spills(seed)
    assert (blobs, spills) == (0, 0)


def test_a_switch_carries_the_op_counter_as_the_driver_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without carry_counter, a mount moving to another change issues op ids it used
    # before; the stream deduplicates them against its old entries (another change),
    # so the write is acknowledged but never logged where the mount writes.
    seeds = [s for s in range(60) if run(RunConfig(s, 3, 150)).coverage["change_switched"]]
    assert seeds
    monkeypatch.setattr(driver, "carry_counter", lambda old, new: new)
    failures = [r.failure for r in (run(RunConfig(s, 3, 150)) for s in seeds[:12]) if r.failure]
    assert failures, "no seed reused an op id after a switch"
    # Acknowledged at a sequence of another change; or waiting for one its change's
    # log never reaches.
    checkers = {f.checker for f in failures}
    assert "c:no-lost-write" in checkers, failures
    assert checkers <= {"c:no-lost-write", "liveness"}, failures
