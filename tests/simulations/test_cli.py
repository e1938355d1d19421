"""``python -m simulations <command> -h`` works for every command.

Each form runs in a subprocess, as a user would type it: it must exit 0 and print a
usage line that names the command. ``live`` and ``bench NAME`` parse their own
options in their modules (simulations/bench/), so this also checks the dispatch
reaches them; ``sweep -h`` once crashed on a ``%`` in a help string.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = [
    (),
    ("run",),
    ("sweep",),
    ("live",),
    ("bench",),
    ("bench", "realtime"),
    ("bench", "fuse"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_exits_zero_and_names_the_command(command: tuple[str, ...]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "simulations", *command, "-h"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    usage = out.stdout.splitlines()[0]
    assert usage.startswith(" ".join(["usage: python -m simulations", *command])), usage


def test_top_level_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "simulations", "-h"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "{run,sweep,live,bench}" in out.stdout
