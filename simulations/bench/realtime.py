"""Live benchmark of the realtime path, each figure beside its bare-NATS baseline.

``python -m simulations bench realtime`` starts a private embedded server (the same
config as the default: loopback, JetStream, fsync on every write) and measures, in one
run on one machine:

(a) write-to-visible latency: a mount in process A writes; a subscription handler in
    process B is called and reads the new bytes. Baseline: bare nats-py JetStream
    publish (acked) in process A to an ordered-consumer callback in process B.
(b) acknowledged small-file writes per second from one mount with C concurrent writers.
    Baseline: C concurrent bare nats-py JetStream publishes with acks, and nats-py's
    ``publish_async`` pipeline.
(c) cold mount of a change with long history, with and without a snapshot, at two
    history lengths over the same tree (flatness), plus fold throughput.
(d) connect and mount: a new client connects and mounts a repo (reads one file), the way
    a sandboxed agent starts: presenting its token through the auth callout (the
    default) beside a trusted client (NATS credentials, no callout). Baseline: a bare
    nats-py connect and one JetStream request.

mesafs clients present tokens (the embedded default's auth callout enforces them, as in
production); the bare baselines connect with the service's own NATS login, which
bypasses the callout: raw NATS with nothing of mesa in the way.

Latency is taken with ``time.monotonic_ns``, which is one clock for every process on a
Linux host. Nothing here asserts a target: it prints the table and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from engine.codec import encode_entry
from engine.content import Content
from engine.ops import Entry, Write
from mesa import Mesa, WatchEvent, server
from mesa.instruments import folded_state, raw_transport, store_snapshot
from transports.auth import Keyring
from transports.base import LogId
from transports.jetstream import JetStreamTransport

ORG = "bench"
WARMUP = 50


@dataclass
class Env:
    """Where the benchmark's private server is and how to reach it."""

    url: str
    key: str
    bare_url: str

    def child_env(self) -> dict[str, str]:
        """The environment of a child process: this server and key."""
        return {
            **os.environ,
            "MESA_NATS_URL": self.url,
            "MESA_API_KEY": self.key,
            "BENCH_BARE_URL": self.bare_url,
        }


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] / 1e6

    return {"n": n, "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": ordered[-1] / 1e6}


# -- (a) latency -----------------------------------------------------------------------


async def _spawn(env: Env, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulations.bench.realtime",
        *args,
        stdout=asyncio.subprocess.PIPE,
        env=env.child_env(),
    )


async def _expect_line(proc: asyncio.subprocess.Process, what: str) -> str:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if not line:
        raise RuntimeError(f"the subscriber process exited before {what}")
    return line.decode().strip()


async def latency_mesa(env: Env, count: int) -> list[int]:
    """Write in this process, receive in a subscriber process; return percentiles."""
    mesa = Mesa(ORG, env.key)
    repo = f"lat-{secrets.token_hex(3)}"
    await mesa.repos.create(repo)
    proc = await _spawn(env, "sub-mesa", repo, str(count + WARMUP))
    await _expect_line(proc, "ready")
    async with mesa.fs.mount(repos=[repo]) as fs:
        for i in range(count + WARMUP):
            await fs.write(f"/{ORG}/{repo}/f{i % 16}", str(time.monotonic_ns()).encode())
        samples = json.loads(await _expect_line(proc, "samples"))
    await proc.wait()
    return list(samples[WARMUP:])


async def _sub_mesa(repo: str, count: int) -> None:
    mesa = Mesa(ORG, os.environ["MESA_API_KEY"])
    samples: list[int] = []
    done = asyncio.Event()
    async with mesa.fs.mount(repos=[repo]) as fs:

        async def on_change(event: WatchEvent) -> None:
            sent_ns = int(await fs.read(event.path))
            samples.append(time.monotonic_ns() - sent_ns)
            if len(samples) >= count:
                done.set()

        fs.subscribe(on_change)
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), 600)
    print(json.dumps(samples), flush=True)


