"""FUSE torture test (issue 12): real tools on three mounts of one repo, a server restart
and a SIGKILLed mount, then nothing lost, nothing torn, every mount the same tree.

How it runs (`run_torture`):

1. A real nats-server (fsync always), a repo with a wide race window, three ``mesa
   mount`` processes of it (m1, m2, m3).
2. Worker processes (tests/fuse/torture.py), each on one mount, run a seeded script of
   real tools: atomic saves racing on ``shared/s*.txt``, ``cat ... > file``, ``cat ...
   >>`` on a private file and on ``shared/log.txt`` (racing), ``tar -x`` and ``cp -a``
   into the repo root and a subdirectory, ``git add/commit``, ``truncate -s`` shrink and
   extend, renames of open files. Every write is a batch of records carrying an id
   unique to it; each worker journals the writes it completed (from ``close`` on m1
   and m2, from ``fsync`` on m3, the mount that is killed).
3. Midway the server is stopped, left down for a moment and started again on the same
   port and store; later m3 is SIGKILLed, cleared with ``mesa unmount`` and mounted
   again at the same place while its workers keep going.
4. At the end: (a) the three mounts converge to one tree (bounded wait), then each
   ``mesa unmount`` exits 0 and a fresh mount shows that same tree; (b) every write a
   worker recorded is in the final tree (a conflict side counts) or in a version the
   log holds at its path (or where a rename took it); (c) no file of the final tree and
   no version in the log is torn (a record cut short, a batch partly present, NULs where
   no tool wrote any); (d) ``git fsck`` and ``git status`` pass in every worker's git
   repository on the fresh mount and every recorded commit is in HEAD's history; (e)
   every private file holds what its writer last wrote; (f) no worker read back a torn
   file or missed its own write, and no operation failed outside the server-restart
   and mount-kill windows; (g) no file grew far beyond the bytes written to it.

   What a local filesystem does too is not a failure: two workers appending to
   ``shared/log.txt`` through one mount may publish each other's append halfway (a
   close publishes the shared buffer), and two ``cmd > shared/out.txt`` at once on one
   mount may cut each other (O_TRUNC) or leave NULs; through *different* mounts, or
   for a worker alone on its mount, neither is allowed.

Every failure names the write (id, op, worker, mount), what was expected and what was
found, and the seed. ``MESA_TORTURE_SEED`` replays a seed (every worker's script and
bytes; the interleaving is the machine's); ``MESA_TORTURE_WEIGHTS=append_shared:3,
peek:1`` runs only some operations; ``MESA_TORTURE_DEBUG=1`` runs the mounts with
``--debug``. Logs and journals stay in the test's tmp dir: ``m*.log`` (the killed one
``m3.killed.log``), ``w*.jsonl``, ``log.json`` (the whole log, writes base64).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fuse import torture
from tests.fuse.fuseutil import ORG, FuseMount, create_repos, is_mounted
from tests.integration.conftest import ROOT, Deployment
from tests.integration.natsutil import NatsServer, start_nats

REPO = "app"
#: How long after a disturbance ends an operation may still fail (retries, reconnects).
GRACE_S = 5.0
CONVERGE_S = 60.0
#: A file may hold at most this many times the bytes written to it, plus the slack
#: (conflict markers and sides, saves that carry the file's previous bytes).
GROWTH_FACTOR = 8
GROWTH_SLACK = 200_000


@dataclass(frozen=True)
class Size:
    """One configuration of the run."""

    name: str
    #: workers per mount; the last mount is the one SIGKILLed and remounted
    workers: tuple[int, ...]
    ops: int
    large_every: int
    large_bytes: int
    #: restart the server once this fraction of all operations has started
    restart_at: float
    #: kill the last mount once its workers started this fraction of their operations
    kill_at: float
    down_s: float
    race_window_ms: int
    worker_timeout_s: float
    shared_files: int = 2


SHORT = Size(
    "short",
    workers=(2, 1, 1),
    ops=250,
    large_every=14,
    large_bytes=150_000,
    restart_at=0.3,
    kill_at=0.55,
    down_s=1.5,
    race_window_ms=3000,
    worker_timeout_s=150.0,
)
LONG = Size(
    "long",
    workers=(3, 2, 2),
    ops=600,
    large_every=10,
    large_bytes=1_500_000,
    restart_at=0.35,
    kill_at=0.6,
    down_s=2.0,
    race_window_ms=3000,
    worker_timeout_s=900.0,
    shared_files=3,
)


@dataclass
class Window:
    """A disturbance: [start, end] in time.time(); ``mount`` None affects every mount."""

    what: str
    start: float
    end: float = float("inf")
    mount: str | None = None

    def covers(self, mount: str, t0: float, t1: float) -> bool:
        return (
            (self.mount is None or self.mount == mount)
            and t0 <= self.end + GRACE_S
            and t1 >= self.start
        )


@dataclass
class Run:
    """The state of one torture run, and the failures it found."""

    tmp: Path
    size: Size
    seed: int
    server: NatsServer
    deployment: Deployment
    mounts: dict[str, FuseMount] = field(default_factory=dict)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    configs: dict[str, torture.WorkerConfig] = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def fail(self, message: str) -> None:
        self.failures.append(message)

    def at(self, t: float) -> str:
        return f"t+{t - self.started:.1f}s"

    def mount_args(self) -> tuple[str, ...]:
        return ("--debug",) if os.environ.get("MESA_TORTURE_DEBUG") else ()

    def mesa_unmount(self, mount: FuseMount, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesa", "unmount", str(mount.mountpoint), *extra],
            cwd=ROOT,
            env=self.deployment.env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def _seed() -> int:
    value = os.environ.get("MESA_TORTURE_SEED")
    return int(value) if value else random.SystemRandom().randrange(1, 2**31)


def run_torture(tmp: Path, size: Size) -> None:
    seed = _seed()
    print(f"torture {size.name}: seed {seed} (MESA_TORTURE_SEED={seed} replays it); files in {tmp}")
    server = start_nats(tmp, sync_always=True)
    deployment = Deployment([server.url])
    run = Run(tmp, size, seed, server, deployment)
    try:
        create_repos(deployment, REPO, race_window_ms=size.race_window_ms)
        for i in range(len(size.workers)):
            name = f"m{i + 1}"
            run.mounts[name] = FuseMount.start(tmp / name, deployment, (REPO,), *run.mount_args())
        _start_workers(run)
        _drive(run)
        trees = _converge(run)
        _unmount_all(run)
        final = _fresh_mount_checks(run, trees)
        entries = torture.dump_log(deployment.env(), ROOT, tmp / "log.json", ORG, REPO)
        _check_journals(run, final, entries)
    finally:
        for proc in run.workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for mount in run.mounts.values():
            mount.stop()
        server.kill()
    print("timeline: " + "; ".join(run.notes))
    if run.failures:
        shown = run.failures[:40]
        more = len(run.failures) - len(shown)
        head = (
            f"FUSE torture ({size.name}) found {len(run.failures)} problem(s); seed {seed} "
            f"(MESA_TORTURE_SEED={seed}); mounts' logs and journals in {tmp}\n"
            f"timeline: {'; '.join(run.notes)}\n"
        )
        pytest.fail(
            head + "\n".join(f"- {f}" for f in shown) + (f"\n... and {more} more" if more else "")
        )


# -- the run -----------------------------------------------------------------------


def _start_workers(run: Run) -> None:
    size, tmp = run.size, run.tmp
    names = list(run.mounts)
    on_mount = [names[m] for m, count in enumerate(size.workers) for _ in range(count)]
    wid = 0
    for m_index, count in enumerate(size.workers):
        mount_name = names[m_index]
        for _ in range(count):
            scratch = tmp / f"scratch-w{wid}"
            scratch.mkdir()
            cfg = torture.WorkerConfig(
                wid=wid,
                mount=mount_name,
                root=str(run.mounts[mount_name].repo),
                seed=run.seed * 1000 + wid,
                ops=size.ops,
                crashy=m_index == len(size.workers) - 1,
                journal=str(tmp / f"w{wid}.jsonl"),
                scratch=str(scratch),
                epoch_file=str(tmp / f"epoch-{mount_name}"),
                shared_files=size.shared_files,
                large_every=size.large_every,
                large_bytes=size.large_bytes,
                alone=count == 1,
                remote_workers=[f"w{i}" for i, m in enumerate(on_mount) if m != mount_name],
            )
            config_path = tmp / f"w{wid}.json"
            config_path.write_text(torture.config_json(cfg))
            with open(tmp / f"w{wid}.out", "wb") as out:
                run.workers[f"w{wid}"] = subprocess.Popen(
                    [sys.executable, "-m", "tests.fuse.torture", "worker", str(config_path)],
                    cwd=ROOT,
                    env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            run.configs[f"w{wid}"] = cfg
            wid += 1


def _drive(run: Run) -> None:
    """Wait for the workers, restarting the server and killing the last mount on the way."""
    size = run.size
    victim = list(run.mounts)[-1]
    victims = [w for w, c in run.configs.items() if c.mount == victim]
    total = size.ops * len(run.configs)
    restarted = killed = False
    deadline = time.monotonic() + size.worker_timeout_s
    while any(p.poll() is None for p in run.workers.values()):
        done = {w: torture.progress(Path(c.journal)) for w, c in run.configs.items()}
        if not restarted and sum(done.values()) >= size.restart_at * total:
            restarted = True
            _restart_server(run)
        if restarted and not killed and min(done[w] for w in victims) >= size.kill_at * size.ops:
            killed = True
            _kill_and_remount(run, victim)
        if time.monotonic() > deadline:
            for w, proc in run.workers.items():
                if proc.poll() is None:
                    last = [
                        e
                        for e in torture.read_journal(Path(run.configs[w].journal))
                        if e["kind"] == "op"
                    ]
                    doing = last[-1] if last else {}
                    run.fail(
                        f"worker {w} on {run.configs[w].mount} still running after "
                        f"{size.worker_timeout_s}s, in op #{doing.get('index')} {doing.get('op')} "
                        f"(started {run.at(doing.get('t', run.started))}); killed"
                    )
                    proc.kill()
            break
        time.sleep(0.1)
    for w, proc in run.workers.items():
        proc.wait(10)
        if proc.returncode != 0:
            out = (run.tmp / f"{w}.out").read_text(errors="replace")[-3000:]
            run.fail(f"worker {w} exited {proc.returncode}:\n{out}")
    if not restarted:
        run.fail("the workers finished before the server restart: the run checked no restart")
    if not killed:
        run.fail(f"the workers of {victim} finished before it was killed: no kill was checked")


def _restart_server(run: Run) -> None:
    window = Window("server restart", time.time())
    run.windows.append(window)
    run.server.stop()
    time.sleep(run.size.down_s)
    run.server.start()
    window.end = time.time()
    run.notes.append(f"server stopped {run.at(window.start)}, up again {run.at(window.end)}")


def _kill_and_remount(run: Run, name: str) -> None:
    mount = run.mounts[name]
    window = Window(f"SIGKILL of {name}", time.time(), mount=name)
    run.windows.append(window)
    epoch = Path(run.configs[next(w for w, c in run.configs.items() if c.mount == name)].epoch_file)
    epoch.write_text("killed")  # before the kill: an fsync returning after it is not trusted
    mount.proc.kill()
    mount.proc.wait(10)
    mount.stopped = True
    # Workers keep running: clearing the dead mount may be EBUSY while one holds it.
    for _ in range(20):
        result = run.mesa_unmount(mount)
        if result.returncode == 0 or not is_mounted(mount.mountpoint):
            break
        time.sleep(0.25)
    else:
        run.fail(
            f"mesa unmount of the SIGKILLed {name} kept failing "
            f"({result.returncode}: {result.stderr.strip()}); used --lazy"
        )
        run.mesa_unmount(mount, "--lazy")
    shutil.move(mount.log_path, mount.log_path.with_name(f"{name}.killed.log"))
    run.mounts[name] = FuseMount.start(mount.mountpoint, run.deployment, (REPO,), *run.mount_args())
    window.end = time.time()
    run.notes.append(f"{name} SIGKILLed {run.at(window.start)}, remounted {run.at(window.end)}")


def _converge(run: Run) -> dict[str, dict[str, bytes | None]]:
    """(a) Wait until every mount shows the same tree; return each mount's last walk."""
    deadline = time.monotonic() + CONVERGE_S
    trees: dict[str, dict[str, bytes | None]] = {}
    errors: dict[str, str] = {}
    while True:
        trees.clear()
        errors.clear()
        for name, mount in run.mounts.items():
            try:
                trees[name] = torture.walk(mount.repo)
            except OSError as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
        values = list(trees.values())
        if not errors and all(t == values[0] for t in values):
            run.notes.append(f"mounts converged {run.at(time.time())}")
            return trees
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    for name, error in errors.items():
        run.fail(
            f"(a) mount {name} could not be walked {CONVERGE_S}s after the workers ended: {error}"
        )
    names = list(trees)
    for other in names[1:]:
        diff = torture.tree_diff(trees[names[0]], trees[other])
        if diff:
            run.fail(
                f"(a) mounts {names[0]} and {other} still differ {CONVERGE_S}s after the workers "
                f"ended ({names[0]} vs {other}):\n    " + "\n    ".join(diff)
            )
    return trees


