"""Shared test configuration: Hypothesis profiles.

``ci`` is derandomized (the same examples on every run, so a red CI run is
reproducible) and prints the blob to replay a failure; ``dev`` explores fresh
examples each run. Neither has a deadline: timing is not what these tests check.
HYPOTHESIS_PROFILE picks one; otherwise ``ci`` when CI is set, else ``dev``.
Both derive from Hypothesis's "default" profile, not from whatever it picked for
the environment (it switches to its own "ci" profile when CI is set), so a
profile means the same thing everywhere.
"""

from __future__ import annotations

import os

from hypothesis import settings

_BASE = settings.get_profile("default")

settings.register_profile(
    "ci", _BASE, derandomize=True, print_blob=True, deadline=None, max_examples=200
)
settings.register_profile("dev", _BASE, deadline=None, max_examples=100)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if "CI" in os.environ else "dev")
)
