"""Engine bugs the simulator found that are not fixed yet, and how runs count them.

A checker that recognizes a violation as one of `KNOWN_BUGS` reports it here
instead of failing the run: the run goes on (so a known bug cannot hide an unknown
one later in the same seed) and the count is printed with the run and the sweep.
``--strict`` turns every known bug back into a failure. Each known bug has a
pinned seed in tests/simulations/test_regressions.py, marked
``xfail(strict=True)``: when the engine is fixed, that test passes, fails as an
unexpected pass, and the entry here must be deleted. Never add an entry to make a
sweep green without a written bug report (docs/simulations.md, "Bugs found").
"""

from __future__ import annotations

from collections import Counter

from simulations.failure import CheckFailedError

#: Bug id -> one-line description (the full report is in docs/simulations.md).
#: None open: the last one, ``spilled-writeback`` (bug 5), is fixed.
KNOWN_BUGS: dict[str, str] = {}

#: Known bugs after which a run cannot usefully go on (it stops, without failing).
STOPPING: frozenset[str] = frozenset()


class RunStoppedError(Exception):
    """Raised to end a run early at a known bug in `STOPPING` (not a failure)."""

    def __init__(self, bug_id: str) -> None:
        self.bug_id = bug_id
        super().__init__(bug_id)


class Findings:
    """Collects known-bug hits of a run; raises for them in strict mode."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.counts: Counter[str] = Counter()

    def known(self, bug_id: str, checker: str, explanation: str) -> None:
        """Record a hit of known bug ``bug_id``; in strict mode, fail the run.

        Raises:
            CheckFailedError: in strict mode.
            RunStoppedError: the bug is one after which the run cannot go on (`STOPPING`).
        """
        assert bug_id in KNOWN_BUGS, f"unknown bug id {bug_id!r}"
        if self.strict:
            raise CheckFailedError(checker, f"{explanation} [known bug {bug_id}]")
        self.counts[bug_id] += 1
        if bug_id in STOPPING:
            raise RunStoppedError(bug_id)
