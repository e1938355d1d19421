"""Peak memory of large files through the SDK, each beside a baseline from the same run.

``python -m simulations bench memory [--sizes 10M,100M,1G]`` starts a private embedded
server (`mesa.server`, the default config: loopback, JetStream, fsync on every write)
and, for each size, runs three fresh child processes, one after the other:

- **baseline**: mounts the repo (`Mesa.fs.mount`: the same imports, connection and
  pump as the others), makes the file's bytes (``os.urandom``: incompressible, the
  worst case for zstd) and holds them, drops them, makes and holds them again: what a
  program that has the file's bytes in hand pays anyway.
- **write**: mounts, makes the same number of bytes, ``fs.write``s them, drops them and
  unmounts; then mounts again (nothing cached), ``fs.read``s the file back and checks
  its sha256. It reports its peak after the write and at the end.
- **read**: a fresh process that mounts and ``fs.read``s the file the write child
  wrote, and checks its sha256.

Each figure is the child's peak resident set (``VmHWM`` of ``/proc/self/status``); the
nats-server is another process and is not counted. The table gives each mesafs peak
beside the baseline's peak, their ratio (mesafs / baseline; 1.00x is the ideal) and
what mesafs adds above the baseline as a fraction of the file's size. Nothing here
asserts a target: it prints the table.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesa import Mesa, server

ORG = "bench"
DEFAULT_SIZES = "10M,100M,1G"
CHILD_TIMEOUT_S = 1800.0
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """Parse ``10M``-style sizes (K, M, G are 1024-based); plain digits are bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:I?B)?\s*", text.upper())
    if match is None or int(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a size such as 10M or 1G, not {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_sizes(text: str) -> list[int]:
    """Parse a comma-separated list of sizes."""
    return [parse_size(part) for part in text.split(",") if part.strip()]


def human(size: int) -> str:
    """``10 MiB``-style, exact when possible."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size:,} B"


# -- the child --------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


async def _child(role: str, repo: str, size: int) -> dict[str, Any]:
    """One child's peaks (see the module docstring)."""
    mesa = Mesa(ORG, os.environ["MESA_API_KEY"])
    path = f"/{ORG}/{repo}/file.bin"
    result: dict[str, Any] = {"role": role, "size": size}
    if role in ("baseline", "write"):
        async with mesa.fs.mount(repos=[repo]) as fs:
            gc.collect()
            result["idle_kb"] = _status_kb("VmRSS")
            data = os.urandom(size)
            digest = hashlib.sha256(data).hexdigest()
            if role == "write":
                start = time.perf_counter()
                await fs.write(path, data)
                result["write_s"] = time.perf_counter() - start
            del data
        del fs  # the closed mount (and the blob cache holding small files) goes
        gc.collect()
        result["write_kb"] = _status_kb("VmHWM")
    # A fresh mount: nothing of the file is cached, the read goes to the server.
    async with mesa.fs.mount(repos=[repo]) as fs:
        if role == "read":
            gc.collect()
            result["idle_kb"] = _status_kb("VmRSS")
        start = time.perf_counter()
        if role == "baseline":
            back = os.urandom(size)
            digest = hashlib.sha256(back).hexdigest()
        else:
            back = await fs.read(path)
            result["read_s"] = time.perf_counter() - start
            if role == "read":
                digest = hashlib.sha256(back).hexdigest()
                result["digest"] = digest
        ok = hashlib.sha256(back).hexdigest() == digest and len(back) == size
        del back
    result["peak_kb"] = _status_kb("VmHWM")
    if not ok:
        raise RuntimeError(f"{path} read back different bytes")
    return result


# -- the parent -------------------------------------------------------------------------


@dataclass
class Case:
    """One size: the figures of its three children."""

    size: int
    baseline: dict[str, Any]
    write: dict[str, Any]
    read: dict[str, Any]


def _run_child(env: dict[str, str], role: str, repo: str, size: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "simulations.bench.memory", "child", role, repo, str(size)],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the {role} child of {human(size)} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def _create_repo(key: str, repo: str) -> None:
    await Mesa(ORG, key).repos.create(repo)


def run(sizes: list[int]) -> list[Case]:
    """Measure every size against a private server; return the cases in order."""
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="mesa-bench-memory-") as home:
        info = server.ensure_running(Path(home))
        env = {
            **os.environ,
            "MESA_NATS_URL": info.authenticated_url,
            "MESA_API_KEY": info.admin_key,
        }
        saved = {name: os.environ.get(name) for name in ("MESA_NATS_URL", "MESA_API_KEY")}
        os.environ.update({k: env[k] for k in saved})
        try:
            for size in sizes:
                repo = f"mem-{secrets.token_hex(3)}"
                asyncio.run(_create_repo(info.admin_key, repo))
                baseline = _run_child(env, "baseline", repo, size)
                write = _run_child(env, "write", repo, size)
                read = _run_child(env, "read", repo, size)
                cases.append(Case(size, baseline, write, read))
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            server.stop(Path(home))
    return cases


def _mb(kb: int) -> str:
    return f"{kb / 1024:,.1f} MiB"


def table(cases: list[Case]) -> str:
    """Render the cases as a Markdown table: each mesafs peak beside the baseline's."""
    lines = [
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
        f"Python {sys.version.split()[0]}; embedded nats-server (fsync always), not counted",
        "",
        "| file | baseline: hold the bytes | mesafs: fs.write | fs.read (fresh process) "
        "| fs.write then fs.read | most above baseline / file size | write / read time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in cases:
        base = case.baseline["peak_kb"]
        peaks = (case.write["write_kb"], case.read["peak_kb"], case.write["peak_kb"])
        cells = " | ".join(f"{_mb(peak)} ({peak / base:.2f}x)" for peak in peaks)
        extra = (max(peaks) - base) * 1024 / case.size
        lines.append(
            f"| {human(case.size)} | {_mb(base)} | {cells} | {extra:+.0%} "
            f"| {case.write['write_s']:.2f} s / {case.read['read_s']:.2f} s |"
        )
    idle = ", ".join(_mb(c.baseline["idle_kb"]) for c in cases)
    lines += [
        "",
        "Ratios are mesafs peak / baseline peak. Resident set of the baseline once mounted,"
        f" before any file: {idle}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m simulations bench memory`` and its child role."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations bench memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "role",
        nargs="?",
        default="bench",
        choices=["bench", "child"],
        help="bench (the default) runs the benchmark; child is one of its processes",
    )
    parser.add_argument("child", nargs="*", help="child role: baseline|write|read REPO SIZE")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=parse_sizes(DEFAULT_SIZES),
        help=f"comma-separated file sizes, K/M/G 1024-based (default {DEFAULT_SIZES})",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.role == "child":
        role, repo, size = args.child
        if role not in ("baseline", "write", "read"):
            parser.error(f"unknown child role {role!r}")
        print(json.dumps(asyncio.run(_child(role, repo, int(size)))), flush=True)
        return 0
    cases = run(args.sizes)
    print(table(cases))
    if args.json:
        args.json.write_text(json.dumps([c.__dict__ for c in cases], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
