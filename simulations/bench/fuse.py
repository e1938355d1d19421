"""FUSE benchmark beside tmpfs, in the same run on the same machine.

``python -m simulations bench fuse [--tmpfs DIR] [--size-mb 100] [--tree DIR] [--json FILE]``

Starts an embedded nats-server under a temporary ``MESA_HOME`` (fsync on every write,
as the default deployment), creates a repo, runs ``mesa mount`` in its own process,
and measures on three roots in turn: a tmpfs directory, the FUSE floor
(`simulations.bench.fuse_floor`: a plain in-memory filesystem on the same pyfuse3 stack with the
same options and cache timeouts, in its own process) and the mount:

- a lookup round trip: ``lstat`` of names that do not exist, each once (on the mount
  every one is a request served by the FUSE process: the floor of uncached work);
- cached ``lstat``: ops/s over every entry of the extracted tree, after a warm pass;
- reads of one file of ``--size-mb`` MB: cached (page cache warm; best of 4),
  uncached (pages dropped with ``posix_fadvise(DONTNEED)``, so every read is a FUSE
  request served from the mount's memory; best of 3), and cold (a second, fresh
  mount: bytes fetched from the blob store); tmpfs has no uncached state, so its
  baseline is its cached read;
- ``tar -x`` of a large source tree (default: this Python's standard library,
  without site-packages and ``__pycache__``), and the time until an ``fsync`` after
  it returns (the mount publishes write-behind: that is when all of it is durable);
- ``git status`` on that tree once committed (the first run, and the median of 5).

Each figure is reported with its baselines and three cost factors: the floor over
tmpfs (what any filesystem served through FUSE from Python pays on this machine), the
mount over tmpfs (the figure the targets are set on) and the mount over the floor
(what mesafs itself adds). Targets (docs/fuse.md): cached stat and cached read within
1.5x of tmpfs, untar and ``git status`` within 3x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from simulations.bench.fuse_floor import build_native_null

ORG = "bench"
REPO = "bench"
MOUNT_TIMEOUT_S = 60.0
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@dataclass
class Row:
    """One measured figure on tmpfs, on the FUSE floor and on the mount, and its target."""

    metric: str
    unit: str
    tmpfs: float | None
    floor: float | None
    fuse: float
    target: float | None

    @property
    def higher_is_better(self) -> bool:
        """Rates (per second) are better higher; durations lower."""
        return self.unit.endswith("/s")

    def cost(self, over: float | None, base: float | None) -> float | None:
        """The cost of ``over`` in units of ``base``'s (1.0 = as fast)."""
        if not over or not base:
            return None
        return base / over if self.higher_is_better else over / base

    @property
    def slowdown(self) -> float | None:
        """The mount's cost over tmpfs's (1.0 = as fast as tmpfs)."""
        return self.cost(self.fuse, self.tmpfs)


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _is_tmpfs(path: Path) -> bool:
    real, best, kind = os.path.realpath(path), "", ""
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and len(point) > len(best):
                best, kind = point, fields[2]
    return kind == "tmpfs"


class FuseProcess:
    """A FUSE filesystem in its own process, mounted at ``mountpoint`` until `stop`."""

    def __init__(self, mountpoint: Path, argv: list[str], env: dict[str, str]) -> None:
        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        self.log = mountpoint.parent / f"{mountpoint.name}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + MOUNT_TIMEOUT_S
        while "mounted " not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv} failed:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.05)

    @property
    def root(self) -> Path:
        """Where the workloads run."""
        return self.mountpoint

    def stop(self) -> None:
        """Unmount and wait for the process."""
        subprocess.run(
            ["fusermount3", "-u", str(self.mountpoint)], capture_output=True, check=False
        )
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class MountProcess(FuseProcess):
    """``mesa mount`` in its own process (as an agent's sandbox would run it)."""

    def __init__(self, mountpoint: Path, env: dict[str, str]) -> None:
        argv = [sys.executable, "-m", "mesa", "mount", str(mountpoint), "--org", ORG]
        super().__init__(mountpoint, [*argv, "--repo", REPO], env)

    @property
    def root(self) -> Path:
        """The repo's directory in the mount."""
        return self.mountpoint / ORG / REPO


class NativeNullProcess(FuseProcess):
    """`fuse_floor.NATIVE_NULL_C`, built here: a FUSE round trip without Python."""

    def __init__(self, mountpoint: Path, program: Path) -> None:
        argv = [str(program), "-f", "-o", "default_permissions,fsname=mesa-null", str(mountpoint)]
        super().__init__(mountpoint, argv, dict(os.environ))


