"""The pieces of the FUSE torture test (tests/fuse/test_torture.py, issue 12).

- **Content.** Every write puts a *batch* of records in a file; one record is one line
  ``<id>:<k>/<n>:<len>:<payload>:<id>END\\n`` where ``<id>`` (``w<worker>-<counter>``)
  is unique to that write and ``k`` of ``n`` numbers the record in the batch. A file's
  bytes are valid when they are a sequence of whole records, bare newlines and jj
  conflict marker lines (docs/conflicts.md), NUL runs only where a tool legitimately
  leaves them (`nuls_allowed`), and every batch that shows up is whole (all ``n``
  records). A version cut short (a torn ``cmd > file``, a close publishing half of what
  was written, a write at the wrong offset) breaks one of these.
- **Workers** (``python -m tests.fuse.torture worker CONFIG``) each run a seeded script
  of real tools against one mount: atomic saves racing on shared files, ``cmd > file``
  and ``>>`` (private files, and shared ones from every mount at once), ``tar -x`` and
  ``cp -a`` into the repo root and a subdirectory, ``git add/commit``, ``truncate -s``
  shrink and extend, renames of files still open, reads of what the other mounts wrote.
  Each appends to its journal (JSON lines): an ``op`` line before each operation, a
  ``write`` line for each write it completed (``close``, or on the mount that will be
  killed ``fsync``, returned 0), ``error`` and ``anomaly`` lines, and at the end the
  ``model``: what it expects each of its private files to hold.
- **The log** (`dump_log`): every entry of the repo's change, read through the SDK in
  a short process, with the bytes of every write.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: One whole record (see the module docstring).
RECORD = re.compile(rb"(w\d+-\d+):(\d+)/(\d+):(\d+):([0-9a-f]*):\1END\n")
#: A jj conflict marker line (7 or more of one marker character, then a label or nothing).
MARKER = re.compile(rb"([<>+\-%\\|=])\1{6,}(?:[ \t][^\n]*)?(?:\n|\Z)")
NULS = re.compile(rb"\0+")
#: The offset in a problem's description (to tell repeated problems apart).
OFFSET = re.compile(r" at offset \d+")
#: The start of something that looks like a record (to name what a torn one was).
RECORD_START = re.compile(rb"w\d+-\d+:")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "agent",
    "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "agent",
    "GIT_COMMITTER_EMAIL": "agent@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}
TOOL_TIMEOUT_S = 90.0


# -- content ------------------------------------------------------------------------


def record(write_id: str, k: int, n: int, payload: str) -> bytes:
    """One record line."""
    return f"{write_id}:{k}/{n}:{len(payload)}:{payload}:{write_id}END\n".encode()


@dataclass
class Parsed:
    """What `parse` found in some bytes."""

    #: write id -> (n, the record numbers present, how many times the whole batch shows)
    batches: dict[str, tuple[int, set[int]]] = field(default_factory=dict)
    #: (offset, what it is) of every stretch that is neither a record nor allowed filler
    garbage: list[tuple[int, str]] = field(default_factory=list)
    conflicted: bool = False

    def incomplete(self) -> dict[str, list[int]]:
        """Batches that show up with records missing: write id -> missing numbers."""
        return {
            wid: sorted(set(range(1, n + 1)) - ks)
            for wid, (n, ks) in self.batches.items()
            if ks != set(range(1, n + 1))
        }

    def whole(self) -> set[str]:
        """The write ids whose whole batch shows up."""
        return {w for w, (n, ks) in self.batches.items() if ks == set(range(1, n + 1))}

    def problems(
        self, skip: Callable[[str], bool] | None = None, *, garbage: bool = True
    ) -> list[str]:
        """Human-readable reasons these bytes are torn (empty when valid).

        ``skip(write_id)`` excuses a partly present batch; ``garbage`` False excuses
        unparseable stretches.
        """
        out = []
        for offset, what in self.garbage[:3] if garbage else ():
            out.append(f"{what} at offset {offset}")
        incomplete = [
            (w, m) for w, m in sorted(self.incomplete().items()) if not (skip and skip(w))
        ]
        for wid, missing in incomplete[:5]:
            n = self.batches[wid][0]
            out.append(f"write {wid} only partly present: records {missing} of {n} missing")
        return out


def nuls_allowed(rel: str) -> bool:
    """Whether NUL runs are expected in ``rel``: a file ``truncate -s +N`` extends, or one
    ``cmd > file`` writes from two processes at once (one truncates under the other)."""
    return re.fullmatch(r"w\d+/t\.txt", rel) is not None or rel == "shared/out.txt"


def parse(data: bytes, nuls: bool = False) -> Parsed:
    """Split ``data`` into records and filler (see the module docstring).

    NUL runs are filler only with ``nuls`` (see `nuls_allowed`); else garbage.
    """
    out = Parsed()
    i, size = 0, len(data)
    while i < size:
        m = RECORD.match(data, i)
        if m is not None:
            wid, k, n, length, payload = m.groups()
            if int(length) != len(payload) or not 1 <= int(k) <= int(n):
                out.garbage.append((i, _garbage(data, i)))
            else:
                key = wid.decode()
                total, ks = out.batches.setdefault(key, (int(n), set()))
                ks.add(int(k))
                if total != int(n):
                    out.garbage.append((i, _garbage(data, i)))
            i = m.end()
            continue
        m = NULS.match(data, i) if nuls else None
        if m is not None:
            i = m.end()
            continue
        if data[i : i + 1] == b"\n":
            i += 1
            continue
        if i == 0 or data[i - 1 : i] == b"\n":
            m = MARKER.match(data, i)
            if m is not None:
                out.conflicted = True
                i = m.end()
                continue
        # Garbage up to the end of the line (a torn record, or bytes from nowhere).
        end = data.find(b"\n", i)
        end = size if end < 0 else end + 1
        out.garbage.append((i, _garbage(data, i)))
        i = end
    return out


def _garbage(data: bytes, i: int) -> str:
    """Describe the unparseable bytes at ``data[i:]`` (a NUL run, or a cut record)."""
    nuls = NULS.match(data, i)
    if nuls is not None:
        after = RECORD.match(data, nuls.end())
        what = f"a run of {nuls.end() - i} NUL bytes"
        if after is not None:
            what += f" right before write {after.group(1).decode()}'s record"
        return what
    end = data.find(b"\n", i)
    line = data[i : len(data) if end < 0 else end + 1]
    ids = sorted({m.group(0)[:-1].decode() for m in RECORD_START.finditer(line)})
    shown = line if len(line) <= 90 else line[:60] + b"..." + line[-25:]
    shown = NULS.sub(lambda m: f"<{len(m.group(0))} NULs>".encode(), shown)
    return f"a cut record ({', '.join(ids) or 'no id'}): {shown!r}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def describe(data: bytes | None) -> str:
    """A short description of file bytes for failure messages."""
    if data is None:
        return "<absent>"
    parsed = parse(data, nuls=True)
    ids = sorted(parsed.whole())
    shown = ", ".join(ids[:8]) + (f", ... ({len(ids)} writes)" if len(ids) > 8 else "")
    extra = " conflicted" if parsed.conflicted else ""
    return f"{len(data)} bytes sha {sha(data)}{extra} holding [{shown}]"


#: Shared files written in place (``>``, ``>>``) by several workers: a reader, or a
#: close, on the mount of two such writers may see one of them halfway (as on a local
#: filesystem); through another mount, never.
IN_PLACE_SHARED = ("shared/log.txt", "shared/out.txt")


# -- trees --------------------------------------------------------------------------


def walk(root: Path, errors: dict[str, str] | None = None) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``, by relative path.

    Symlinks map to ``b"->" + target``. Raises OSError if the tree cannot be read,
    unless ``errors`` is given: then each file that cannot be read is left out and
    recorded there with its error.
    """
    out: dict[str, bytes | None] = {}
    stack = [root]
    while stack:
        top = stack.pop()
        with os.scandir(top) as it:
            entries = list(it)
        for entry in entries:
            rel = os.path.relpath(entry.path, root)
            if entry.is_symlink():
                out[rel] = b"->" + os.readlink(entry.path).encode()
            elif entry.is_dir(follow_symlinks=False):
                out[rel] = None
                stack.append(Path(entry.path))
            else:
                try:
                    with open(entry.path, "rb") as f:
                        out[rel] = f.read()
                except OSError as exc:
                    if errors is None:
                        raise
                    errors[rel] = f"{type(exc).__name__}: {exc}"
    return out