def _unmount_all(run: Run) -> None:
    for name, mount in run.mounts.items():
        result = run.mesa_unmount(mount)
        if result.returncode != 0:
            run.fail(
                f"mesa unmount of {name} exited {result.returncode} (expected 0, its queue "
                f"drained): {result.stderr.strip()[-1500:]}"
            )
        mount.stop()


def _fresh_mount_checks(
    run: Run, trees: dict[str, dict[str, bytes | None]]
) -> dict[str, bytes | None]:
    """Walk a fresh mount (the final tree), compare it, and check git there (d)."""
    fresh = FuseMount.start(run.tmp / "fresh", run.deployment, (REPO,), *run.mount_args())
    run.mounts["fresh"] = fresh
    unreadable: dict[str, str] = {}
    final = torture.walk(fresh.repo, unreadable)
    for rel, error in sorted(unreadable.items())[:10]:
        run.fail(f"(a) reading {rel} on a fresh mount failed: {error} (see fresh.log)")
    for name, tree in trees.items():
        diff = torture.tree_diff(tree, final)
        if diff:
            run.fail(
                f"(a) a fresh mount after the unmounts differs from what {name} showed "
                f"({name} vs fresh):\n    " + "\n    ".join(diff)
            )
            break
    commits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cfg in run.configs.values():
        for e in torture.read_journal(Path(cfg.journal)):
            if e["kind"] == "commit":
                commits[e["repo"]].append(e)
    for rel in sorted(r for r in final if r.startswith("g-w") and "/" not in r):
        repo = fresh.repo / rel

        def git(*argv: str, repo: Path = repo) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["git", *argv],
                cwd=repo,
                capture_output=True,
                text=True,
                env={**os.environ, **torture.GIT_ENV},
                timeout=300,
                check=False,
            )

        for argv in (("fsck", "--full"), ("status", "--porcelain")):
            result = git(*argv)
            if result.returncode != 0:
                run.fail(
                    f"(d) git {' '.join(argv)} in {rel} on a fresh mount exited "
                    f"{result.returncode}: {result.stderr.strip()[-1500:]}"
                )
        for c in commits.get(rel, []):
            result = git("merge-base", "--is-ancestor", c["sha"], "HEAD")
            if result.returncode != 0:
                run.fail(
                    f"(d) commit {c['sha'][:12]} ({c['id']}) that {c['w']} made through "
                    f"{c['mount']} at {run.at(c['t'])} (recorded after "
                    f"{'fsync' if c['fsynced'] else 'git exited 0'}) is not in the history "
                    f"of HEAD of {rel}: {result.stderr.strip()}"
                )
    for rel in commits:
        if rel not in final:
            run.fail(
                f"(d) git repository {rel} with recorded commits is missing from the final tree"
            )
    result = run.mesa_unmount(fresh)
    if result.returncode != 0:
        run.fail(
            f"mesa unmount of the fresh mount exited {result.returncode}: {result.stderr.strip()}"
        )
    fresh.stop()
    return final