def native_round_trip(work: Path) -> float | None:
    """Lookup round trips per second on the C null filesystem, or None if it cannot build."""
    program, why = build_native_null(work)
    if program is None:
        _say(f"no native null filesystem: {why}")
        return None
    null = NativeNullProcess(work / "null", program)
    try:
        return miss_rate(null.root, fresh=None)
    finally:
        null.stop()


class FloorProcess(FuseProcess):
    """`simulations.bench.fuse_floor`: the same FUSE stack over a plain in-memory tree."""

    def __init__(self, mountpoint: Path, env: dict[str, str]) -> None:
        argv = [sys.executable, "-m", "simulations.bench.fuse_floor", str(mountpoint)]
        super().__init__(mountpoint, argv, env)


@contextlib.contextmanager
def deployment(work: Path) -> Iterator[dict[str, str]]:
    """An embedded server under ``work/home`` with the repo created; yields the env."""
    from mesa import server

    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESA_")}
    env["MESA_HOME"] = str(home)
    os.environ.pop("MESA_NATS_URL", None)
    os.environ["MESA_HOME"] = str(home)
    try:
        asyncio.run(_create_repo())
        yield env
    finally:
        server.stop(home)


async def _create_repo() -> None:
    from mesa import Mesa
    from mesa.instruments import raw_transport

    mesa = Mesa(org=ORG)
    await mesa.repos.create(REPO)
    transport, _ = raw_transport(mesa)
    aclose = getattr(transport, "aclose", None)
    if aclose is not None:
        await aclose()


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _run(argv: list[str], cwd: Path) -> None:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed in {cwd}:\n{result.stderr}")


def make_archive(tree: Path, archive: Path) -> int:
    """Tar ``tree`` (minus site-packages and __pycache__); return how many entries it has."""
    count = 0

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        nonlocal count
        if "site-packages" in info.name or "__pycache__" in info.name:
            return None
        count += 1
        return info

    with tarfile.open(archive, "w") as tar:
        tar.add(tree, arcname="tree", filter=keep)
    return count