def is_git_internal(rel: str) -> bool:
    return ".git" in rel.split("/")[:-1]


def tree_diff(a: dict[str, bytes | None], b: dict[str, bytes | None], limit: int = 8) -> list[str]:
    """The first differences between two walked trees, described."""
    out = []
    for rel in sorted(set(a) | set(b)):
        x, y = a.get(rel, b"<MISSING>"), b.get(rel, b"<MISSING>")
        if x != y:
            out.append(f"{rel}: {_kind(x, rel in a)} vs {_kind(y, rel in b)}")
            if len(out) >= limit:
                out.append("...")
                break
    return out


def _kind(value: bytes | None, present: bool) -> str:
    if not present:
        return "<absent>"
    if value is None:
        return "<dir>"
    return describe(value)


# -- workers ------------------------------------------------------------------------


@dataclass
class WorkerConfig:
    """What one worker process does (written as JSON for it)."""

    wid: int
    mount: str
    root: str
    seed: int
    ops: int
    crashy: bool
    journal: str
    scratch: str
    epoch_file: str
    shared_files: int = 2
    max_records: int = 4
    large_every: int = 12
    large_bytes: int = 200_000
    weights: dict[str, int] = field(default_factory=dict)
    #: no more appends to a shared file this large
    grow_cap: int = 1_000_000
    #: whether it is the only worker on its mount
    alone: bool = False
    #: the workers on other mounts (``w<n>``)
    remote_workers: list[str] = field(default_factory=list)