def _check_journals(
    run: Run, final: dict[str, bytes | None], entries: list[torture.LogEntry]
) -> None:
    """(b) nothing lost, (c) nothing torn, (e) private files, (f) the workers' own findings."""
    in_final: dict[str, set[str]] = defaultdict(set)
    for rel, data in final.items():
        if data is None or torture.is_git_internal(rel):
            continue
        parsed = torture.parse(data, torture.nuls_allowed(rel))
        for wid in parsed.whole():
            in_final[wid].add(rel)
        problems = parsed.problems()
        if problems:
            run.fail(
                f"(c) torn file in the final tree: {rel} ({torture.describe(data)}): "
                + "; ".join(problems)
            )
    in_log: dict[str, list[torture.LogEntry]] = defaultdict(list)
    mounts = _author_mounts(run, entries)
    crowded = {c.mount for c in run.configs.values() if not c.alone}

    def shares_mount(wid: str) -> bool:
        return run.configs[wid.split("-", 1)[0]].mount in crowded

    excused = 0
    reported: dict[str, set[str]] = defaultdict(set)
    repeats: dict[str, list[int]] = defaultdict(list)
    for v in entries:
        if v.data is None:
            continue
        parsed = torture.parse(v.data, torture.nuls_allowed(v.path))
        for wid in parsed.whole():
            in_log[wid].append(v)
        problems = parsed.problems()
        if problems and v.path in torture.IN_PLACE_SHARED:
            # Two writers of this file on one mount: a close of one publishes the other's
            # write halfway, as a local filesystem's page cache would (and two `cmd >
            # out.txt` at once leave NULs where one truncated under the other).
            loose = v.path == "shared/out.txt" and mounts.get(v.author, "?") in crowded
            left = parsed.problems(skip=shares_mount, garbage=not loose)
            excused += len(left) < len(problems)
            problems = left
        # A torn version is reported once; the versions that inherit it are counted.
        keys = {torture.OFFSET.sub("", p) for p in problems}
        new = [p for p in problems if torture.OFFSET.sub("", p) not in reported[v.path]]
        if problems and not new:
            repeats[v.path].append(v.seq)
        if new:
            reported[v.path] |= keys
            run.fail(
                f"(c) torn version in the log: seq {v.seq}, {v.op} of {v.path} by "
                f"{mounts.get(v.author, 'an unknown mount')} (mount id {v.author[:12]}, seen "
                f"{v.seen}; {torture.describe(v.data)}): " + "; ".join(new)
            )
    for path, seqs in repeats.items():
        run.fail(
            f"(c) {len(seqs)} later version(s) of {path} carry those torn bytes on "
            f"(seq {seqs[0]}..{seqs[-1]})"
        )
    _check_growth(run, final, entries)
    run.notes.append(
        f"log: {len(entries)} entries, {sum(v.op == 'write' for v in entries)} writes "
        f"({excused} of them in-place shared files caught halfway by another writer on the "
        f"same mount); final tree: {sum(v is not None for v in final.values())} files"
    )
    acked = excused_writes = 0
    conflicted = sum(
        1 for v in final.values() if v is not None and torture.parse(v, True).conflicted
    )
    anomalies: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    overlapped = _overlapping_in_place_writes(run) | _superseded_closes(run)
    for w, cfg in run.configs.items():
        journal = torture.read_journal(Path(cfg.journal))
        op_start = {e["index"]: e["t"] for e in journal if e["kind"] == "op"}
        for e in journal:
            kind = e["kind"]
            if kind == "write":
                acked += 1
                if not _check_write(run, e, in_final, in_log, entries, final, overlapped):
                    excused_writes += 1
            elif kind == "anomaly":
                anomalies[(w, e["what"], e["path"])].append(e)
            elif kind == "error":
                t0 = op_start.get(e["index"], e["t"])
                if not any(win.covers(e["mount"], t0, e["t"]) for win in run.windows):
                    run.fail(
                        f"(f) {w} on {e['mount']}: op #{e['index']} {e['op']} failed at "
                        f"{run.at(e['t'])} (started {run.at(t0)}), outside every restart/kill "
                        f"window: {e['error']}"
                    )
            elif kind == "crash":
                run.fail(f"worker {w} crashed:\n{e['error']}")
            elif kind == "model":
                _check_model(run, w, cfg, e, final)
        if not any(e["kind"] == "done" for e in journal):
            run.fail(f"worker {w} on {cfg.mount} did not finish its script")
    for (w, what, path), seen in anomalies.items():
        seen = [x for x in seen if not _caught_halfway_on_its_mount(run, x, crowded)]
        if not seen:
            continue
        e = seen[0]
        again = f" (and {len(seen) - 1} more times, last at {run.at(seen[-1]['t'])})"
        run.fail(
            f"(f) {w} on {e['mount']} at {run.at(e['t'])}, op #{e['index']}: {what} of {path}: "
            f"expected {e.get('expected', 'a valid file')}, found {e['found']}"
            + (again if len(seen) > 1 else "")
        )
    run.notes.append(
        f"{acked} writes recorded ({excused_writes} `cmd > shared/out.txt` overwritten by "
        f"another `>` of it on the same mount while they ran); {conflicted} files "
        f"conflicted at the end"
    )


