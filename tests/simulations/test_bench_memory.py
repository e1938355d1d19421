"""The memory benchmark: its sizes, its table, and one real run at tiny sizes."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from simulations.bench.memory import Case, human, parse_size, parse_sizes, table

ROOT = Path(__file__).resolve().parents[2]


def test_sizes_parse_with_1024_based_units() -> None:
    assert parse_sizes("10M,100M,1G") == [10 << 20, 100 << 20, 1 << 30]
    assert parse_size("64k") == 64 << 10
    assert parse_size("3MiB") == 3 << 20
    assert parse_size("1000") == 1000
    for bad in ("", "0", "-1M", "1T", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
    assert [human(s) for s in (10 << 20, 1 << 30, 1000, 1536)] == [
        "10 MiB",
        "1 GiB",
        "1,000 B",
        "1,536 B",
    ]


def test_the_table_puts_each_peak_beside_the_baseline() -> None:
    mib = 1024  # in kB
    case = Case(
        10 << 20,
        baseline={"peak_kb": 40 * mib, "idle_kb": 30 * mib},
        write={"write_kb": 44 * mib, "peak_kb": 50 * mib, "write_s": 0.5},
        read={"peak_kb": 42 * mib, "read_s": 0.25},
    )
    text = table([case])
    row = next(line for line in text.splitlines() if line.startswith("| 10 MiB"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells == [
        "10 MiB",
        "40.0 MiB",
        "44.0 MiB (1.10x)",
        "42.0 MiB (1.05x)",
        "50.0 MiB (1.25x)",
        "+100%",
        "0.50 s / 0.25 s",
    ]
    assert "baseline" in text.splitlines()[2]


@pytest.mark.integration
def test_a_tiny_run_prints_a_row_per_size() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "simulations", "bench", "memory", "--sizes", "100K,2M"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| file | baseline")
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["100 KiB", "2 MiB"]
    for row in rows[1:]:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1].endswith("MiB")
        assert all(cell.endswith("x)") for cell in cells[2:5])


def test_help_names_the_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "simulations", "bench", "memory", "-h"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m simulations bench memory")
    assert "--sizes" in out.stdout
