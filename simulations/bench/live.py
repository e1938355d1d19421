"""Live mode: the simulation's kind of workload against JetStream with real processes.

``python -m simulations live --mounts 50 --duration 60`` starts a private embedded server
(loopback, JetStream, fsync on every write), creates one repo, and spreads ``--mounts``
SDK mounts of its main change over ``--procs`` worker processes. For ``--duration``
seconds every mount issues a random mix of every op (write, append, mkdir, mkdir -p,
rm -r, mv, cp -r, chmod, symlink, utimes, and reads) on a small shared path set, so
mounts collide constantly: same-file races inside the window, rm against write, mv of
directories other mounts write into. Ops the filesystem refuses (ENOENT, EEXIST ...)
are counted as rejected, not as failures. One mount writes a probe file every
``--probe-ms``; every other mount's subscription handler records how long the probe
took from ``fs.write`` to being readable there (write-to-visible under load).

At the end every mount stops, waits until it has folded the whole log, and reports its
folded sequence and tree hash; the run converged when all of them are equal. Printed:
ops/s (acknowledged), rejected ops, probe latency p50/p99/max, and convergence.
Nothing is asserted by a test: this is a load run.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mesa import Mesa, MesaFileSystem, WatchEvent, server
from mesa.instruments import folded_state

ORG = "live"
NAMES = ("a", "b", "c", "d")
PROBE = "probe"


def _path(rng: random.Random, root: str) -> str:
    depth = rng.choice((1, 1, 2, 2, 3))
    return root + "/" + "/".join(rng.choice(NAMES) for _ in range(depth))


async def _one_op(fs: MesaFileSystem, rng: random.Random, root: str, me: str) -> None:
    kind = rng.choices(
        [
            "write",
            "append",
            "read",
            "mkdir",
            "mkdirp",
            "rm",
            "mv",
            "cp",
            "chmod",
            "symlink",
            "utimes",
        ],
        weights=[30, 10, 15, 5, 8, 5, 6, 4, 3, 3, 3],
    )[0]
    p, q = _path(rng, root), _path(rng, root)
    data = f"{me} {time.monotonic_ns()}\n".encode()
    if kind == "write":
        await fs.write(p, data)
    elif kind == "append":
        await fs.append(p, data)
    elif kind == "read":
        await fs.read(p)
    elif kind == "mkdir":
        await fs.mkdir(p)
    elif kind == "mkdirp":
        await fs.mkdir(p, recursive=True)
    elif kind == "rm":
        await fs.rm(p, recursive=True, force=True)
    elif kind == "mv":
        await fs.mv(p, q)
    elif kind == "cp":
        await fs.cp(p, q, recursive=True)
    elif kind == "chmod":
        await fs.chmod(p, rng.choice((0o600, 0o644, 0o755)))
    elif kind == "symlink":
        await fs.symlink(rng.choice(NAMES), p)
    else:
        now_ms = int(time.time() * 1000)
        await fs.utimes(p, now_ms, now_ms - rng.randrange(10_000))


async def _mount_loop(
    mesa: Mesa, repo: str, index: int, deadline: float, probe_ms: int, out: dict[str, Any]
) -> None:
    root = f"/{ORG}/{repo}/w"
    rng = random.Random(f"{os.getpid()}-{index}")
    latencies: list[int] = []
    ops = rejected = 0
    async with mesa.fs.mount(repos=[repo]) as fs:
        probe_path = f"/{ORG}/{repo}/{PROBE}"

        async def on_change(event: WatchEvent) -> None:
            if event.path == probe_path and index != 0:
                sent_ns = int((await fs.read(probe_path)).split()[0])
                latencies.append(time.monotonic_ns() - sent_ns)

        fs.subscribe(on_change)
        await fs.mkdir(root, recursive=True)
        next_probe = time.time()
        while time.time() < deadline:  # wall clock: the deadline is shared by processes
            if index == 0 and time.time() >= next_probe:
                await fs.write(probe_path, f"{time.monotonic_ns()}\n".encode())
                next_probe += probe_ms / 1000
            try:
                await _one_op(fs, rng, root, f"m{os.getpid()}-{index}")
                ops += 1
            except OSError as exc:
                if exc.errno in (errno.EROFS, errno.EBADF, errno.EIO):
                    raise
                rejected += 1
        await asyncio.sleep(1.0)  # let the last entries of every mount reach the log
        await fs.wait_synced()
        state = folded_state(fs, repo)
        out[str(index)] = {
            "ops": ops,
            "rejected": rejected,
            "latencies_ns": latencies,
            "seq": state.seq,
            "hash": state.tree_hash,
        }


async def _worker(repo: str, first: int, count: int, deadline: float, probe_ms: int) -> None:
    mesa = Mesa(ORG, os.environ["MESA_API_KEY"])
    out: dict[str, Any] = {}
    await asyncio.gather(
        *(_mount_loop(mesa, repo, first + i, deadline, probe_ms, out) for i in range(count))
    )
    print(json.dumps(out), flush=True)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mesa-live-") as home:
        info = server.ensure_running(Path(home))
        env = {
            **os.environ,
            "MESA_NATS_URL": info.authenticated_url,
            "MESA_API_KEY": info.admin_key,
        }
        os.environ.update(env)
        try:
            mesa = Mesa(ORG, info.admin_key)
            repo = f"live-{secrets.token_hex(3)}"
            await mesa.repos.create(repo)
            per = [
                args.mounts // args.procs + (i < args.mounts % args.procs)
                for i in range(args.procs)
            ]
            deadline = time.time() + 5 + args.duration  # wall clock: every process shares it
            procs = []
            first = 0
            for count in per:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "simulations.bench.live",
                        "--worker",
                        repo,
                        str(first),
                        str(count),
                        str(deadline),
                        str(args.probe_ms),
                        stdout=asyncio.subprocess.PIPE,
                        env=env,
                    )
                )
                first += count
            merged: dict[str, Any] = {}
            for proc in procs:
                stdout, _ = await proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeError(f"a worker process failed with exit code {proc.returncode}")
                merged.update(json.loads(stdout.decode().strip().splitlines()[-1]))
        finally:
            server.stop(Path(home))
    return merged


def _report(merged: dict[str, Any], args: argparse.Namespace) -> tuple[str, bool]:
    ops = sum(m["ops"] for m in merged.values())
    rejected = sum(m["rejected"] for m in merged.values())
    lat = sorted(x for m in merged.values() for x in m["latencies_ns"])
    states = {(m["seq"], m["hash"]) for m in merged.values()}
    converged = len(states) == 1 and len(merged) == args.mounts

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else float("nan")

    lines = [
        f"live: {args.mounts} mounts in {args.procs} processes, {args.duration} s, "
        f"{os.cpu_count()} cores, embedded server (fsync always)",
        f"  completed ops (acknowledged mutations and reads): {ops:,} "
        f"({ops / args.duration:,.0f} ops/s); rejected by the filesystem (ENOENT, "
        f"EEXIST...): {rejected:,}",
        f"  write-to-visible (probe, {len(lat):,} samples): p50 {pct(0.5):.2f} ms, "
        f"p99 {pct(0.99):.2f} ms, max {pct(1.0):.2f} ms",
        f"  convergence: {'all mounts hold the same tree' if converged else 'DIVERGED'} "
        f"({len(states)} distinct (seq, tree hash) among {len(merged)} mounts)",
    ]
    return "\n".join(lines), converged


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m simulations live`` (and of its worker processes)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        repo, first, count, deadline, probe_ms = argv[1:6]
        asyncio.run(_worker(repo, int(first), int(count), float(deadline), int(probe_ms)))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m simulations live",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mounts", type=int, default=50)
    parser.add_argument("--duration", type=int, default=60, help="seconds of load")
    parser.add_argument("--procs", type=int, default=5, help="worker processes")
    parser.add_argument("--probe-ms", type=int, default=200)
    args = parser.parse_args(argv)
    if args.mounts < 2 or args.procs < 1 or args.procs > args.mounts or args.duration < 1:
        parser.error("need --mounts >= 2, 1 <= --procs <= --mounts, --duration >= 1")
    text, converged = _report(asyncio.run(_run(args)), args)
    print(text)
    return 0 if converged else 1


if __name__ == "__main__":
    sys.exit(main())