def untar(archive: Path, dest: Path) -> tuple[float, float]:
    """Seconds ``tar -x`` takes into ``dest``, and until an fsync after it returns.

    On the mount the second figure is until everything tar did is durable in the
    log (publication is write-behind: an fsync waits for what was queued before it).
    """
    started = time.perf_counter()
    _run(["tar", "-x", "-f", str(archive)], dest)
    untarred = time.perf_counter() - started
    fd = os.open(dest / ".bench-fsync", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return untarred, time.perf_counter() - started


def miss_rate(root: Path, count: int = 3000, *, fresh: str | None = "miss-probe") -> float:
    """Return ``lstat`` calls per second on names that do not exist, each asked once.

    Every call is a lookup round trip into the filesystem (nothing is cached yet):
    on the mount, the floor under every uncached operation. The names are asked in a
    new directory ``fresh`` (in ``root`` itself with None).
    """
    probe = root
    if fresh is not None:
        probe = root / fresh
        probe.mkdir()
    started = time.perf_counter()
    for i in range(count):
        with contextlib.suppress(FileNotFoundError):
            os.lstat(probe / f"missing-{i}")
    return count / (time.perf_counter() - started)


def stat_rate(root: Path, min_seconds: float) -> float:
    """Count lstat calls per second over every entry under ``root``, after a warm pass."""
    paths = [os.path.join(d, n) for d, ds, fs in os.walk(root) for n in ds + fs]
    for path in paths:
        os.lstat(path)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < min_seconds:
        for path in paths:
            os.lstat(path)
        calls += len(paths)
    return calls / elapsed


def git_status(root: Path) -> tuple[float, float, float]:
    """(seconds to init+add+commit, first git status, median of 5 more)."""

    def commit() -> None:
        _run(["git", "init", "-q", "."], root)
        _run(["git", "add", "-A"], root)
        _run(["git", "commit", "-q", "-m", "tree"], root)

    setup = _timed(commit)
    first = _timed(lambda: _run(["git", "status", "--porcelain"], root))
    runs = [_timed(lambda: _run(["git", "status", "--porcelain"], root)) for _ in range(5)]
    return setup, first, statistics.median(runs)


def read_rate(path: Path, *, drop: bool) -> float:
    """MB/s of one sequential read of ``path`` (pages dropped first with ``drop``)."""
    buf = bytearray(1 << 20)
    fd = os.open(path, os.O_RDONLY)
    try:
        if drop:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        total, started = 0, time.perf_counter()
        while n := os.readv(fd, [buf]):
            total += n
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    return total / 1e6 / elapsed


def write_file(path: Path, data: bytes) -> float:
    """Seconds to write and close ``data`` (the mount publishes it on close)."""
    return _timed(lambda: path.write_bytes(data))


def measure(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[Row]:
    """Run every measurement on tmpfs, on the FUSE floor and on a mount; return the rows."""
    tmpfs = Path(tempfile.mkdtemp(prefix="mesa-bench-", dir=args.tmpfs))
    floor = FloorProcess(work / "floor", env)
    mount = MountProcess(work / "mnt", env)
    roots = (tmpfs, floor.root, mount.root)
    rows: list[Row] = []
    try:
        archive = work / "tree.tar"
        entries = make_archive(Path(args.tree), archive)
        _say(f"tree: {args.tree} ({entries} entries)")
        miss = [miss_rate(root) for root in roots]
        rows.append(_row("lookup round trip (lstat of a new missing name)", "ops/s", miss, None))
        native = native_round_trip(work)
        rows.append(
            Row(
                "the same, floor = C libfuse null filesystem",
                "ops/s",
                miss[0],
                native,
                miss[2],
                None,
            )
        )
        tar = [untar(archive, root) for root in roots]
        rows.append(_row(f"tar -x ({entries} entries)", "s", [t[0] for t in tar], 3.0))
        rows.append(_row("tar -x, then fsync (all durable)", "s", [t[1] for t in tar], None))
        stats = [stat_rate(root, args.seconds) for root in roots]
        rows.append(_row("cached lstat", "ops/s", stats, 1.5))
        git = [git_status(root / "tree") for root in roots]
        rows.append(_row("git init+add+commit (setup)", "s", [g[0] for g in git], None))
        rows.append(_row("git status (first)", "s", [g[1] for g in git], 3.0))
        rows.append(_row("git status (median of 5)", "s", [g[2] for g in git], 3.0))
        rows.extend(_reads(args, work, env, roots))
    finally:
        mount.stop()
        floor.stop()
        subprocess.run(["rm", "-rf", str(tmpfs)], check=False)
    return rows


def _reads(
    args: argparse.Namespace, work: Path, env: dict[str, str], roots: tuple[Path, ...]
) -> list[Row]:
    data = os.urandom(args.size_mb * 1_000_000)
    name = f"big-{args.size_mb}mb.bin"
    mb = len(data) / 1e6
    written = [write_file(root / name, data) for root in roots]
    rows = [_row(f"write+close {args.size_mb} MB", "s", written, None)]
    cached = [max(read_rate(root / name, drop=False) for _ in range(4)) for root in roots]
    rows.append(_row(f"cached read {args.size_mb} MB", "MB/s", cached, 1.5))
    uncached = [max(read_rate(root / name, drop=True) for _ in range(3)) for root in roots]
    rows.append(_row(f"uncached read {args.size_mb} MB", "MB/s", uncached, None))
    fresh = MountProcess(work / "mnt2", env)
    try:
        cold = read_rate(fresh.root / name, drop=False)
    finally:
        fresh.stop()
    rows.append(
        Row(f"cold read {args.size_mb} MB (new mount)", "MB/s", cached[0], None, cold, None)
    )
    _say(f"({mb:.0f} MB file)")
    return rows


def _row(metric: str, unit: str, values: list[float], target: float | None) -> Row:
    """A row from one figure per root of `measure` (tmpfs, floor, mount)."""
    tmpfs, floor, fuse = values
    return Row(metric, unit, tmpfs, floor, fuse, target)


def _figure(value: float | None, unit: str = "") -> str:
    """A value with its unit (three significant digits, no exponent), or a cost factor."""
    if value is None:
        return "-"
    if not unit:
        return f"{value:.2f}x"
    digits = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{digits} {unit}"


def table(rows: list[Row]) -> str:
    """Render the rows as a markdown table (costs: the left column's time over the right's)."""
    lines = [
        "| measurement | tmpfs | FUSE floor | mesafs FUSE "
        "| floor / tmpfs | mesafs / tmpfs | mesafs / floor | target (mesafs / tmpfs) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [
            row.metric,
            _figure(row.tmpfs, row.unit),
            _figure(row.floor, row.unit),
            _figure(row.fuse, row.unit),
            _figure(row.cost(row.floor, row.tmpfs)),
            _figure(row.slowdown),
            _figure(row.cost(row.fuse, row.floor)),
            "-" if row.target is None else f"<= {row.target}x",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations bench fuse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--tmpfs", default="/dev/shm", help="a directory on tmpfs")
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--tree", default=os.path.dirname(os.__file__), help="tree to untar")
    parser.add_argument("--seconds", type=float, default=2.0, help="per stat measurement")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if not _is_tmpfs(Path(args.tmpfs)):
        _say(f"{args.tmpfs} is not on tmpfs (pass --tmpfs)")
        return 2
    with tempfile.TemporaryDirectory(prefix="mesa-bench-") as tmp, deployment(Path(tmp)) as env:
        rows = measure(args, Path(tmp), env)
    _say(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