def _check_growth(
    run: Run, final: dict[str, bytes | None], entries: list[torture.LogEntry]
) -> None:
    """(g) No file grows far beyond what was written to it (conflicts nesting in conflicts)."""
    written: dict[str, int] = defaultdict(int)
    for cfg in run.configs.values():
        for e in torture.read_journal(Path(cfg.journal)):
            if e["kind"] == "write":
                written[e["path"]] += e["size"]
    biggest: dict[str, torture.LogEntry] = {}
    for v in entries:
        if v.data is not None and len(v.data) > len(getattr(biggest.get(v.path), "data", b"")):
            biggest[v.path] = v
    for path, total in sorted(written.items()):
        bound = GROWTH_FACTOR * total + GROWTH_SLACK
        top = biggest.get(path)
        now = final.get(path)
        if top is not None and top.data is not None and len(top.data) > bound:
            run.fail(
                f"(g) {path} grew to {len(top.data)} bytes (seq {top.seq}; "
                f"{top.data.count(b'<<<<<<<')} conflict start markers) although the writes "
                f"recorded to it total {total} bytes; the final tree holds "
                f"{torture.describe(now)}"
            )


def _author_mounts(run: Run, entries: list[torture.LogEntry]) -> dict[str, str]:
    """Map log authors (mount ids) to mount names, told apart by the private files they wrote.

    The SIGKILLed mount has two ids (before and after the remount).
    """
    mount_of = {f"w{c.wid}": c.mount for c in run.configs.values()}
    out: dict[str, str] = {}
    for e in entries:
        top = e.path.split("/", 1)[0]
        if top in mount_of:
            out.setdefault(e.author, mount_of[top])
    return out


