"""Run one seed or sweep many, and report: seed, commit, trace hash, coverage, failures.

A run builds a `World`, drives it to quiescence, then runs the final checks:
liveness (every mount up, folded to the end of the log, nothing buffered, no
append left in flight), convergence (a), replay from scratch (b), materialization
round trip, and a snapshot round trip of every mount's final state. A failure
carries the checker's name, an explanation and the one-line command that
reproduces it.
"""

from __future__ import annotations

import subprocess
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from engine.fold import DEFAULT_WINDOW_MS
from engine.snapshot import decode_snapshot, encode_snapshot
from simulations import checkers, coverage
from simulations.failure import CheckFailedError
from simulations.known import Findings, RunStoppedError
from simulations.trace import Trace
from simulations.world import World

DEFAULT_MOUNTS = 4
DEFAULT_STEPS = 120
DEFAULT_PROFILE = "swarm"


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything that determines a run: with the commit, it reproduces the run exactly."""

    seed: int
    mounts: int = DEFAULT_MOUNTS
    steps: int = DEFAULT_STEPS
    faults: str = DEFAULT_PROFILE
    window_ms: int = DEFAULT_WINDOW_MS
    strict: bool = False

    def command(self) -> str:
        """Return the command line that reproduces this run."""
        cmd = (
            f"python -m simulations run --seed {self.seed} --mounts {self.mounts}"
            f" --steps {self.steps} --faults {self.faults}"
        )
        if self.window_ms != DEFAULT_WINDOW_MS:
            cmd += f" --window-ms {self.window_ms}"
        if self.strict:
            cmd += " --strict"
        return cmd


@dataclass(slots=True)
class RunResult:
    """What a run found."""

    config: RunConfig
    trace_hash: str
    failure: CheckFailedError | None
    coverage: Counter[str]
    entries: int = 0
    acked: int = 0
    faults: list[str] = field(default_factory=list)
    known: Counter[str] = field(default_factory=Counter)
    stopped: str | None = None
    recent: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every checker passed."""
        return self.failure is None

    def report(self) -> str:
        """Render the failure (if any) with the command that reproduces it."""
        if self.failure is None and self.stopped is not None:
            return f"seed {self.config.seed}: ok (stopped early at known bug {self.stopped})"
        if self.failure is None:
            return f"seed {self.config.seed}: ok"
        return (
            f"seed {self.config.seed}: FAILED checker {self.failure.checker}\n"
            f"  {self.failure.explanation}\n"
            f"  faults: {', '.join(self.faults) or 'none'}\n"
            f"  reproduce: {self.config.command()}"
        )


def run(config: RunConfig, *, echo: bool = False) -> RunResult:
    """Run one seed to quiescence and check it (see module docstring)."""
    trace = Trace(echo=echo)
    findings = Findings(strict=config.strict)
    world = World(
        config.seed,
        config.mounts,
        config.steps,
        config.faults,
        config.window_ms,
        trace,
        findings,
    )
    failure: CheckFailedError | None = None
    stopped: str | None = None
    try:
        world.run()
        final_checks(world)
    except CheckFailedError as exc:
        failure = exc
    except RunStoppedError as exc:
        stopped = exc.bug_id
        trace.record(world.now_ms, "stopped", detail=exc.bug_id)
    except Exception as exc:
        failure = CheckFailedError("crash", _crash_explanation(exc))
    if failure is not None:
        trace.record(world.now_ms, "failure", detail=failure.checker)
    return RunResult(
        config=config,
        trace_hash=trace.hexdigest(),
        failure=failure,
        coverage=world.coverage,
        entries=len(world.sequencer.entries),
        acked=world.acked,
        faults=world.plan.enabled(),
        known=findings.counts,
        stopped=stopped,
        recent=list(trace.recent),
    )


def _crash_explanation(exc: Exception) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}{where}: {exc}"


def final_checks(world: World) -> None:
    """Liveness, convergence, replay, materialization and snapshot round trip at quiescence.

    Each change of the repo is checked: its mounts, its oracle and a replay of its log
    from its base.

    Raises:
        CheckFailedError: a check failed.
    """
    sequencer = world.sequencer
    for mount in world.mounts:
        replica = mount.replica
        last = sequencer.last_seq_of(mount.change)
        if (
            replica is None
            or replica.seq != last
            or replica.waiting
            or mount.in_flight
            or mount.switch is not None
        ):
            state = (
                "down" if replica is None else f"at seq {replica.seq}, {replica.waiting} buffered"
            )
            waiting = ", waiting to switch" if mount.switch is not None else ""
            raise CheckFailedError(
                "liveness",
                f"after quiescence {mount.name} is {state}, {len(mount.in_flight)} appends in"
                f" flight{waiting}; the log of change {mount.change} ends at seq {last}",
            )
        change = world.changes[mount.change]
        change.prefix.observe(mount.author, last, replica.state.tree.hash())
        restored = decode_snapshot(encode_snapshot(replica.state))
        if restored.tree.hash() != change.oracle.tree.hash():
            raise CheckFailedError(
                "snapshot-round-trip",
                f"{mount.name}'s snapshot at seq {last} restores another tree",
            )
    for change in world.changes:
        last = sequencer.last_seq_of(change.index)
        final = change.oracle.tree.hash()
        change.prefix.observe("oracle", last, final)
        replayed = checkers.replay_from_scratch(
            sequencer.log(change.index),
            world.window_ms,
            change.prefix,
            change.base(world.window_ms),
        )
        if replayed != final:
            raise CheckFailedError(
                "b:replay-equals-live",
                f"change {change.index}: replay ends at {replayed[:16]}, live at {final[:16]}",
            )
        checkers.check_materialization(
            f"oracle of change {change.index}", change.oracle.tree, world.blobs.bytes_of
        )


@dataclass(slots=True)
class SweepResult:
    """A sweep's totals."""

    runs: int = 0
    failures: list[RunResult] = field(default_factory=list)
    coverage: Counter[str] = field(default_factory=coverage.new)
    known: Counter[str] = field(default_factory=Counter)
    entries: int = 0
    acked: int = 0
    elapsed_s: float = 0.0

    @property
    def seeds_per_s(self) -> float:
        """Throughput of the sweep."""
        return self.runs / self.elapsed_s if self.elapsed_s else 0.0


def sweep(configs: Iterable[RunConfig], *, jobs: int = 1) -> SweepResult:
    """Run every config (in ``jobs`` worker processes); collect failures and sum coverage."""
    out = SweepResult()
    started = time.perf_counter()
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = list(pool.map(run, configs, chunksize=4))
    else:
        results = [run(config) for config in configs]
    for result in results:
        out.runs += 1
        out.entries += result.entries
        out.acked += result.acked
        out.coverage.update(result.coverage)
        out.known.update(result.known)
        if not result.ok:
            out.failures.append(result)
    out.elapsed_s = time.perf_counter() - started
    return out


def git_commit() -> str:
    """Return the checked-out commit (with ``+dirty`` for local changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "engine", "simulations"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")
