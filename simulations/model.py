"""A reference model of one file's races, written from docs/conflicts.md (checker d, exact part).

The model follows a file from its creation for as long as only writes and appends
to its own path can change it: an ``rm``, ``mv`` or ``cp`` naming the path or one of
its ancestors stops following it (and everything below); a later creation at the
path starts afresh. Mkdir, symlink, chmod and utimes cannot change a file's value
(a node of another kind goes aside), so they do not stop it. Paths with a
component like ``x.conflict-1`` are not followed (see `_followable`).

For each write ``E`` to a followed file the model decides, from the log alone:

- the **witnesses**: earlier writes or appends to the file by another author,
  after ``E.seen``, stamped within the window of ``E`` (a write that left the
  value as it was, such as a conflict block written back unchanged, counts too);
- ``S``, the value the file had once ``E.seen`` was folded, and ``X``, its value
  just before ``E``;
- ``E`` **raced** when it has a witness and ``S != X`` (it had not seen the value
  it overwrites).

**Forgetting** (docs/conflicts.md, "Vocabulary"): a file remembers the versions
stamped within the window of its newest one, the newest older one, and, once older
ones are gone, a stub of the one before (sequence, time and author, but not the value
before it); at most `MAX_VERSIONS`. The model keeps the same list per followed file
(`_File.kept`). Only remembered versions can be witnesses (after a backward clock
jump a forgotten version may be stamped within the window again), and when ``E.seen``
is older than the stub, ``S`` is forgotten: the fold's base is then empty (never a
guess), which cancels nothing, so ``E`` raced whenever it has a witness, even if the
file holds again exactly what ``E`` had seen (a conflict block written back, or a
forward clock jump that puts every earlier version outside the window at once).

Then: raced => the file is a conflict after ``E`` with ``E``'s bytes as a side,
unless ``X`` already is exactly ``E``'s bytes (equal sides are one) or has them as a
base (they were replaced by someone who had seen them: jj's algebra cancels them);
not raced and not a conflict block written back => the file holds exactly ``E``'s
bytes.
An append leaves exactly ``X`` with its bytes appended to every term.

"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from engine.content import EMPTY
from engine.merge import Merge
from engine.ops import Append, Cp, Logged, Mv, Rm, Write, touched_paths
from engine.paths import RelPath, is_ancestor, to_str
from engine.tree import MAX_VERSIONS, DirNode, FileNode, Tree, merge_key
from simulations.failure import CheckFailedError

_CHECKER = "d:conflict-iff-race"
_ASIDE_RE = re.compile(r"\.conflict-\d+$")


@dataclass(frozen=True, slots=True)
class _Change:
    seq: int
    time_ms: int
    author: str
    changed: bool
    value: Merge


@dataclass(slots=True)
class _File:
    history: list[_Change]
    value: Merge | None
    # (seq, time) of the versions the fold remembers; the first is a stub once `floor`
    # is set: the value at a sequence before ``floor`` is forgotten.
    kept: list[tuple[int, int]] = field(default_factory=list)
    floor: int = 0

    def remember(self, seq: int, time_ms: int, window_ms: int) -> None:
        """Record a version; forget what docs/conflicts.md says a file forgets."""
        kept = self.kept
        kept.append((seq, time_ms))
        cutoff = time_ms - window_ms
        older = 0  # index of the newest version stamped before the window
        while older + 1 < len(kept) and kept[older + 1][1] < cutoff:
            older += 1
        older = max(older, len(kept) - MAX_VERSIONS)
        if older > 0:
            del kept[: older - 1]  # the one before the newest older one stays, as a stub
            self.floor = kept[0][0]


@dataclass(frozen=True, slots=True)
class Pending:
    """What `SimpleFiles.before` learned about a followed file before an entry's fold."""

    path: RelPath
    file: _File


def _key(value: Merge | None) -> str:
    return "absent" if value is None else merge_key(value)


def _followable(tree: Tree, path: RelPath) -> bool:
    """Whether the model can follow a file created at ``path`` now.

    Every existing ancestor must be a directory (missing ones get created), and no
    component may look like an aside name: a write below a file ``x`` lands in the
    directory ``x.conflict-<n>`` (fold's kinds-clash rule), so paths there can change
    through ops that name other paths.
    """
    if any(_ASIDE_RE.search(name) for name in path):
        return False
    for i in range(1, len(path)):
        node = tree.lookup(path[:i])
        if node is None:
            return True
        if not isinstance(node, DirNode):
            return False
    return True