def _check_write(
    run: Run,
    e: dict[str, Any],
    in_final: dict[str, set[str]],
    in_log: dict[str, list[torture.LogEntry]],
    entries: list[torture.LogEntry],
    final: dict[str, bytes | None],
    overlapped: set[str],
) -> bool:
    """Check one recorded write; False if it was lost in a way a local filesystem loses it."""
    wid = e["id"]
    how = "fsync" if e["fsynced"] else "close"
    what = (
        f"write {wid} ({e['op']}, {e['size']} bytes sha {e['sha']}) by {e['w']} through "
        f"{e['mount']} to {e['path']} at {run.at(e['t'])} (returned from {how})"
    )
    if wid in in_final:
        return True
    versions = in_log.get(wid, [])
    if not versions and wid in overlapped:
        # Another `cmd > file` of the same file on the same mount ran at the same time:
        # its O_TRUNC cut these bytes before this close (as on a local filesystem).
        return False
    if not versions:
        now = final.get(e["path"])
        history = [x for x in entries if x.path == e["path"] and x.data is not None]
        run.fail(
            f"(b) {what} is lost: in no file of the final tree and in no version the log "
            f"holds; {e['path']} now holds {torture.describe(now)}; the log has "
            f"{len(history)} version(s) of it"
            + (
                f", the last seq {history[-1].seq}: {torture.describe(history[-1].data)}"
                if history
                else ""
            )
        )
        return True
    allowed: set[str] = set()
    for p in [e["path"], *e["alt"]]:
        allowed |= torture.renamed_paths(entries, p)
    if not any(v.path in allowed for v in versions):
        run.fail(
            f"(b) {what} is in the log only at other paths: "
            + ", ".join(f"seq {v.seq} {v.path}" for v in versions[:5])
        )
    return True


