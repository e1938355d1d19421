"""Fault plans: which faults a run injects, and how often (swarm testing).

A profile names how a plan is chosen from the run's seed:

- ``none``: a perfect network (1 ms, in order), no crashes, no failures.
- ``all``: every fault enabled at moderate rates.
- ``swarm`` (the default): each fault is enabled with probability 1/2 and gets a
  random rate, so each seed explores a different corner (Groce et al., "Swarm
  Testing"; FoundationDB's BUGGIFY activates each fault point per run).

The plan is drawn from the run's one RNG before anything else, so a seed fixes it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

PROFILES = ("swarm", "all", "none")

FAULT_NAMES = (
    "delay",
    "reorder",
    "duplicate",
    "crash",
    "partition",
    "clock_jump",
    "append_fail",
    "slow_retry",
    "interleave",
    "drop",
    "redeliver",
)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Rates of every fault; a rate of 0 means the fault is off.

    Attributes:
        latency_ms_max: the largest network delay of a message (1 means none).
        spike_rate: share of messages delayed by a spike of up to 3 s.
        reorder: whether messages to one mount may overtake each other.
        duplicate_rate: share of deliveries sent twice.
        crash_rate: chance per step that a mount crashes (restarted later).
        partition_rate: chance per step that a mount is cut off for a while.
        clock_jump_rate: chance per step that the sequencer's clock jumps.
        append_fail_rate: share of appends that fail (before or after being stored).
        slow_retry_rate: share of failed appends retried only after the dedupe window.
        interleave_rate: share of appends preceded by other changes' entries.
        drop_rate: share of deliveries lost on the way to a mount; its subscription
            notices the stall and re-subscribes from its last folded sequence.
        redeliver_rate: share of deliveries after which the server delivers again an
            older entry of the change that the mount has already folded.
    """

    latency_ms_max: int = 1
    spike_rate: float = 0.0
    reorder: bool = False
    duplicate_rate: float = 0.0
    crash_rate: float = 0.0
    partition_rate: float = 0.0
    clock_jump_rate: float = 0.0
    append_fail_rate: float = 0.0
    slow_retry_rate: float = 0.0
    interleave_rate: float = 0.0
    drop_rate: float = 0.0
    redeliver_rate: float = 0.0

    @staticmethod
    def choose(profile: str, rng: random.Random) -> FaultPlan:
        """Return the plan ``profile`` picks with ``rng`` (see module docstring)."""
        if profile not in PROFILES:
            raise ValueError(f"unknown fault profile {profile!r} (one of {', '.join(PROFILES)})")
        if profile == "none":
            return FaultPlan()
        if profile == "all":
            return FaultPlan(
                latency_ms_max=80,
                spike_rate=0.02,
                reorder=True,
                duplicate_rate=0.05,
                crash_rate=0.01,
                partition_rate=0.01,
                clock_jump_rate=0.005,
                append_fail_rate=0.05,
                slow_retry_rate=0.2,
                interleave_rate=0.2,
                drop_rate=0.02,
                redeliver_rate=0.02,
            )
        on = {name: rng.random() < 0.5 for name in FAULT_NAMES}
        delay = on["delay"]
        return FaultPlan(
            latency_ms_max=rng.randint(20, 300) if delay else rng.randint(1, 5),
            spike_rate=rng.uniform(0.0, 0.05) if delay else 0.0,
            reorder=on["reorder"],
            duplicate_rate=rng.uniform(0.01, 0.2) if on["duplicate"] else 0.0,
            crash_rate=rng.uniform(0.005, 0.03) if on["crash"] else 0.0,
            partition_rate=rng.uniform(0.005, 0.03) if on["partition"] else 0.0,
            clock_jump_rate=rng.uniform(0.002, 0.02) if on["clock_jump"] else 0.0,
            append_fail_rate=rng.uniform(0.02, 0.2) if on["append_fail"] else 0.0,
            slow_retry_rate=rng.uniform(0.1, 0.5) if on["slow_retry"] else 0.0,
            interleave_rate=rng.uniform(0.1, 0.5) if on["interleave"] else 0.0,
            drop_rate=rng.uniform(0.005, 0.05) if on["drop"] else 0.0,
            redeliver_rate=rng.uniform(0.005, 0.05) if on["redeliver"] else 0.0,
        )

    def enabled(self) -> list[str]:
        """Return the names of the faults this plan injects."""
        out: list[str] = []
        if self.latency_ms_max > 5 or self.spike_rate:
            out.append("delay")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("latency_ms_max", "spike_rate") or not value:
                continue
            out.append(f.name.removesuffix("_rate"))
        return out
