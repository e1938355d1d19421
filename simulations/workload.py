"""Random workloads biased toward trouble: many mounts, few names, deep and wide trees.

Each op is drawn against the issuing mount's own folded tree (a partitioned
mount's tree is stale, so its ops race), from a mix the seed picks: every op kind
(write, append, mkdir, rm -r, mv, cp, chmod, symlink, utimes) plus writing back a
conflict's materialization (an editor saving the block, possibly edited inside) and,
in wide seeds, **fanout** (a new file among up to 64 names in one of the first
directories, so a directory holds dozens of entries). Deep seeds nest directories 10
to 16 levels. Some seeds write **big** contents now and then: medium ones (1 KiB to
half the inline threshold) travel inline and may exceed a small server's payload
limit (the mount spills them), large ones (past `engine.driver.INLINE_THRESHOLD_BYTES`)
go to the blob store.

Every written or appended content carries a unique **tag** (``@@w17@@``,
``@@a18@@``), so the checkers can follow a write's bytes through conflicts, moves
and copies without trusting the fold: a tag occurs in no other op's content except
where a write-back copies a conflict's sides. Filler lines around the tags are
drawn from a small pool (shared lines, marker-like lines, CRLF, no final newline)
so materialization trims common lines and lengthens markers.

**Metadata** ops (`engine.ops.SetMetadata`: set one or two keys of a small pool,
delete one, or clear a node) are drawn from a second random stream seeded from the
mix, at a per-seed rate that is zero for about 40% of seeds: a seed without metadata
runs exactly the ops it ran before metadata existed. Every value set is a unique tag
(``m17``), so the metadata checker (simulations/metadata.py) can follow it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from engine import conflicts, driver
from engine.content import Content
from engine.ops import Append, Chmod, Cp, Mkdir, Mv, Op, Rm, SetMetadata, Symlink, Utimes, Write
from engine.paths import RelPath
from engine.tree import AnyNode, DirNode, FileNode, SymlinkNode, Tree

TAG_RE = re.compile(rb"@@([wa])(\d+)@@")

OP_KINDS = (
    "write",
    "append",
    "mkdir",
    "rm",
    "mv",
    "cp",
    "chmod",
    "symlink",
    "utimes",
    "writeback",
    "fanout",
)

_DIR_NAMES = ("a", "b", "c", "d")
_FILE_NAMES = ("f", "g", "h", "notes.md")
_FILLER = (
    b"shared line\n",
    b"header\n",
    b"footer\n",
    b"<<<<<<< looks like a marker\n",
    b"+++++++\n",
    b"crlf line\r\n",
)
_MODES = (0o644, 0o600, 0o755, 0o444, 0o700)
#: The metadata keys drawn (few, so sets of one key race).
META_KEYS = ("owner", "status")
_PAD = b"padding " * 7 + b"\n"  # 64 bytes: big contents are mostly these lines
FANOUT_NAMES = 64


@dataclass(frozen=True, slots=True)
class Mix:
    """A seed's workload shape: op weights, name pools, depth, sizes, pacing, switches.

    ``big_rate`` is the share of writes and appends with big contents; ``switch_rate``
    the chance per step that the acting mount forks a new change or moves to another.
    """

    weights: tuple[int, ...]
    dir_names: tuple[str, ...]
    file_names: tuple[str, ...]
    max_depth: int
    gap_ms_mean: float
    far_rate: float
    big_rate: float = 0.0
    switch_rate: float = 0.0

    @staticmethod
    def choose(rng: random.Random) -> Mix:
        """Draw a mix: writes always dominate, the rest vary per seed."""
        base = {"write": 30, "append": 12, "writeback": 4, "fanout": 0}
        weights = [base.get(kind, rng.randint(0, 10)) for kind in OP_KINDS]
        wide, deep = rng.random() < 0.3, rng.random() < 0.3
        if wide:
            weights[OP_KINDS.index("fanout")] = rng.randint(25, 50)
        return Mix(
            weights=tuple(weights),
            dir_names=_DIR_NAMES[: rng.randint(1, len(_DIR_NAMES))],
            file_names=_FILE_NAMES[: rng.randint(1, len(_FILE_NAMES))],
            max_depth=rng.randint(10, 16) if deep else rng.randint(2, 7),
            gap_ms_mean=rng.choice((20.0, 60.0, 150.0, 400.0)),
            far_rate=rng.uniform(0.0, 0.15),
            big_rate=rng.uniform(0.02, 0.1) if rng.random() < 0.5 else 0.0,
            switch_rate=rng.uniform(0.01, 0.05) if rng.random() < 0.6 else 0.0,
        )


@dataclass(frozen=True, slots=True)
class Listing:
    """The nodes of a tree by kind, in sorted walk order."""

    dirs: list[RelPath]
    files: list[RelPath]
    links: list[RelPath]
    conflicted: list[tuple[RelPath, FileNode]]

    @staticmethod
    def of(tree: Tree) -> Listing:
        """List ``tree``."""
        dirs: list[RelPath] = []
        files: list[RelPath] = []
        links: list[RelPath] = []
        conflicted: list[tuple[RelPath, FileNode]] = []
        for path, node in tree.walk():
            if isinstance(node, DirNode):
                dirs.append(path)
            elif isinstance(node, FileNode):
                files.append(path)
                if not node.value.is_resolved():
                    conflicted.append((path, node))
            else:
                links.append(path)
        return Listing(dirs, files, links, conflicted)

    def nodes(self) -> list[RelPath]:
        """Every path but the root."""
        return [p for p in self.dirs if p] + self.files + self.links


class Workload:
    """Draws ops (see module docstring); one instance per run, shared by all mounts."""

    def __init__(
        self, rng: random.Random, mix: Mix, read: Callable[[Content], bytes] | None = None
    ) -> None:
        self.rng = rng
        self.mix = mix
        self.next_tag = 0
        # Metadata ops use their own stream (module docstring): str seeds are hashed
        # with sha512, independent of PYTHONHASHSEED.
        self.meta_rng = random.Random(f"metadata:{mix!r}")
        self.meta_rate = 0.0 if self.meta_rng.random() < 0.4 else self.meta_rng.uniform(0.1, 0.3)
        self.next_meta_tag = 0
        # How an editor reads a term's bytes (blob terms too); None: inline terms only.
        self.read = read

    def next_op(self, tree: Tree) -> tuple[str, Op]:
        """Return an op kind's name and an op drawn against ``tree``."""
        rng = self.rng
        listing = Listing.of(tree)
        if self.meta_rate and self.meta_rng.random() < self.meta_rate:
            return "metadata", self._metadata(listing)
        kind = rng.choices(OP_KINDS, weights=self.mix.weights)[0]
        op = self._draw(kind, listing, tree)
        if op is None:
            kind = "write"
            op = Write(self._pick_file(listing), self._content("w"))
        return kind, op

    # -- paths and contents ---------------------------------------------------------

    def _new_path(self, listing: Listing) -> RelPath:
        parent = self.rng.choice(listing.dirs)
        names = self.mix.file_names if self.rng.random() < 0.6 else self.mix.dir_names
        return (*parent, self.rng.choice(names))

    def _deep_path(self) -> RelPath:
        depth = self.rng.randint(1, self.mix.max_depth)
        return tuple(self.rng.choice(self.mix.dir_names) for _ in range(depth))

    def _pick_file(self, listing: Listing) -> RelPath:
        """An existing file most of the time (the hot ones first), else a new path."""
        if listing.files and self.rng.random() < 0.7:
            hot = listing.files[: max(1, len(listing.files) // 3)]
            return self.rng.choice(hot if self.rng.random() < 0.5 else listing.files)
        return self._new_path(listing)

    def _tag(self, kind: str) -> bytes:
        self.next_tag += 1
        return b"@@%s%d@@" % (kind.encode(), self.next_tag)

    def _content(self, kind: str) -> Content:
        rng = self.rng
        before = b"".join(rng.choice(_FILLER) for _ in range(rng.randint(0, 2)))
        after = b"".join(rng.choice(_FILLER) for _ in range(rng.randint(0, 2)))
        if kind == "a":
            before = b""  # an append's tag starts its bytes
        end = b"" if rng.random() < 0.1 else b"\n"
        body = self._tag(kind) + end
        if self.mix.big_rate and rng.random() < self.mix.big_rate:
            limit = driver.INLINE_THRESHOLD_BYTES
            if rng.random() < 0.5:
                size = rng.randint(1024, limit // 2)  # inline, unless the server refuses it
            else:
                size = rng.randint(limit + 1, limit + 32 * 1024)  # a blob
            body += _PAD * (size // len(_PAD))
        return Content.of(before + body + after)

    # -- ops ------------------------------------------------------------------------

    def _draw(self, kind: str, listing: Listing, tree: Tree) -> Op | None:
        rng = self.rng
        nodes = listing.nodes()
        if kind == "write":
            return Write(self._pick_file(listing), self._content("w"))
        if kind == "append":
            return Append(self._pick_file(listing), self._content("a"))
        if kind == "writeback":
            return self._writeback(listing)
        if kind == "fanout":
            return Write(self._fanout_path(listing, tree), self._content("w"))
        if kind == "mkdir":
            if rng.random() < 0.4:
                return Mkdir(self._deep_path(), parents=True)
            return Mkdir(self._new_path(listing))
        if not nodes:
            return None
        if kind == "rm":
            path = rng.choice(nodes)
            return Rm(path, recursive=rng.random() < 0.9)
        if kind in ("mv", "cp"):
            return self._move(kind, listing, tree)
        if kind == "chmod":
            return Chmod(rng.choice(listing.files + listing.dirs[1:] or nodes), rng.choice(_MODES))
        if kind == "symlink":
            return Symlink(self._new_path(listing), rng.choice(("f", "../a", "a/b/c", "/x")))
        t0 = 1_700_000_000_000
        return Utimes(rng.choice(nodes), t0 + rng.randint(0, 10**6), t0 + rng.randint(0, 10**6))

    def _metadata(self, listing: Listing) -> SetMetadata:
        """Set one or two keys (a fresh tag each), delete one, or clear, on any node."""
        rng = self.meta_rng
        nodes = [*listing.dirs, *listing.files, *listing.links]
        # Mostly a few hot nodes (the root, the first files), so sets of one key race.
        hot = [*listing.dirs[:1], *listing.files[:2]]
        path = rng.choice(hot if rng.random() < 0.6 else nodes)
        roll = rng.random()
        if roll < 0.1:
            return SetMetadata(path, (), clear=True)
        keys = sorted(rng.sample(META_KEYS, 1 if roll < 0.7 else 2))
        items: list[tuple[str, str | None]] = []
        for key in keys:
            if rng.random() < 0.2:
                items.append((key, None))
            else:
                self.next_meta_tag += 1
                items.append((key, f"m{self.next_meta_tag}"))
        return SetMetadata(path, tuple(items))

    def _fanout_path(self, listing: Listing, tree: Tree) -> RelPath:
        """A file in the root (or the first directory), a free name most of the time."""
        rng = self.rng
        parent = listing.dirs[0] if rng.random() < 0.7 else rng.choice(listing.dirs[:2])
        node = tree.lookup(parent)
        taken = node.children if isinstance(node, DirNode) else {}
        names = [f"e{n}" for n in range(FANOUT_NAMES)]
        free = [name for name in names if name not in taken]
        name = rng.choice(free if free and rng.random() < 0.8 else names)
        return (*parent, name)

    def _move(self, kind: str, listing: Listing, tree: Tree) -> Op:
        rng = self.rng
        src = rng.choice(listing.nodes())
        node: AnyNode | None = tree.lookup(src)
        roll = rng.random()
        other_dirs = [d for d in listing.dirs if d and d[: len(src)] != src]
        if isinstance(node, DirNode) and other_dirs and roll < 0.5:
            # mv x y/x: racing the reverse move builds a cycle attempt.
            dst: RelPath = (*rng.choice(other_dirs), src[-1])
        elif isinstance(node, FileNode | SymlinkNode) and listing.files and roll < 0.4:
            dst = rng.choice(listing.files)  # onto an existing file
        else:
            dst = self._new_path(listing)
        if kind == "mv":
            return Mv(src, dst)
        return Cp(src, dst, recursive=isinstance(node, DirNode))

    def _writeback(self, listing: Listing) -> Op | None:
        """Write a conflict's block back: unchanged, edited inside side #1, or broken."""
        if not listing.conflicted:
            return None
        path, node = self.rng.choice(listing.conflicted)
        terms = [b"" if v is None else self._read(v) for v in node.value.terms()]
        if any(t is None for t in terms):
            return None
        data = [t for t in terms if t is not None]
        sides, bases = data[0::2], data[1::2]
        roll = self.rng.random()
        if roll < 0.4:
            block = conflicts.materialize(sides, bases)
        elif roll < 0.8:
            edited = [sides[0] + self._tag("w") + b"\n", *sides[1:]]
            block = conflicts.materialize(edited, bases)
        else:
            # A marker deleted: not a valid block any more, so it is a plain write.
            block = conflicts.materialize(sides, bases).replace(b">>>>>>>", b"", 1)
            block += self._tag("w") + b"\n"
        return Write(path, Content.of(block))

    def _read(self, content: Content) -> bytes | None:
        data = content.inline_bytes()
        return data if data is not None or self.read is None else self.read(content)


def tags_of(data: bytes) -> set[int]:
    """Return the tag numbers found in ``data``."""
    return {int(m.group(2)) for m in TAG_RE.finditer(data)}