class SimpleFiles:
    """The files the model follows (see module docstring)."""

    def __init__(self, window_ms: int, coverage: Counter[str]) -> None:
        self.window_ms = window_ms
        self.coverage = coverage
        self.files: dict[RelPath, _File] = {}
        self.checked = 0

    def before(self, logged: Logged, tree: Tree) -> Pending | None:
        """Look at an effective entry before the oracle folds it; return what to check after."""
        op = logged.entry.op
        if isinstance(op, Rm | Mv | Cp):
            for named in touched_paths(op):
                for path in [p for p in self.files if is_ancestor(named, p)]:
                    del self.files[path]
            return None
        if not isinstance(op, Write | Append):
            return None
        node = tree.lookup(op.path)
        followed = self.files.get(op.path)
        if followed is None:
            if node is not None or not _followable(tree, op.path):
                return None
            followed = _File([], None)
            self.files[op.path] = followed
        elif not isinstance(node, FileNode) or _key(node.value) != _key(followed.value):
            raise CheckFailedError(
                _CHECKER,
                f"{to_str(op.path)!r} changed although no entry since seq"
                f" {followed.history[-1].seq} could change it",
            )
        return Pending(op.path, followed)

    def after(self, logged: Logged, tree: Tree, pending: Pending) -> None:
        """Check the oracle's result of the entry against the model, then record it."""
        node = tree.lookup(pending.path)
        if not isinstance(node, FileNode):
            raise CheckFailedError(
                _CHECKER, f"{to_str(pending.path)!r} is not a file after a write"
            )
        entry, followed = logged.entry, pending.file
        op = entry.op
        assert isinstance(op, Write | Append)
        before, after = followed.value, node.value
        if isinstance(op, Append):
            expected = (
                Merge.resolved(op.content)
                if before is None
                else before.map(lambda v: (v if v is not None else EMPTY).concat(op.content))
            )
            if _key(after) != _key(expected):
                raise CheckFailedError(
                    _CHECKER,
                    f"append {entry.op_id} at seq {logged.seq} to {to_str(pending.path)!r}"
                    " did not leave the file's value with its bytes appended to every term",
                )
        elif before is not None:
            self._check_write(logged, op, before, after, followed)
        changed = before is None or _key(after) != _key(before)
        followed.history.append(_Change(logged.seq, logged.time_ms, entry.author, changed, after))
        followed.remember(logged.seq, logged.time_ms, self.window_ms)
        followed.value = after

    def _check_write(
        self, logged: Logged, op: Write, before: Merge, after: Merge, followed: _File
    ) -> None:
        entry = logged.entry
        others = [c for c in followed.history if c.seq > entry.seen and c.author != entry.author]
        remembered = {seq for seq, _ in followed.kept}
        witnesses = [
            c
            for c in others
            if c.seq in remembered and abs(logged.time_ms - c.time_ms) <= self.window_ms
        ]
        seen_value = None
        for change in followed.history:
            if change.seq <= entry.seen:
                seen_value = change.value
        forgotten = entry.seen < followed.floor  # the fold's base is empty (module docstring)
        raced = bool(witnesses) and (forgotten or _key(seen_value) != _key(before))
        # Rule 6: the writer's mount logged the block's terms (`engine.driver.writeback`).
        written_back = not before.is_resolved() and len(op.terms) == len(before.terms())
        where = f"write {entry.op_id} at seq {logged.seq} to {to_str(op.path)!r}"
        self.checked += 1
        if (
            raced
            and before != Merge.resolved(op.content)
            and op.content not in before.removes
            and (after.is_resolved() or op.content not in after.adds)
        ):
            w = witnesses[-1]
            raise CheckFailedError(
                _CHECKER,
                f"{where} raced seq {w.seq} by {w.author} ({abs(logged.time_ms - w.time_ms)} ms"
                f" apart, seen {entry.seen}) but the file is not a conflict with its bytes as a"
                f" side ({len(after.adds)} sides)",
            )
        if not raced and not written_back and after != Merge.resolved(op.content):
            raise CheckFailedError(
                _CHECKER,
                f"{where} raced no write (seen {entry.seen}) but the file does not hold exactly"
                f" its bytes ({len(after.adds)} sides)",
            )
        if not raced and others:
            self.coverage["race_outside_window"] += 1
        if written_back and not raced and not after.is_resolved():
            self.coverage["writeback_kept"] += 1