async def latency_bare(env: Env, count: int) -> list[int]:
    """Bare nats-py: acked JetStream publish here, ordered-consumer callback there."""
    subject = f"benchbare.{secrets.token_hex(3)}"
    nc = await nats.connect(env.bare_url)
    js = nc.jetstream()
    await js.add_stream(name=subject.replace(".", "_").upper(), subjects=[subject])
    proc = await _spawn(env, "sub-bare", subject, str(count + WARMUP))
    await _expect_line(proc, "ready")
    for _ in range(count + WARMUP):
        await js.publish(subject, str(time.monotonic_ns()).encode())
    samples = json.loads(await _expect_line(proc, "samples"))
    await proc.wait()
    await nc.close()
    return list(samples[WARMUP:])


async def _sub_bare(subject: str, count: int) -> None:
    nc = await nats.connect(os.environ["BENCH_BARE_URL"])
    js = nc.jetstream()
    samples: list[int] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        samples.append(time.monotonic_ns() - int(msg.data))
        if len(samples) >= count:
            done.set()

    await js.subscribe(subject, cb=on_msg, ordered_consumer=True)
    print("ready", flush=True)
    await asyncio.wait_for(done.wait(), 600)
    print(json.dumps(samples), flush=True)
    await nc.close()


# -- (b) throughput ----------------------------------------------------------------------