def _caught_halfway_on_its_mount(run: Run, e: dict[str, Any], crowded: set[str]) -> bool:
    """Whether a torn read-back of an in-place shared file is a local filesystem's tear.

    Two writers appending to one file through one mount share its buffer, so a close
    by one publishes the other's append halfway (as a page cache would); another mount
    then reads that version. Excused only when every partly present write is by a
    worker on a mount with several writers and nothing else is wrong.
    """
    if e.get("what") != "torn read-back" or e.get("path") not in torture.IN_PLACE_SHARED:
        return False
    reasons = str(e.get("found", "")).split(": ", 1)[-1].split("; ")
    for reason in reasons:
        m = re.fullmatch(r"write (w\d+)-\d+ only partly present: .*", reason)
        if m is None or run.configs[m.group(1)].mount not in crowded:
            return False
    return True


def _superseded_closes(run: Run) -> set[str]:
    """Writes acknowledged by close only that a later close on the same mount replaced.

    The write-behind contract (docs/fuse.md): a close captures the file's bytes, and a
    later close of the same file on the same mount replaces a capture still queued, as a
    page cache written twice before writeback keeps only the last bytes. So a write
    that returned from close (not fsync) may be missing when the same mount wrote the
    same path again within ``SUPERSEDE_S``; the last one must be there.
    """
    writes: list[tuple[str, str, str, float, bool]] = []
    for cfg in run.configs.values():
        for e in torture.read_journal(Path(cfg.journal)):
            if e["kind"] == "write":
                writes.append((e["id"], cfg.mount, e["path"], e["t"], bool(e["fsynced"])))
    out = set()
    for wid, mount, path, t, fsynced in writes:
        if fsynced:
            continue
        if any(
            m == mount and p == path and t < u <= t + SUPERSEDE_S
            for other, m, p, u, _ in writes
            if other != wid
        ):
            out.add(wid)
    return out


