"""The oracle: folds the log as the sequencer stores it, and checks writes and races.

The oracle is one more replica (the production fold, in log order, no network). After
each entry it runs the checkers that need the whole history (docs/simulations.md has
the exact rules):

- (c) **No write is lost.** Every written or appended content carries a unique tag
  (simulations/workload.py), followed file by file (by inode). When a tag leaves
  the sides of a file, the entry that removed it must, for every entry that put it
  in that file (its carriers: the write, or the copy that made the file), be by
  the same author (one author is one timeline), or have seen it (``seen >= its
  seq``), or be stamped outside the race window of it (``|dt| > window``); the
  entry stays in the log (append-only). Checked for every entry, so for
  acknowledged writes in particular.
- (d) **A conflict exists exactly when two writes raced.** Everywhere: a file only
  becomes (more) conflicted through a write, move or copy that has a race witness.
  Exactly, on files the model follows (`simple`): the file is a conflict after a
  write if and only if that write raced an unseen, value-changing write or append
  by another author within the window.

- (i) **Metadata keeps the race rules** (simulations/metadata.py): no metadata set
  is lost, and a key only becomes conflicted through a racing set.

Tags present in a file are read from its sides only: a content that survives only
as a base was replaced by someone who had seen it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from engine import conflicts
from engine.content import Content
from engine.fold import ChangeState, fold
from engine.merge import Merge, Value
from engine.ops import Append, Cp, Entry, Logged, Mv, Op, Rm, Write, touched_paths
from engine.paths import RelPath, is_ancestor, to_str
from engine.tree import FileNode, Tree, merge_key
from simulations.failure import CheckFailedError
from simulations.known import Findings
from simulations.metadata import MetadataChecker
from simulations.model import SimpleFiles
from simulations.workload import tags_of

_ASIDE_RE = re.compile(r"\.conflict-\d+$")
#: A path this many components deep counts as deep, a directory with this many
#: entries as wide (coverage points deep_tree and wide_dir).
DEEP_PATH = 10
WIDE_DIR = 32


@dataclass(frozen=True, slots=True)
class Origin:
    """The entry that first carried a tag."""

    seq: int
    time_ms: int
    author: str
    op_id: str


@dataclass(slots=True)
class Census:
    """What the oracle's tree holds: files by inode, every path, every tag in a side."""

    files: dict[int, tuple[RelPath, Merge]] = field(default_factory=dict)
    file_paths: dict[RelPath, int] = field(default_factory=dict)
    paths: set[RelPath] = field(default_factory=set)
    tags: dict[int, frozenset[int]] = field(default_factory=dict)
    # (seq, time) of the versions each file remembers (the fold's race memory)
    versions: dict[int, tuple[tuple[int, int], ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Witness:
    """An effective entry that can be raced: its sequence, time, author and op id."""

    seq: int
    time_ms: int
    author: str
    op_id: str


class Oracle:
    """The reference replica and the history checkers (see module docstring)."""

    def __init__(
        self,
        window_ms: int,
        coverage: Counter[str],
        findings: Findings,
        *,
        base: ChangeState | None = None,
        read: Callable[[Content], bytes] | None = None,
    ) -> None:
        self.state = base if base is not None else ChangeState(window_ms=window_ms)
        self.findings = findings
        self.read = read  # reads blob bytes (the simulated blob store), if any
        # (inode, tag) -> the entries that put the tag's bytes in that file (see _carry)
        self.carriers: dict[tuple[int, int], tuple[Witness, ...]] = {}
        self.op_ids: set[str] = set()
        # path -> (seq, keys of the sides there from that seq on), when they changed
        self.path_sides: dict[RelPath, list[tuple[int, frozenset[str]]]] = {}
        self.window_ms = window_ms
        self.coverage = coverage
        self.origins: dict[int, Origin] = {}
        self.writers: list[Witness] = []
        self.simple = SimpleFiles(window_ms, coverage)
        self._tag_cache: dict[str, frozenset[int]] = {}
        self._census = self._take_census()
        self._adopt_base()
        self.metadata = MetadataChecker(window_ms, coverage, self.state.tree)

    @property
    def tree(self) -> Tree:
        """The oracle's tree."""
        return self.state.tree

    def observe(self, logged: Logged) -> str:
        """Fold ``logged``, run the checkers, and return the tree hash.

        Raises:
            CheckFailedError: a write was lost, or a conflict appeared without a race,
                or a followed file's conflict state disagrees with its races.
        """
        entry = logged.entry
        # Tracked here, independently of the fold's AppliedOps, which it checks.
        duplicate = entry.op_id in self.op_ids
        self.op_ids.add(entry.op_id)
        before = self._census
        model_before = self.simple.before(logged, self.tree) if not duplicate else None
        before_hash = self.tree.hash() if duplicate else ""
        fold(self.state, logged)
        after = self._take_census()
        self._census = after
        if duplicate:
            self.coverage["dedupe_fold"] += 1
            if census_key(before) != census_key(after) or self.tree.hash() != before_hash:
                raise CheckFailedError(
                    "c:no-lost-write",
                    f"seq {logged.seq} repeats op {entry.op_id} (a retried append logged"
                    " twice) but folding it changed the tree: the op took effect twice",
                )
            return self.tree.hash()
        self._note_origins(logged)
        self._carry(logged, before, after)
        self._note_path_sides(logged.seq, after)
        self._check_side_count(logged, before, after)
        self._check_conflicts(logged, before, after)
        if model_before is not None:
            self.simple.after(logged, self.tree, model_before)
        self._cover(logged, before, after)
        self.metadata.observe(logged, self.tree)
        if isinstance(entry.op, Write | Append | Mv | Cp):
            self.writers.append(Witness(logged.seq, logged.time_ms, entry.author, entry.op_id))
        return self.tree.hash()

    def _adopt_base(self) -> None:
        """Tags in the base tree (a child change's sealed parent) were seen by everyone.

        Their carrier is a stand-in at sequence 0, which every entry has seen, and
        their origin too (they may come back from a base term through the algebra).
        """
        base = Witness(0, 0, "base", "base")
        for ino in sorted(self._census.tags):
            for tag in sorted(self._census.tags[ino]):
                self.carriers[(ino, tag)] = (base,)
        for _, value in sorted(self._census.files.values(), key=lambda item: item[0]):
            for term in value.terms():
                for tag in sorted(self._tags(term)):
                    self.origins.setdefault(tag, Origin(0, 0, "base", "base"))
        self._note_path_sides(0, self._census)

    # -- census --------------------------------------------------------------------

    def _tags(self, content: Value) -> frozenset[int]:
        if content is None:
            return frozenset()
        cached = self._tag_cache.get(content.key)
        if cached is None:
            data = content.inline_bytes()
            if data is None and self.read is not None:
                data = self.read(content)
            cached = frozenset(tags_of(data)) if data is not None else frozenset()
            self._tag_cache[content.key] = cached
        return cached

    def _take_census(self) -> Census:
        census = Census()
        for path, node in self.tree.walk():
            census.paths.add(path)
            if isinstance(node, FileNode):
                census.files[node.ino] = (path, node.value)
                census.file_paths[path] = node.ino
                census.versions[node.ino] = tuple((v.seq, v.time_ms) for v in node.versions)
                tags = frozenset().union(*map(self._tags, node.value.adds))
                if tags:
                    census.tags[node.ino] = tags
        return census

    # -- (c) no lost write ---------------------------------------------------------

    def _note_origins(self, logged: Logged) -> None:
        op = logged.entry.op
        if isinstance(op, Write | Append):
            for tag in sorted(self._tags(op.content)):
                if tag not in self.origins:
                    self.origins[tag] = Origin(
                        logged.seq, logged.time_ms, logged.entry.author, logged.entry.op_id
                    )

    def _carry(self, logged: Logged, before: Census, after: Census) -> None:
        """Follow each tag per file: check every loss, record who put it where (checker c).

        A tag's **carriers** in a file are the entries that put its bytes there (see
        `_carriers_of_new`). When an ``mv`` or ``cp`` over an existing file folds the
        destination's old value into the node now at the destination (``op.dst``, or
        the aside directory it landed in when a file stood where its parent should),
        the tags go with their carriers. Any other loss of a tag from a file must be
        justified against every carrier (`_check_lost`).
        """
        op = logged.entry.op
        inherited: dict[tuple[int, int], tuple[Witness, ...]] = {}
        for ino in sorted(before.tags):
            # A file an mv/cp replaced: the node standing where it stood took its value.
            heir = None
            if isinstance(op, Mv | Cp) and ino not in after.files:
                heir = after.file_paths.get(before.files[ino][0])
            heir_tags = after.tags.get(heir, frozenset()) if heir is not None else frozenset()
            for tag in sorted(before.tags[ino] - after.tags.get(ino, frozenset())):
                carriers = self.carriers.pop((ino, tag))
                if heir is not None and tag in heir_tags:
                    inherited[(heir, tag)] = inherited.get((heir, tag), ()) + carriers
                elif not _cancelled_by_incoming(
                    op, before, ino, tag, self._tags
                ) and not self._seen_there(logged, before, ino, tag):
                    self._check_lost(logged, tag, carriers, before.versions.get(ino, ()))
        copied = _copied_tags(op, before)
        for ino in sorted(after.tags):
            for tag in sorted(after.tags[ino] - before.tags.get(ino, frozenset())):
                moved = inherited.pop((ino, tag), None)
                self.carriers[(ino, tag)] = (
                    moved if moved is not None else self._carriers_of_new(logged, tag, copied)
                )
        for key in sorted(inherited):
            self.carriers[key] = self.carriers[key] + inherited[key]

    def _carriers_of_new(
        self, logged: Logged, tag: int, copied: frozenset[int]
    ) -> tuple[Witness, ...]:
        """Who put ``tag`` in a file that did not hold it, when it was not moved there.

        The entry itself when its bytes hold the tag (a write or append) or when it
        copied a file holding it (a copy is the copier's write). Otherwise the merge
        algebra turned a base into a side (``current + (new - seen)`` adds the bases
        of ``seen``): those bytes are the tag's original write, so that is the carrier.
        """
        entry, op = logged.entry, logged.entry.op
        own = isinstance(op, Write | Append) and tag in self._tags(op.content)
        if own or tag in copied:
            return (Witness(logged.seq, logged.time_ms, entry.author, entry.op_id),)
        origin = self.origins[tag]
        return (Witness(origin.seq, origin.time_ms, origin.author, origin.op_id),)

    def _note_path_sides(self, seq: int, after: Census) -> None:
        for path in sorted(self.path_sides.keys() - after.file_paths.keys()):
            history = self.path_sides[path]
            if history[-1][1]:
                history.append((seq, frozenset()))  # no file there any more
        for path in sorted(after.file_paths):
            keys = frozenset(merge_term_key(v) for v in after.files[after.file_paths[path]][1].adds)
            history = self.path_sides.setdefault(path, [])
            if not history or history[-1][1] != keys:
                history.append((seq, keys))

    def _seen_there(self, logged: Logged, before: Census, ino: int, tag: int) -> bool:
        """Whether the file's sides holding ``tag`` were sides there at seq ``seen``.

        "There" is the file's path, and for an ``mv``/``cp`` also its destination
        (where the moved value is written). Then the entry replaced bytes its author
        had seen at that very path (the same content, whoever wrote it again since):
        a sequential edit, as the fold's algebra treats it (the base it had seen
        cancels them).
        """
        path, value = before.files[ino]
        keys = {merge_term_key(v) for v in value.adds if tag in self._tags(v)}
        op, seen = logged.entry.op, logged.entry.seen
        places = [path, op.dst] if isinstance(op, Mv | Cp) else [path]
        return bool(keys) and any(keys <= self._sides_at(place, seen) for place in places)

    def _sides_at(self, path: RelPath, seq: int) -> frozenset[str]:
        then: frozenset[str] = frozenset()
        for at_seq, sides in self.path_sides.get(path, ()):
            if at_seq > seq:
                break
            then = sides
        return then

    def _check_lost(
        self,
        logged: Logged,
        tag: int,
        carriers: tuple[Witness, ...],
        versions: tuple[tuple[int, int], ...] = (),
    ) -> None:
        """Justify the loss of ``tag`` against each carrier (docs/simulations.md, rule 1).

        ``versions`` are the (seq, time) the file remembered before the entry: a carrier
        it no longer remembers, with a later version stamped more than the window after
        it, was forgotten and races nothing, even when the server's clock stepped back
        since and stamps this entry within the window of it (docs/conflicts.md).
        """
        entry = logged.entry
        for carrier in carriers:
            dt_ms = abs(logged.time_ms - carrier.time_ms)
            if entry.author == carrier.author or entry.seen >= carrier.seq:
                continue
            if dt_ms > self.window_ms:
                continue
            forgotten = all(seq != carrier.seq for seq, _ in versions) and any(
                time_ms - carrier.time_ms > self.window_ms for _, time_ms in versions
            )
            if forgotten:
                continue
            origin = self.origins[tag]
            via = (
                ""
                if carrier.op_id == origin.op_id
                else f", there by {carrier.op_id} at seq {carrier.seq}"
            )
            raise CheckFailedError(
                "c:no-lost-write",
                f"the bytes of {origin.op_id} (seq {origin.seq}{via})"
                f" vanished from a file at seq {logged.seq}: {describe(entry)} by"
                f" {entry.author}, which had seen only up to seq {entry.seen}, {dt_ms} ms"
                f" later (window {self.window_ms} ms)",
            )

    # -- (d) conflicts only from races ---------------------------------------------

    def _witness(self, logged: Logged) -> Witness | None:
        """Return an earlier effective write this entry raced, if any."""
        entry = logged.entry
        for w in reversed(self.writers):
            if w.seq <= entry.seen:
                break
            if w.author != entry.author and abs(logged.time_ms - w.time_ms) <= self.window_ms:
                return w
        return None

    def _check_conflicts(self, logged: Logged, before: Census, after: Census) -> None:
        op = logged.entry.op
        for ino in sorted(after.files):
            path, value = after.files[ino]
            if value.is_resolved():
                continue
            old = before.files.get(ino)
            if old is None and isinstance(op, Cp):
                continue  # a copy of a conflict
            if old is not None and not old[1].is_resolved() and len(value.adds) <= len(old[1].adds):
                continue  # not more conflicted than before
            if _written_back(op, before, path, value):
                continue  # rule 6: a conflict block written back keeps the conflict
            if isinstance(op, Write | Mv | Cp) and self._witness(logged) is not None:
                continue
            raise CheckFailedError(
                "d:conflict-iff-race",
                f"seq {logged.seq} ({describe(logged.entry)} by {logged.entry.author}, seen"
                f" {logged.entry.seen}) made {to_str(path)!r} a conflict of {len(value.adds)}"
                " sides without racing any write",
            )

    def _check_side_count(self, logged: Logged, before: Census, after: Census) -> None:
        """Checker d's bound: how many sides one entry may give a file.

        A write adds at most one side (rule 5), an append none (rule 8), an ``mv``/``cp``
        onto a file at most the moved value's sides (rule 11); nothing else adds any.
        More means terms came back (bug 2: a stale writer re-added replaced contents).
        """
        op = logged.entry.op
        moved_sides = 0
        if isinstance(op, Mv | Cp):
            moved_sides = max(
                (
                    len(before.files[ino][1].adds)
                    for path, ino in before.file_paths.items()
                    if is_ancestor(op.src, path)
                ),
                default=0,
            )
        for ino in sorted(after.files):
            path, value = after.files[ino]
            old = before.files.get(ino)
            sides = len(old[1].adds) if old is not None else 0
            if isinstance(op, Write):
                limit = sides + 1
            elif isinstance(op, Append):
                limit = max(sides, 1)
            elif isinstance(op, Mv | Cp):
                # Onto the file that stood where it landed (op.dst, or an aside of it).
                prior = before.file_paths.get(path)
                landed_on = prior is not None and prior != ino
                dst_sides = len(before.files[prior][1].adds) if landed_on else 0
                limit = (sides if old is not None else moved_sides) + dst_sides
            else:
                limit = sides
            if len(value.adds) > limit:
                raise CheckFailedError(
                    "d:conflict-iff-race",
                    f"after seq {logged.seq} ({describe(logged.entry)} by {logged.entry.author},"
                    f" seen {logged.entry.seen}) {to_str(path)!r} has {len(value.adds)} sides,"
                    f" more than the {limit} this entry may leave (it had {sides})",
                )

    # -- coverage ------------------------------------------------------------------

    def _cover(self, logged: Logged, before: Census, after: Census) -> None:
        op = logged.entry.op
        for ino in sorted(after.files):
            value = after.files[ino][1]
            old = before.files.get(ino)
            if not value.is_resolved():
                if len(value.adds) >= 3:
                    self.coverage["three_sided"] += 1
                if any(v is not None and v.blob_digests() for v in value.adds):
                    self.coverage["blob_conflict"] += 1
                if old is None or len(value.adds) > len(old[1].adds):
                    self.coverage["conflict_created"] += 1
            elif old is not None and not old[1].is_resolved() and isinstance(op, Write):
                self.coverage["conflict_resolved"] += 1
        new_paths = after.paths - before.paths
        if any(_ASIDE_RE.search(p[-1]) for p in new_paths if p and p not in touched_paths(op)):
            self.coverage["aside"] += 1
        if any(len(p) >= DEEP_PATH for p in new_paths):
            self.coverage["deep_tree"] += 1
        if new_paths:
            entries = Counter(p[:-1] for p in after.paths if p)
            if any(entries[p[:-1]] >= WIDE_DIR for p in new_paths):
                self.coverage["wide_dir"] += 1
        if isinstance(op, Rm) and op.path in after.paths:
            self.coverage["add_wins"] += 1
        if isinstance(op, Write | Append) and op.path[:-1] not in before.paths:
            self.coverage["add_wins"] += 1


def _written_back(op: Op, before: Census, path: RelPath, value: Merge) -> bool:
    """Whether ``op`` wrote a conflict block over the conflict at ``path`` (rule 6).

    A write, or an ``mv``/``cp`` of a file (an editor saving through a rename), whose
    bytes are a block that parses with the destination's number of sides keeps the
    conflict with the sides it holds: no race is needed.
    """
    if isinstance(op, Write):
        incoming: Value = op.content
        dst = op.path
    elif isinstance(op, Mv | Cp) and op.src in before.file_paths:
        src_value = before.files[before.file_paths[op.src]][1]
        if not src_value.is_resolved():
            return False
        incoming, dst = src_value.adds[0], op.dst
    else:
        return False
    if dst != path or dst not in before.file_paths or incoming is None:
        return False
    old = before.files[before.file_paths[dst]][1]
    data = incoming.inline_bytes()
    return (
        not old.is_resolved()
        and data is not None
        and len(value.adds) <= len(old.adds)
        and conflicts.parse(data, len(old.adds)) is not None
    )


def _copied_tags(op: Op, before: Census) -> frozenset[int]:
    """The tags in the sides of the files a ``cp`` copies (none for other ops)."""
    if not isinstance(op, Cp):
        return frozenset()
    return frozenset().union(
        *(
            before.tags.get(ino, frozenset())
            for path, ino in before.file_paths.items()
            if is_ancestor(op.src, path)
        )
    )


def _cancelled_by_incoming(
    op: Op, before: Census, ino: int, tag: int, tags_of_term: Callable[[Value], frozenset[int]]
) -> bool:
    """Whether an ``mv``/``cp`` over a file cancelled the tag's sides with its own bases.

    Moving or copying a value onto a file adds ``moved - seen`` to it (rule 11); the
    bases of the moved value are contents someone replaced where they were, and
    they cancel equal sides at the destination (jj's algebra: the same content,
    replaced once). Such a loss is that earlier replacement, not this entry's.
    """
    if not isinstance(op, Mv | Cp) or op.src not in before.file_paths:
        return False
    incoming = before.files[before.file_paths[op.src]][1]
    bases = {merge_term_key(v) for v in incoming.removes}
    sides = [v for v in before.files[ino][1].adds if tag in tags_of_term(v)]
    return bool(sides) and all(merge_term_key(v) in bases for v in sides)


def merge_term_key(value: Value) -> str:
    """The identity of one term of a merge."""
    return "-" if value is None else value.key


def census_key(census: Census) -> list[tuple[int, RelPath, str]]:
    """A comparable form of a census (inode, path, value)."""
    return [(ino, path, merge_key(value)) for ino, (path, value) in sorted(census.files.items())]


def describe(entry: Entry) -> str:
    """Render an entry's op briefly: kind and paths."""
    return describe_op(entry.op)


def describe_op(op: Op) -> str:
    """Render an op briefly: kind and paths."""
    paths = " ".join(repr(to_str(p)) for p in touched_paths(op))
    return f"{type(op).__name__.lower()} {paths}"