async def _run_concurrently(
    total: int, concurrency: int, op: Callable[[int], Awaitable[None]]
) -> float:
    """Run ``op(i)`` for i < total with ``concurrency`` workers; return ops per second."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def throughput_mesa(env: Env, total: int, concurrency: int) -> float:
    """Acknowledged 100-byte file writes per second from one mount."""
    mesa = Mesa(ORG, env.key)
    repo = f"tput-{secrets.token_hex(3)}"
    await mesa.repos.create(repo)
    payload = b"x" * 100
    async with mesa.fs.mount(repos=[repo]) as fs:

        async def write(i: int) -> None:
            await fs.write(f"/{ORG}/{repo}/f{i}", payload)

        await _run_concurrently(WARMUP, concurrency, write)
        return await _run_concurrently(total, concurrency, write)


async def throughput_bare(env: Env, total: int, concurrency: int) -> tuple[float, float]:
    """Acked bare publishes per second: C concurrent ``publish`` calls, and ``publish_async``."""
    subject = f"benchtput.{secrets.token_hex(3)}"
    nc = await nats.connect(env.bare_url)
    js = nc.jetstream()
    await js.add_stream(name=subject.replace(".", "_").upper(), subjects=[subject])
    payload = b"x" * 160  # about the size of an encoded 100-byte write entry

    async def publish(_: int) -> None:
        await js.publish(subject, payload)

    concurrent = await _run_concurrently(total, concurrency, publish)
    pipelined = float("nan")
    if hasattr(js, "publish_async"):
        start = time.perf_counter()
        futures = [await js.publish_async(subject, payload) for _ in range(total)]
        await asyncio.gather(*futures)
        pipelined = total / (time.perf_counter() - start)
    await nc.close()
    return concurrent, pipelined


# -- (d) connect and mount -------------------------------------------------------------------


async def connect_and_mount(env: Env, rounds: int) -> dict[str, dict[str, float]]:
    """Time a fresh connection and mount, three ways, in alternating rounds (module doc)."""
    mesa = Mesa(ORG, env.key)
    repo = f"connect-{secrets.token_hex(3)}"
    await mesa.repos.create(repo)
    async with mesa.fs.mount(repos=[repo]) as fs:
        await fs.write(f"/{ORG}/{repo}/f.txt", b"hello")

    async def bare() -> None:
        nc = await nats.connect(env.bare_url)
        await nc.jetstream().account_info()
        await nc.close()

    async def sdk(url: str, *, tokens: bool) -> None:
        transport = await JetStreamTransport.connect(
            [url], keyring=Keyring(), present_tokens=tokens
        )
        try:
            client = Mesa(ORG, env.key, transport=transport)
            async with client.fs.mount(repos=[repo]) as mounted:
                assert await mounted.read(f"/{ORG}/{repo}/f.txt") == b"hello"
        finally:
            await transport.aclose()

    kinds: dict[str, Callable[[], Awaitable[None]]] = {
        "bare": bare,
        "trusted": lambda: sdk(env.bare_url, tokens=False),
        "callout": lambda: sdk(env.url, tokens=True),
    }
    samples: dict[str, list[int]] = {name: [] for name in kinds}
    for index in range(rounds + 3):
        for name, run_one in kinds.items():
            start = time.monotonic_ns()
            await run_one()
            if index >= 3:  # warm-up rounds
                samples[name].append(time.monotonic_ns() - start)
    return {name: _percentiles(values) for name, values in samples.items()}


# -- (c) cold mount ---------------------------------------------------------------------------


async def _fill_log(mesa: Mesa, repo: str, entries: int, files: int) -> None:
    """Append ``entries`` write entries over ``files`` paths, as one author would."""
    transport, token = raw_transport(mesa)
    change = (await mesa.bookmarks.get(repo, "main")).change_id
    log = LogId(ORG, repo, change)
    author = "bench" + secrets.token_hex(4)
    batch: list[Awaitable[Any]] = []
    for i in range(entries):
        op = Write((f"d{i % files // 100}", f"f{i % files}"), Content.of(b"v%d\n" % i))
        payload = encode_entry(Entry(op, author, i + 1, seen=0))
        batch.append(transport.append(token, log, payload, msg_id=f"{author}.{i + 1}"))
        if len(batch) == 500:
            await asyncio.gather(*batch)
            batch = []
    await asyncio.gather(*batch)


async def _time_mount(mesa: Mesa, repo: str) -> tuple[float, int]:
    start = time.perf_counter()
    async with mesa.fs.mount(repos=[repo]) as fs:
        elapsed = time.perf_counter() - start
        folded = folded_state(fs, repo).entries
    return elapsed, folded


async def cold_mount(env: Env, entries: int, files: int) -> dict[str, float]:
    """Cold mount times without and with a snapshot, for one history length."""
    mesa = Mesa(ORG, env.key, snapshot_every=None)
    repo = f"cold-{secrets.token_hex(3)}"
    await mesa.repos.create(repo)
    await _fill_log(mesa, repo, entries, files)
    without, folded = await _time_mount(mesa, repo)
    assert folded == entries, (folded, entries)
    async with mesa.fs.mount(repos=[repo]) as fs:
        snapshot_bytes = await store_snapshot(fs, repo)
    with_snapshot, _ = await _time_mount(mesa, repo)
    return {
        "entries": entries,
        "files": files,
        "without_s": without,
        "with_s": with_snapshot,
        "fold_entries_per_s": entries / without,
        "snapshot_bytes": snapshot_bytes,
    }


# -- the run ---------------------------------------------------------------------------------


async def _alternate(
    rounds: int,
    count: int,
    first: Callable[[int], Awaitable[list[int]]],
    second: Callable[[int], Awaitable[list[int]]],
) -> tuple[list[int], list[int]]:
    """Run two latency measurements in alternating rounds, so drift hits both alike."""
    a: list[int] = []
    b: list[int] = []
    for _ in range(rounds):
        a.extend(await first(count // rounds))
        b.extend(await second(count // rounds))
    return a, b


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement against private servers; return the results."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mesa-bench-") as home:
        info = server.ensure_running(Path(home))
        env = Env(info.url, info.admin_key, info.authenticated_url)
        os.environ["MESA_NATS_URL"] = env.url
        try:
            results["connect"] = await connect_and_mount(env, args.connect_rounds)
            bare, mesa = await _alternate(
                args.rounds,
                args.writes,
                lambda n: latency_bare(env, n),
                lambda n: latency_mesa(env, n),
            )
            results["latency_bare"] = _percentiles(bare)
            results["latency_mesa"] = _percentiles(mesa)
            bare_c, bare_async = await throughput_bare(env, args.tput_writes, args.concurrency)
            results["tput_bare_concurrent"] = bare_c
            results["tput_bare_publish_async"] = bare_async
            results["tput_mesa"] = await throughput_mesa(env, args.tput_writes, args.concurrency)
        finally:
            server.stop(Path(home))
    # Cold mounts read a long log; filling 100k entries on a server that fsyncs every
    # write would take minutes and reading does not depend on it, so (c) runs on a
    # server with JetStream's default sync interval.
    with tempfile.TemporaryDirectory(prefix="mesa-bench-cold-") as home:
        info = server.ensure_running(Path(home), sync_always=False)
        env = Env(info.url, info.admin_key, info.authenticated_url)
        os.environ["MESA_NATS_URL"] = env.url
        try:
            sizes = (args.cold_entries // 10, args.cold_entries)
            results["cold"] = [await cold_mount(env, n, args.cold_files) for n in sizes]
        finally:
            server.stop(Path(home))
    return results


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    """Render the results as a Markdown table with ratios against the baselines."""
    lb, lm = results["latency_bare"], results["latency_mesa"]
    tb, ta, tm = (
        results["tput_bare_concurrent"],
        results["tput_bare_publish_async"],
        results["tput_mesa"],
    )
    lines = [
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, nats-server "
        f"(embedded config: loopback, fsync always); writes={args.writes}, "
        f"concurrency={args.concurrency}",
        "",
        "| measure | mesafs | bare nats-py | ratio |",
        "|---|---|---|---|",
    ]
    lines.extend(
        f"| write-to-visible {q} | {lm[q]:.3f} | {lb[q]:.3f} | {lm[q] / lb[q]:.2f}x |"
        for q in ("p50_ms", "p99_ms", "max_ms")
    )
    lines.append(
        f"| acked writes/s (C={args.concurrency}) | {tm:,.0f} | {tb:,.0f} | {tm / tb:.0%} |"
    )
    lines.append(f"| acked writes/s vs publish_async | {tm:,.0f} | {ta:,.0f} | {tm / ta:.0%} |")
    cb = results["connect"]["bare"]
    for name, label in (("callout", "token, auth callout"), ("trusted", "trusted, no callout")):
        row = results["connect"][name]
        lines.extend(
            f"| connect + mount + read ({label}) {q} | {row[q]:.1f} | {cb[q]:.1f} (connect + "
            f"1 request) | {row[q] / cb[q]:.1f}x |"
            for q in ("p50_ms", "p99_ms")
        )
    tc, tt = results["connect"]["callout"]["p50_ms"], results["connect"]["trusted"]["p50_ms"]
    lines.append(
        f"| connect + mount p50, callout vs trusted | {tc:.1f} | {tt:.1f} | {tc / tt:.2f}x |"
    )
    lines.extend(
        f"| cold mount, {row['entries']:,} entries over {row['files']:,} files | "
        f"{row['with_s']:.3f} s with snapshot | {row['without_s']:.3f} s without | "
        f"fold {row['fold_entries_per_s']:,.0f} entries/s; snapshot {row['snapshot_bytes']:,} B |"
        for row in results["cold"]
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m simulations bench realtime`` and the child roles."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations bench realtime",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "role",
        nargs="?",
        default="bench",
        choices=["bench", "sub-mesa", "sub-bare"],
        help="bench (the default) runs the benchmark; the others are its child processes",
    )
    parser.add_argument("target", nargs="?", help="child roles: the repo or subject")
    parser.add_argument("count", nargs="?", type=int, help="child roles: samples to take")
    parser.add_argument("--writes", type=int, default=2000, help="(a) latency writes")
    parser.add_argument("--tput-writes", type=int, default=5000, help="(b) writes timed")
    parser.add_argument("--concurrency", type=int, default=64, help="(b) concurrent writers")
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternate bare and mesafs latency rounds"
    )
    parser.add_argument(
        "--cold-entries", type=int, default=100_000, help="(c) the longer history (and a tenth)"
    )
    parser.add_argument("--cold-files", type=int, default=1000, help="(c) files the history writes")
    parser.add_argument(
        "--connect-rounds", type=int, default=40, help="(d) connect-and-mount samples of each kind"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.role == "sub-mesa":
        asyncio.run(_sub_mesa(args.target, args.count))
        return 0
    if args.role == "sub-bare":
        asyncio.run(_sub_bare(args.target, args.count))
        return 0
    results = asyncio.run(run(args))
    print(report(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