DEFAULT_WEIGHTS = {
    "save": 5,
    "redirect": 3,
    "append": 3,
    "append_shared": 4,
    "redirect_shared": 1,
    "truncate": 2,
    "open_rename": 2,
    "tar": 1,
    "cp_a": 1,
    "git": 1,
    "peek": 2,
}


class ToolError(Exception):
    """A tool or syscall of an operation failed (the message says which)."""


class Worker:
    """Runs one `WorkerConfig` (see the module docstring)."""

    def __init__(self, cfg: WorkerConfig) -> None:
        if os.environ.get("MESA_TORTURE_WEIGHTS"):
            # e.g. "append_shared:3,peek:1": replay a run with only some operations
            pairs = (p.split(":") for p in os.environ["MESA_TORTURE_WEIGHTS"].split(","))
            cfg.weights = {name: int(weight) for name, weight in pairs}
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.root = Path(cfg.root)
        self.scratch = Path(cfg.scratch)
        self.me = f"w{cfg.wid}"
        self.counter = 0
        #: private path -> expected bytes (None: must not exist); unknown paths are absent
        self.model: dict[str, bytes | None] = {}
        self.journal_file = open(cfg.journal, "a", buffering=1)  # noqa: SIM115
        self.epoch = self.read_epoch()
        self.op_epoch = self.epoch
        self.git_ready = False
        self.op_index = -1

    # plumbing

    def log(self, kind: str, **fields: Any) -> None:
        self.journal_file.write(
            json.dumps(
                {"kind": kind, "w": self.me, "mount": self.cfg.mount, "t": time.time(), **fields}
            )
            + "\n"
        )

    def read_epoch(self) -> str:
        try:
            return Path(self.cfg.epoch_file).read_text()
        except OSError:
            return ""

    def new_id(self) -> str:
        self.counter += 1
        return f"{self.me}-{self.counter:04d}"

    def batch(self, large: bool = False, n: int | None = None) -> tuple[str, list[bytes]]:
        wid = self.new_id()
        n = n or self.rng.randint(1, self.cfg.max_records)
        sizes = [self.rng.randint(0, 60) for _ in range(n)]
        if large:
            # above the inline threshold (64 KiB): the bytes travel as a blob
            sizes[self.rng.randrange(n)] = self.rng.randint(70_000, self.cfg.large_bytes)
        return wid, [
            record(wid, k + 1, n, self.rng.randbytes(s // 2 + 1).hex()[:s])
            for k, s in enumerate(sizes)
        ]

    def large(self) -> bool:
        return self.cfg.large_every > 0 and self.rng.randrange(self.cfg.large_every) == 0

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.root)

    def tool(self, argv: list[str], cwd: Path | None = None) -> str:
        try:
            result = subprocess.run(
                argv,
                cwd=cwd or self.root,
                capture_output=True,
                text=True,
                env={**os.environ, **GIT_ENV},
                timeout=TOOL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ToolError(f"{argv} hung for {TOOL_TIMEOUT_S}s") from exc
        if result.returncode != 0:
            raise ToolError(f"{argv} exited {result.returncode}: {result.stderr.strip()[-500:]}")
        return result.stdout

    def sh(self, script: str, cwd: Path | None = None) -> str:
        return self.tool(["bash", "-c", script], cwd)

    def fsync_path(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def ack(
        self,
        wid: str,
        op: str,
        path: Path,
        data: bytes,
        alt: list[Path] | None = None,
        sync: Path | None = None,
    ) -> bool:
        """Record a completed write; on the crashy mount only once an fsync returned."""
        fsynced = False
        if self.cfg.crashy or self.rng.random() < 0.15:
            self.fsync_path(sync or path)
            fsynced = True
        if self.cfg.crashy and self.read_epoch() != self.op_epoch:
            # The mount was killed (and maybe remounted) during this op: the fsync may
            # have reached the new mount, which says nothing about this write.
            self.log(
                "unacked", id=wid, op=op, path=self.rel(path), why="mount killed during the op"
            )
            self.forget()
            return False
        self.log(
            "write",
            id=wid,
            op=op,
            path=self.rel(path),
            alt=[self.rel(a) for a in alt or []],
            sha=sha(data),
            size=len(data),
            fsynced=fsynced,
            index=self.op_index,
        )
        return True

    def forget(self) -> None:
        """After an error or a mount kill, what the mount holds is unknown: read it again."""
        self.model.clear()

    def check_own(self, path: Path) -> None:
        """Read a private file back through the mount: it must hold what was written."""
        rel = self.rel(path)
        if rel not in self.model:
            return
        try:
            data: bytes | None = path.read_bytes()
        except FileNotFoundError:
            data = None
        expected = self.model[rel]
        if data != expected and self.read_epoch() == self.op_epoch:
            self.log(
                "anomaly",
                what="read-your-writes",
                path=rel,
                expected=describe(expected),
                found=describe(data),
                index=self.op_index,
            )
        if data is not None:
            problems = parse(data, nuls_allowed(rel)).problems()
            if problems:
                found = f"{describe(data)}: {'; '.join(problems)}"
                self.log(
                    "anomaly", what="torn read-back", path=rel, found=found, index=self.op_index
                )
        self.model[rel] = data

    def check_shared(self, path: Path) -> None:
        if self.rel(path) in IN_PLACE_SHARED and not self.cfg.alone:
            return  # another worker on this mount may be appending to it right now
        with contextlib.suppress(FileNotFoundError):
            data = path.read_bytes()
            problems = parse(data, nuls_allowed(self.rel(path))).problems()
            if problems:
                self.log(
                    "anomaly",
                    what="torn read-back",
                    path=self.rel(path),
                    found=f"{describe(data)}: {'; '.join(problems)}",
                    index=self.op_index,
                )

    def current(self, path: Path) -> bytes | None:
        """What a private file holds: the model, else read through the mount."""
        rel = self.rel(path)
        if rel not in self.model:
            try:
                self.model[rel] = path.read_bytes()
            except FileNotFoundError:
                self.model[rel] = None
        return self.model[rel]

    # operations

    def op_save(self) -> None:
        """An editor's atomic save of a shared file: write a temp file, rename it over."""
        k = self.rng.randrange(self.cfg.shared_files)
        target = self.root / "shared" / f"s{k}.txt"
        tmp = self.root / "shared" / f".s{k}.txt.{self.me}.{self.counter}.tmp"
        try:
            old = target.read_bytes()
        except FileNotFoundError:
            old = b""
        wid, recs = self.batch(self.large())
        data = b"".join(recs)
        if self.rng.random() < 0.5 and len(old) < 32_000:
            data = old + data  # the editor's buffer: what it read, plus a new line
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            half = len(data) // 2
            os.write(fd, data[:half])
            os.write(fd, data[half:])
            if self.cfg.crashy:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, target)
        self.ack(wid, "save", target, data, alt=[tmp])
        self.check_shared(target)

    def op_peek(self) -> None:
        """Read what other writers wrote (shared files, another worker's files): never torn."""
        targets = sorted((self.root / "shared").iterdir())
        # Another worker's files, when it writes through another mount: a reader on the
        # same mount may see a write in progress (as on a local filesystem), a reader on
        # another mount only what a close published.
        others = [p for p in self.root.iterdir() if p.name in self.cfg.remote_workers]
        if others:
            other = self.rng.choice(sorted(others))
            targets += sorted(p for p in other.iterdir() if p.is_file())
        for path in targets:
            if path.is_file() and not path.name.startswith("."):
                self.check_shared(path)

    def parts(self, recs: list[bytes]) -> list[Path]:
        out = []
        for i, rec in enumerate(recs):
            p = self.scratch / f"part{i}"
            p.write_bytes(rec)
            out.append(p)
        return out

    def op_redirect(self) -> None:
        """``cat a b c > file``: one open with O_TRUNC, several writes, one close."""
        target = self.root / self.me / f"r{self.rng.randrange(3)}.txt"
        wid, recs = self.batch(self.large())
        parts = " ".join(str(p) for p in self.parts(recs))
        self.sh(f"cat {parts} > {target}")
        data = b"".join(recs)
        self.model[self.rel(target)] = data
        self.ack(wid, "redirect", target, data)
        self.check_own(target)

    def op_append(self) -> None:
        """``cat a b >> file`` on a private file."""
        target = self.root / self.me / "t.txt"
        before = self.current(target) or b""
        wid, recs = self.batch(self.large())
        parts = " ".join(str(p) for p in self.parts(recs))
        self.sh(f"cat {parts} >> {target}")
        data = b"".join(recs)
        self.model[self.rel(target)] = before + data
        self.ack(wid, "append", target, data)
        self.check_own(target)

    def op_append_shared(self) -> None:
        """``cat ... >> shared/log.txt`` from every mount at once."""
        target = self.root / "shared" / "log.txt"
        with contextlib.suppress(FileNotFoundError):
            size = target.stat().st_size
            if size > self.cfg.grow_cap:
                # Racing appends nest conflict blocks (the test's check (g) reports how
                # far it grew); feeding it further only slows the run down.
                self.log("note", what=f"not appending to {self.rel(target)}: {size} bytes")
                return
        wid, recs = self.batch()
        parts = " ".join(str(p) for p in self.parts(recs))
        self.sh(f"cat {parts} >> {target}")
        self.ack(wid, "append_shared", target, b"".join(recs))
        self.check_shared(target)

    def op_redirect_shared(self) -> None:
        """``cat ... > shared/out.txt`` from every mount at once (no atomic save)."""
        target = self.root / "shared" / "out.txt"
        wid, recs = self.batch(self.large())
        parts = " ".join(str(p) for p in self.parts(recs))
        self.sh(f"cat {parts} > {target}")
        self.ack(wid, "redirect_shared", target, b"".join(recs))
        self.check_shared(target)

    def op_truncate(self) -> None:
        """``truncate -s`` of the private append file: cut whole batches, or extend with NULs."""
        target = self.root / self.me / "t.txt"
        data = self.current(target)
        if data is None:
            return
        cut = _last_batch_start(data)
        if cut is not None and self.rng.random() < 0.6:
            self.tool(["truncate", "-s", str(cut), str(target)])
            new = data[:cut]
        else:
            extra = self.rng.randint(1, 40)
            self.tool(["truncate", "-s", f"+{extra}", str(target)])
            new = data + b"\0" * extra
        self.model[self.rel(target)] = new
        if self.cfg.crashy:
            self.fsync_path(target)
            if self.read_epoch() != self.op_epoch:
                self.forget()
                return
        self.log("version", op="truncate", path=self.rel(target), sha=sha(new), size=len(new))
        self.check_own(target)

    def op_open_rename(self) -> None:
        """Write into an open file, rename it, write more through the same descriptor, close."""
        k = self.rng.randrange(2)
        a = self.root / self.me / f"o{k}.a"
        b = self.root / self.me / f"o{k}.b"
        wid, recs = self.batch(self.large(), n=self.rng.randint(2, self.cfg.max_records + 1))
        split = self.rng.randint(1, len(recs) - 1)
        fd = os.open(a, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"".join(recs[:split]))
            os.rename(a, b)
            os.write(fd, b"".join(recs[split:]))
            if self.cfg.crashy:
                os.fsync(fd)
        finally:
            os.close(fd)
        data = b"".join(recs)
        self.model[self.rel(a)] = None
        self.model[self.rel(b)] = data
        self.ack(wid, "open_rename", b, data, alt=[a])
        self.check_own(a)
        self.check_own(b)

    def make_tree(self, name: str) -> tuple[Path, list[tuple[str, str, bytes]]]:
        """A small source tree ``<scratch>/src/<name>/...`` of record files."""
        src = self.scratch / "src"
        shutil.rmtree(src, ignore_errors=True)
        top = src / name
        files: list[tuple[str, str, bytes]] = []
        for rel in ("a.txt", "d/b.txt", "d/e/c.txt")[: self.rng.randint(2, 3)]:
            wid, recs = self.batch()
            (top / rel).parent.mkdir(parents=True, exist_ok=True)
            data = b"".join(recs)
            (top / rel).write_bytes(data)
            files.append((wid, f"{name}/{rel}", data))
        os.chmod(top / "a.txt", 0o640)
        os.utime(top, (1_000_000, 1_000_000))
        os.utime(src, (1_000_000, 1_000_000))
        return src, files

    def unpack_dest(self) -> Path:
        if self.rng.random() < 0.5:
            return self.root
        dest = self.root / self.me / "sub"
        dest.mkdir(exist_ok=True)
        return dest

    def op_tar(self) -> None:
        """``tar -x`` of a small tree into the repo root or a subdirectory."""
        dest = self.unpack_dest()
        src, files = self.make_tree(f"tx-{self.me}-{self.counter + 1:04d}")
        tarball = self.scratch / "t.tar"
        subprocess.run(["tar", "-cf", str(tarball), "-C", str(src), "."], check=True)
        self.tool(["tar", "-xf", str(tarball), "-C", str(dest)])
        self.unpacked("tar", dest, files)

    def op_cp_a(self) -> None:
        """``cp -a src/. dest/`` into the repo root or a subdirectory."""
        dest = self.unpack_dest()
        src, files = self.make_tree(f"cp-{self.me}-{self.counter + 1:04d}")
        self.tool(["cp", "-a", f"{src}/.", f"{dest}/"])
        self.unpacked("cp_a", dest, files)

    def unpacked(self, op: str, dest: Path, files: list[tuple[str, str, bytes]]) -> None:
        for _, rel, data in files:
            self.model[self.rel(dest / rel)] = data
        first = dest / files[0][1]
        if self.cfg.crashy:
            self.fsync_path(first)
        if self.cfg.crashy and self.read_epoch() != self.op_epoch:
            self.forget()
            return
        for wid, rel, data in files:
            self.log(
                "write",
                id=wid,
                op=op,
                path=self.rel(dest / rel),
                alt=[],
                sha=sha(data),
                size=len(data),
                fsynced=self.cfg.crashy,
                index=self.op_index,
            )
        for _, rel, _ in files:
            self.check_own(dest / rel)

    def op_git(self) -> None:
        """``git add -A && git commit`` in the worker's own git repository."""
        repo = self.root / f"g-{self.me}"
        if not self.git_ready:
            if not (repo / ".git" / "HEAD").exists():
                repo.mkdir(exist_ok=True)
                self.tool(["git", "init", "-q", "-b", "main", "."], repo)
            self.git_ready = True
        self.clear_stale_locks(repo)
        target = repo / f"f{self.rng.randrange(3)}.txt"
        wid, recs = self.batch()
        data = b"".join(recs)
        target.write_bytes(data)
        self.model[self.rel(target)] = data
        self.tool(["git", "add", "-A"], repo)
        self.tool(["git", "commit", "-q", "-m", f"commit {wid}"], repo)
        head = self.tool(["git", "rev-parse", "HEAD"], repo).strip()
        if self.ack(wid, "git", target, data, sync=repo / ".git" / "HEAD"):
            self.log("commit", id=wid, repo=self.rel(repo), sha=head, fsynced=self.cfg.crashy)
        self.check_own(target)

    def clear_stale_locks(self, repo: Path) -> None:
        """After its mount was killed, remove git lock files it lost (as after a crash)."""
        if not (self.cfg.crashy and self.read_epoch()):
            return
        for lock in (repo / ".git").rglob("*.lock"):
            with contextlib.suppress(OSError):
                lock.unlink()
                self.log(
                    "note",
                    what="removed a stale git lock after the mount was killed",
                    path=self.rel(lock),
                )

    # the script

    def run(self) -> None:
        weights = self.cfg.weights or DEFAULT_WEIGHTS
        names = list(weights)
        ops: dict[str, Callable[[], None]] = {n: getattr(self, f"op_{n}") for n in names}
        self.log("start", seed=self.cfg.seed, crashy=self.cfg.crashy)
        self.setup()
        for i in range(self.cfg.ops):
            self.op_index = i
            name = self.rng.choices(names, [weights[n] for n in names])[0]
            epoch = self.read_epoch()
            if epoch != self.epoch:
                self.epoch = epoch
                self.forget()
                self.log("note", what="the mount was killed: forgetting the model")
            self.op_epoch = epoch
            self.log("op", index=i, op=name)
            try:
                ops[name]()
            except (OSError, ToolError, subprocess.SubprocessError) as exc:
                self.log("error", index=i, op=name, error=f"{type(exc).__name__}: {exc}")
                self.forget()
                time.sleep(0.3)
        self.finish()

    def setup(self) -> None:
        for attempt in range(200):
            try:
                (self.root / "shared").mkdir(exist_ok=True)
                (self.root / self.me).mkdir(exist_ok=True)
                return
            except OSError as exc:
                self.log("error", index=-1, op="setup", error=f"{type(exc).__name__}: {exc}")
                time.sleep(0.1 * attempt)

    def finish(self) -> None:
        """fsync everything this worker wrote, then report the model."""
        self.op_index = self.cfg.ops
        tries = 0
        for attempt in range(60):
            tries = attempt + 1
            epoch = self.read_epoch()
            try:
                fd = os.open(self.root / self.me, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                for rel in list(self.model):
                    if self.model[rel] is not None:
                        self.fsync_path(self.root / rel)
            except OSError as exc:
                self.log(
                    "error",
                    index=self.op_index,
                    op="final fsync",
                    error=f"{type(exc).__name__}: {exc}",
                )
                self.forget()
                time.sleep(0.5)
                continue
            if self.read_epoch() != epoch:
                self.forget()
                continue
            break
        else:
            self.log(
                "error", index=self.op_index, op="final fsync", error="gave up after 60 attempts"
            )
        model = {rel: (None if v is None else sha(v)) for rel, v in self.model.items()}
        sizes = {rel: (None if v is None else len(v)) for rel, v in self.model.items()}
        self.log("model", files=model, sizes=sizes)
        self.log("done", final_fsync_tries=tries)


def _last_batch_start(data: bytes) -> int | None:
    """The offset where the last batch of ``data`` starts, if it is not the first thing."""
    starts: list[tuple[int, bytes]] = []
    for m in RECORD.finditer(data):
        if m.group(2) == b"1":
            starts.append((m.start(), m.group(1)))
    if len(starts) < 2:
        return None
    return starts[-1][0]


# -- journals ------------------------------------------------------------------------


def read_journal(path: Path) -> list[dict[str, Any]]:
    out = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def progress(path: Path) -> int:
    """How many operations a worker has started."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().count('"kind": "op"')
    return 0


# -- the log, through the SDK --------------------------------------------------------


DUMP = """
import asyncio, base64, json, sys
from engine.codec import decode_entry
from engine.ops import Append, Mv, Cp, Write
from mesa import Mesa
from mesa._history import OP_NAMES

async def main():
    out, org, repo = sys.argv[1], sys.argv[2], sys.argv[3]
    mesa = Mesa(org=org)
    rows = []
    async with mesa.fs.mount(repos=[repo]) as fs:
        rm = fs.repo_mounts[0]
        await rm.wait_synced()
        t, log = rm.store.gateway, rm.store.log(rm.change_id)
        last = await t.last_seq(rm.store.token, log)
        if last:
            sub = await t.subscribe(rm.store.token, log, after_seq=0)
            try:
                async for d in sub:
                    e = decode_entry(d.payload)
                    op = e.op
                    row = {"seq": d.seq, "time_ms": d.time_ms, "author": e.author,
                           "seen": e.seen, "op": OP_NAMES[type(op)]}
                    if isinstance(op, Mv | Cp):
                        row["src"], row["dst"] = "/".join(op.src), "/".join(op.dst)
                    else:
                        row["path"] = "/".join(op.path)
                    if isinstance(op, Write | Append) and "/.git/" not in "/" + row["path"]:
                        data = await rm.blobs.content_bytes(op.content)
                        row["data"] = base64.b64encode(data).decode()
                    rows.append(row)
                    if d.seq >= last:
                        break
            finally:
                await sub.aclose()
    with open(out, "w") as f:
        json.dump(rows, f)
    await mesa.transport.aclose()

asyncio.run(main())
"""


@dataclass
class LogEntry:
    seq: int
    time_ms: int
    author: str
    seen: int
    op: str
    path: str = ""
    src: str = ""
    dst: str = ""
    data: bytes | None = None


def dump_log(env: dict[str, str], cwd: Path, out: Path, org: str, repo: str) -> list[LogEntry]:
    """Every entry of the repo's change (write bytes decoded), via a short SDK process."""
    result = subprocess.run(
        [sys.executable, "-c", DUMP, str(out), org, repo],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"reading the log failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    rows = json.loads(out.read_text())
    entries = []
    for row in rows:
        data = row.pop("data", None)
        entry = LogEntry(**row)
        entry.data = None if data is None else base64.b64decode(data)
        entries.append(entry)
    return entries


def renamed_paths(entries: list[LogEntry], start: str) -> set[str]:
    """``start`` and every path a move in the log carried it (or a parent of it) to."""
    seen = {start}
    for e in entries:
        if e.op != "mv":
            continue
        for p in list(seen):
            if p == e.src:
                seen.add(e.dst)
            elif p.startswith(e.src + "/"):
                seen.add(e.dst + p[len(e.src) :])
    return seen


def main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        cfg = WorkerConfig(**json.loads(Path(argv[1]).read_text()))
        worker = Worker(cfg)
        try:
            worker.run()
        except BaseException:
            worker.log("crash", error=traceback.format_exc())
            raise
        return 0
    print(f"usage: {sys.argv[0]} worker CONFIG", file=sys.stderr)
    return 2


def config_json(cfg: WorkerConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