#: How long after a close another close of the same file may replace its queued capture.
SUPERSEDE_S = 10.0


def _overlapping_in_place_writes(run: Run) -> set[str]:
    """``cmd > shared/out.txt`` writes that overlapped another one on the same mount.

    A write runs from its operation's start to the time it was recorded.
    """
    spans: list[tuple[str, str, str, float, float]] = []
    for w, cfg in run.configs.items():
        journal = torture.read_journal(Path(cfg.journal))
        start = {e["index"]: e["t"] for e in journal if e["kind"] == "op"}
        for e in journal:
            if e["kind"] == "write" and e["path"] == "shared/out.txt":
                spans.append((e["id"], w, cfg.mount, start.get(e["index"], e["t"]), e["t"]))
    out = set()
    for wid, w, mount, t0, t1 in spans:
        for _, w2, mount2, u0, u1 in spans:
            if w2 != w and mount2 == mount and u0 <= t1 and u1 >= t0:
                out.add(wid)
    return out


def _check_model(
    run: Run, w: str, cfg: torture.WorkerConfig, e: dict[str, Any], final: dict[str, bytes | None]
) -> None:
    for rel, expected in e["files"].items():
        data = final.get(rel)
        found = None if data is None else torture.sha(data)
        if found != expected:
            size = e["sizes"][rel]
            exp = "<absent>" if expected is None else f"{size} bytes sha {expected}"
            run.fail(
                f"(e) {rel}, written only by {w} through {cfg.mount}: expected what it last wrote "
                f"there ({exp}), the final tree holds {torture.describe(data)}"
            )


# -- the tests ----------------------------------------------------------------------


def test_torture_short(tmp_path: Path) -> None:
    run_torture(tmp_path, SHORT)


@pytest.mark.slow
def test_torture_long(tmp_path: Path) -> None:
    run_torture(tmp_path, LONG)
