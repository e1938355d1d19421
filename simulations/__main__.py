"""Command line: ``python -m simulations run|sweep|live|bench``.

- ``run --seed S --mounts N --steps K --faults PROFILE`` runs one seed of the
  deterministic simulator and prints the seed, the git commit, the faults the seed
  enabled, the trace hash, the coverage, and on failure the checker, an explanation
  and the command that reproduces it. Exit status 1 on failure.
- ``sweep --seeds A..B`` runs seeds A (inclusive) to B (exclusive), optionally in
  parallel (``--jobs``), and prints every failure's reproducing command, the
  seeds per second and the summed coverage. Without ``--mounts``, each seed runs
  ``2 + seed % 7`` mounts (the printed command names the exact value).
- ``live --mounts N --duration S`` is the load run: the simulator's kind of workload
  against a private JetStream server with real processes (simulations/bench/live.py).
- ``bench realtime [options]`` is the realtime benchmark: write-to-visible latency,
  acknowledged writes/s and cold mounts beside bare nats-py
  (simulations/bench/realtime.py).
- ``bench fuse [options]`` is the FUSE benchmark: a real ``mesa mount`` beside tmpfs
  and the FUSE floor (simulations/bench/fuse.py; needs ``mesafs[fuse]``).
- ``bench memory [--sizes 10M,100M,1G]`` is the large-file memory benchmark: peak RSS
  of writing and reading a file through the SDK beside a child that only holds its
  bytes (simulations/bench/memory.py).
- ``bench web [--writes N]`` is the ``mesa web`` benchmark: an agent's write to the text
  in a headless browser's DOM beside a second SDK mount (simulations/bench/web.py; needs
  ``mesafs[web]`` and Debian's chromium).

``live`` and ``bench NAME`` hand the rest of the command line to their module
unchanged, so each parses its own options (``-h`` included) and its child roles.
``python -m simulations <command> -h`` describes every command.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from simulations import coverage
from simulations.faults import PROFILES
from simulations.known import KNOWN_BUGS
from simulations.runner import (
    DEFAULT_MOUNTS,
    DEFAULT_PROFILE,
    DEFAULT_STEPS,
    RunConfig,
    git_commit,
    run,
    sweep,
)

DEFAULT_WINDOW_MS = 1000


def parse_seeds(text: str) -> range:
    """Parse ``A..B`` (A inclusive, B exclusive) or a single seed ``A``."""
    try:
        if ".." in text:
            start, end = text.split("..", 1)
            return range(int(start), int(end))
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A..B or a seed, not {text!r}") from None
    return range(seed, seed + 1)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulations",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="run one seed")
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--mounts", type=int, default=DEFAULT_MOUNTS)
    one.add_argument("--trace", action="store_true", help="print every trace line")
    many = sub.add_parser("sweep", help="run a range of seeds")
    many.add_argument("--seeds", type=parse_seeds, required=True, help="A..B, B exclusive")
    # argparse %-formats help strings: a literal percent sign is written %%.
    many.add_argument("--mounts", type=int, default=None, help="default: 2 + seed %% 7")
    many.add_argument("--jobs", type=int, default=1, help="worker processes")
    # live and bench are dispatched before parsing (see main); these parsers only
    # describe them in -h and report a missing benchmark name.
    sub.add_parser("live", help="load run with real processes: live [options] (live -h for them)")
    bench = sub.add_parser(
        "bench", help="live benchmarks: bench realtime|fuse|memory|web [options]"
    )
    names = bench.add_subparsers(dest="name", required=True, metavar="{realtime,fuse,memory,web}")
    names.add_parser("realtime", help="latency, writes/s and cold mounts beside bare NATS")
    names.add_parser("fuse", help="a FUSE mount beside tmpfs and the FUSE floor")
    names.add_parser("memory", help="peak RSS of large files beside holding their bytes")
    names.add_parser("web", help="agent write to the page's DOM beside a second SDK mount")
    for p in (one, many):
        p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
        p.add_argument("--faults", choices=PROFILES, default=DEFAULT_PROFILE)
        p.add_argument("--window-ms", type=int, default=DEFAULT_WINDOW_MS)
        p.add_argument("--strict", action="store_true", help="known engine bugs fail the run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # These parse their own options (and their child roles), -h included.
    if argv[:1] == ["live"]:
        from simulations.bench import live

        return live.main(argv[1:])
    if argv[:2] == ["bench", "realtime"]:
        from simulations.bench import realtime

        return realtime.main(argv[2:])
    if argv[:2] == ["bench", "fuse"]:
        from simulations.bench import fuse

        return fuse.main(argv[2:])
    if argv[:2] == ["bench", "memory"]:
        from simulations.bench import memory

        return memory.main(argv[2:])
    if argv[:2] == ["bench", "web"]:
        from simulations.bench import web

        return web.main(argv[2:])
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    return _sweep(args)


def _run(args: argparse.Namespace) -> int:
    config = RunConfig(
        args.seed, args.mounts, args.steps, args.faults, args.window_ms, strict=args.strict
    )
    result = run(config, echo=args.trace)
    print(f"seed:       {config.seed}")
    print(f"commit:     {git_commit()}")
    print(f"command:    {config.command()}")
    print(f"faults:     {', '.join(result.faults) or 'none'}")
    print(f"entries:    {result.entries} logged, {result.acked} acknowledged")
    print(f"trace hash: {result.trace_hash}")
    print("coverage:")
    print(coverage.render(result.coverage))
    _print_known(result.known)
    if result.failure is not None:
        print("last trace lines:")
        for line in result.recent[-15:]:
            print(f"  {line}")
    print(result.report())
    return 0 if result.ok else 1


def sweep_configs(args: argparse.Namespace) -> list[RunConfig]:
    """The configs a sweep runs, one per seed."""
    return [
        RunConfig(
            seed,
            args.mounts if args.mounts is not None else 2 + seed % 7,
            args.steps,
            args.faults,
            args.window_ms,
            strict=args.strict,
        )
        for seed in args.seeds
    ]


def _sweep(args: argparse.Namespace) -> int:
    print(f"commit: {git_commit()}  seeds: {args.seeds.start}..{args.seeds.stop}")
    out = sweep(sweep_configs(args), jobs=args.jobs)
    for failed in sorted(out.failures, key=lambda r: r.config.seed):
        print(failed.report())
    print(
        f"{out.runs} seeds, {len(out.failures)} failed, {out.entries} entries,"
        f" {out.acked} acknowledged, {out.elapsed_s:.1f} s ({out.seeds_per_s:.1f} seeds/s)"
    )
    print("coverage:")
    print(coverage.render(out.coverage))
    _print_known(out.known)
    never = coverage.missing(out.coverage)
    if never:
        print(f"never reached: {', '.join(never)}")
    return 1 if out.failures or never else 0


def _print_known(counts: Counter[str]) -> None:
    for bug_id in sorted(counts):
        print(f"known bug {bug_id}: {counts[bug_id]} hits ({KNOWN_BUGS[bug_id]})")


if __name__ == "__main__":
    sys.exit(main())
