"""The fold: apply one logged entry to a change's state and say what changed.

``fold(state, logged) -> events`` is deterministic: it reads nothing but its
arguments, so every replica that folds the same log prefix holds the same tree
(same `Tree.hash`), and replaying a log from scratch gives the live result. It
never raises for concurrent divergence; the rules (docs/conflicts.md) are:

- **Race.** A change to a file races when the file has a version, within the race
  window of the entry's sequencer time, written by another author after the
  entry's ``seen``. A racing write extends the file's value with ``new - seen``
  (jj's merge algebra), so every side survives; a write by an author who had seen
  every other recent version replaces the value (resolving a conflict). When the
  value the author had seen is no longer known (versions dropped, or the file was
  moved to this path after ``seen``) the base is empty, so it cancels no side.
- **A move changes what it carries.** ``mv`` records a version by the mover on every
  file and symlink it carries, so a write or rm that had not seen the move races it;
  a file renamed over another keeps its own recent versions too, so a change the
  mover had not seen still races what comes after.
- **Write-back.** A sequential write that carries a conflict's terms (`Write.terms`,
  logged by the writer's mount from the block it wrote) over a conflict of as many
  terms keeps the conflict with those terms; the fold never parses bytes (entries of
  codec version 1 excepted, `Entry.legacy_writeback`), so where the bytes travel
  (inline or blobs) does not change the result.
- **Append** never conflicts: the bytes are appended to every term.
- **Add wins.** A write whose parent was removed recreates the parent; an rm (file
  or ``-r``) keeps files and symlinks another author wrote within the window that
  it had not seen.
- **Kinds clash.** When a node must go where a node of another kind is (a file
  where a directory is, a directory through a file), the existing node keeps its
  name and the incoming one is placed at ``<name>.conflict-<n>``.
- **Metadata** is folded per key with the race rule above: a set of a key that
  another author set within the window after the entry's ``seen`` extends the key's
  value with ``new - seen`` (both values survive as a conflict, which reads as a jj
  block); a set by an author who had seen it replaces it. Sets of different keys
  never interact. Deleting a key (a None value, or ``clear``) is add-wins like rm:
  it keeps a value another author set within the window that it had not seen. A
  deleted key leaves no trace, so a set racing a delete is simply applied. Metadata
  rides with its node: mv carries it, cp copies it (each key with a version by the
  copier), rm removes it.
- Ops on paths that no longer exist (chmod, utimes, mv, cp, rm, set metadata) do
  nothing; a move of a directory into its own subtree does nothing.

The tree is mutated in place (see engine/tree.py); the returned events name every
path whose observable state changed, with ``recursive`` for subtrees. Folding an entry
is all or nothing: every change it makes to a node that existed before it is journaled,
and if applying it raises, the journal is undone and the state (sequence, applied ops,
tree, versions, inode counter) is as it was before the entry. Every walk of a subtree
(rm -r, mv, cp -r) uses an explicit stack, so no tree is too deep to fold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine import conflicts
from engine.content import EMPTY, Content
from engine.merge import Merge
from engine.ops import (
    DEFAULT_DIR_MODE,
    MODE_MASK,
    SYMLINK_MODE,
    Append,
    Chmod,
    Cp,
    Entry,
    Logged,
    Mkdir,
    Mv,
    Rm,
    SetMetadata,
    Symlink,
    Utimes,
    Write,
)
from engine.paths import RelPath, is_ancestor
from engine.tree import (
    MAX_VERSIONS,
    AnyNode,
    DirNode,
    FileNode,
    Meta,
    MetaSlot,
    SymlinkNode,
    Tree,
    Version,
    merge_key,
)

DEFAULT_WINDOW_MS = 1000
ABSENT = Merge.resolved(None)
#: In the journal: the directory had no child of that name.
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Event:
    """A path whose observable state changed; ``recursive`` when descendants may have too."""

    path: RelPath
    recursive: bool = False


#: Counters above an author's watermark `AppliedOps` keeps before it gives up a gap.
SPARSE_OPS_KEPT = 4096


class AppliedOps:
    """The op ids folded so far, per author: a contiguous watermark plus a sparse set.

    A retried append that escaped the transport's dedupe is skipped by the fold, so
    an op takes effect once however often it is logged.

    The sparse set holds at most `SPARSE_OPS_KEPT` counters per author: past that the
    oldest gap is given up (the watermark moves over it). A counter that never reached
    the log (a write that failed for good, or the first ops of a mount that switched
    changes: its counter keeps growing across changes) would otherwise keep every
    later op of its author in the set, and in every snapshot, forever. An op that fills
    a gap given up on would be skipped; it would have to be logged after thousands of
    later ops of its own author, which no writer does (each appends in order, retrying
    an entry before the next).
    """

    def __init__(self) -> None:
        self.watermark: dict[str, int] = {}
        self.sparse: dict[str, set[int]] = {}

    def contains(self, author: str, counter: int) -> bool:
        """Return whether the op was already folded."""
        return counter <= self.watermark.get(author, 0) or counter in self.sparse.get(author, ())

    def add(self, author: str, counter: int) -> None:
        """Record the op as folded."""
        extra = self.sparse.setdefault(author, set())
        extra.add(counter)
        mark = self.watermark.get(author, 0)
        if len(extra) > SPARSE_OPS_KEPT:
            oldest = min(extra)  # give up the gap below the oldest counter kept
            extra.discard(oldest)
            mark = max(mark, oldest)
        while mark + 1 in extra:
            mark += 1
            extra.discard(mark)
        self.watermark[author] = mark
        if not extra:
            del self.sparse[author]


@dataclass
class ChangeState:
    """Everything a replica of one change holds: tree, last folded sequence, applied ops."""

    tree: Tree = field(default_factory=Tree)
    seq: int = 0
    applied: AppliedOps = field(default_factory=AppliedOps)
    window_ms: int = DEFAULT_WINDOW_MS


def fold(state: ChangeState, logged: Logged) -> list[Event]:
    """Apply ``logged`` to ``state`` in place and return the events, in order.

    All or nothing: if applying the entry raises, ``state`` is exactly as it was
    before (sequence, applied ops, tree) and the exception propagates.
    """
    assert logged.seq > state.seq, f"fold out of order: {logged.seq} after {state.seq}"
    entry = logged.entry
    if state.applied.contains(entry.author, entry.counter):
        state.seq = logged.seq
        return []
    folder = _Folder(state.tree, logged, state.window_ms)
    try:
        folder.apply()
    except BaseException:
        folder.rollback()
        raise
    state.applied.add(entry.author, entry.counter)
    state.seq = logged.seq
    return folder.events


class _Folder:
    """Applies one entry; a fresh instance per entry keeps the fold re-entrant.

    Every change to a node that existed before the entry goes through `_set`,
    `_put_child` or `_del_child`, which journal the value they replace, so `rollback`
    can undo the entry. Nodes the entry creates are changed directly: until attached
    (a journaled change) nothing reaches them.
    """

    def __init__(self, tree: Tree, logged: Logged, window_ms: int) -> None:
        self.tree = tree
        self.seq = logged.seq
        self.time_ms = logged.time_ms
        self.entry: Entry = logged.entry
        self.window_ms = window_ms
        self.events: list[Event] = []
        self._seen_events: set[Event] = set()
        #: (node, attribute, old value) or (children dict, name, old child or _MISSING).
        self._undo: list[tuple[Any, str, Any]] = []
        self._next_ino = tree.next_ino

    # -- the journal -----------------------------------------------------------------

    def _set(self, node: AnyNode, name: str, value: object) -> None:
        self._undo.append((node, name, getattr(node, name)))
        setattr(node, name, value)

    def _put_child(self, parent: DirNode, name: str, node: AnyNode) -> None:
        children = parent.children
        self._undo.append((children, name, children.get(name, _MISSING)))
        children[name] = node

    def _del_child(self, parent: DirNode, name: str) -> None:
        children = parent.children
        self._undo.append((children, name, children[name]))
        del children[name]

    def rollback(self) -> None:
        """Undo every journaled change, newest first: the tree is as before the entry.

        A child removed and put back goes to the end of its directory's dict; nothing
        reads that order (every walk, hash and snapshot sorts names).
        """
        for target, name, old in reversed(self._undo):
            if isinstance(target, dict):
                if old is _MISSING:
                    del target[name]
                else:
                    target[name] = old
            else:
                setattr(target, name, old)
        self._undo.clear()
        self.tree.next_ino = self._next_ino

    def apply(self) -> None:
        op = self.entry.op
        if isinstance(op, Write | Append):
            self._write(op)
        elif isinstance(op, Mkdir):
            self._mkdir(op)
        elif isinstance(op, Rm):
            self._rm(op)
        elif isinstance(op, Mv | Cp):
            self._move_or_copy(op)
        elif isinstance(op, Chmod):
            node = self.tree.lookup(op.path)
            mode = op.mode & MODE_MASK
            if node is not None and not isinstance(node, SymlinkNode) and node.mode != mode:
                self._set(node, "mode", mode)
                self._event(op.path)
        elif isinstance(op, SetMetadata):
            self._set_metadata(op)
        elif isinstance(op, Utimes):
            node = self.tree.lookup(op.path)
            times = (op.atime_ms, op.mtime_ms)
            if node is not None and (node.atime_ms, node.mtime_ms) != times:
                self._set(node, "atime_ms", op.atime_ms)
                self._set(node, "mtime_ms", op.mtime_ms)
                self._event(op.path)
        else:
            assert isinstance(op, Symlink)
            parent, parent_path = self._ensure_dir(op.path[:-1])
            node = SymlinkNode(
                ino=self.tree.new_ino(),
                mode=SYMLINK_MODE,
                mtime_ms=self.time_ms,
                atime_ms=self.time_ms,
                target=op.target,
            )
            self._record(node, None, fresh=True)
            self._place(parent, parent_path, op.path[-1], node)

    def _set_metadata(self, op: SetMetadata) -> None:
        """Set and delete keys of the node at ``op.path`` (rule: Metadata)."""
        node = self.tree.lookup(op.path)
        if node is None:
            return
        old: Meta = node.meta or {}
        meta = dict(old)
        items = dict(op.items)
        if op.clear:
            for key in old:
                items.setdefault(key, None)
        for key in sorted(items):
            value = items[key]
            new = Merge.resolved(None if value is None else Content.of(value.encode("utf-8")))
            slot = meta.get(key)
            if slot is None:
                if value is not None:
                    meta[key] = MetaSlot(new, (self._version(None),))
                continue
            if any(map(self._unseen_recent, slot.versions)):
                if value is None:
                    continue  # add wins: keep the value this author had not seen
                seen = slot.value_at(self.entry.seen)
                merged = slot.value.plus_diff(new, seen if seen is not None else ABSENT)
            else:
                merged = new
            if merged.is_resolved() and merged.adds[0] is None:
                del meta[key]
                continue
            versions = _pruned(
                [*slot.versions, self._version(slot.value)], self.time_ms, self.window_ms
            )
            meta[key] = MetaSlot(merged, tuple(versions))
        if meta != old:
            self._set(node, "meta", meta or None)
        if _meta_values(meta) != _meta_values(old):
            self._event(op.path)

    def _version(self, before: Merge | None) -> Version:
        return Version(self.seq, self.time_ms, self.entry.author, before)

    # -- helpers -------------------------------------------------------------------

    def _event(self, path: RelPath, *, recursive: bool = False) -> None:
        event = Event(path, recursive)
        seen = self._seen_events
        known = len(seen)
        seen.add(event)  # hashes the path once (a deep path is long)
        if len(seen) > known:
            self.events.append(event)

    def _drop_event(self, event: Event) -> None:
        if event in self._seen_events:
            self._seen_events.discard(event)
            self.events.remove(event)

    def _unseen_recent(self, version: Version) -> bool:
        """Whether ``version`` is another author's, unseen by this entry, within the window."""
        return (
            version.seq > self.entry.seen
            and version.author != self.entry.author
            and abs(self.time_ms - version.time_ms) <= self.window_ms
        )

    def _protected(self, node: AnyNode) -> bool:
        """Whether a removal by this entry must keep ``node`` (add wins)."""
        return not isinstance(node, DirNode) and any(map(self._unseen_recent, node.versions))

    def _record(self, node: AnyNode, before: Merge | None, *, fresh: bool = False) -> None:
        """Add this entry's version to ``node`` and drop what races no longer need.

        Kept: the versions inside the window (at most `MAX_VERSIONS`) and the newest
        one before it. The newest dropped version stays as a stub without its value,
        so a racing author whose ``seen`` is older gets an empty base, not a guess.
        The node gets a new list (the old one is journaled unless ``fresh``: the node
        was created by this entry).
        """
        versions = [*node.versions, Version(self.seq, self.time_ms, self.entry.author, before)]
        cutoff = self.time_ms - self.window_ms
        drop = 0
        while drop + 1 < len(versions) and versions[drop + 1].time_ms < cutoff:
            drop += 1
        drop = max(drop, len(versions) - MAX_VERSIONS)
        if drop > 0:
            del versions[: drop - 1]
            versions[0] = _stub(versions[0])
        if fresh:
            node.versions = versions
        else:
            self._set(node, "versions", versions)

    def _record_move(self, node: AnyNode) -> None:
        """Record this move on every file and symlink ``node`` carries to a new path.

        Whoever had not seen the move had seen nothing of them at the new path, so
        their values before the move are forgotten (an empty base for such a racer);
        their sequences, times and authors stay, so a change the mover had not seen
        still races. Walked with an explicit stack, in sorted pre-order.
        """
        stack = [node]
        while stack:
            current = stack.pop()
            if isinstance(current, DirNode):
                children = current.children
                stack.extend(children[name] for name in sorted(children, reverse=True))
                continue
            self._set(current, "versions", list(map(_stub, current.versions)))
            self._record(current, None)

    def _new_dir(self, mode: int = DEFAULT_DIR_MODE) -> DirNode:
        node = DirNode(
            ino=self.tree.new_ino(),
            mode=mode & MODE_MASK,
            mtime_ms=self.time_ms,
            atime_ms=self.time_ms,
        )
        self._record(node, None, fresh=True)
        return node

    def _ensure_dir(self, path: RelPath) -> tuple[DirNode, RelPath]:
        """Return the directory at ``path``, creating what is missing (add wins).

        A non-directory in the way keeps its name; the directory goes aside. The path
        walked is ``path`` itself until a directory goes aside (``actual`` then holds
        it), so a deep path costs no copy per level.
        """
        node = self.tree.root
        actual: list[str] | None = None
        for depth, name in enumerate(path, 1):
            child = node.children.get(name)
            if child is not None and not isinstance(child, DirNode):
                name = _aside_name(node, name, want_dir=True)
                child = node.children.get(name)
                if actual is None:
                    actual = list(path[: depth - 1])
            if actual is not None:
                actual.append(name)
            if child is None:
                child = self._new_dir()
                self._put_child(node, name, child)
                self._event(path[:depth] if actual is None else tuple(actual))
            assert isinstance(child, DirNode)
            node = child
        return node, path if actual is None else tuple(actual)

    def _place(self, parent: DirNode, parent_path: RelPath, name: str, node: AnyNode) -> RelPath:
        """Attach ``node`` as ``name``, or aside if something already holds the name."""
        if name in parent.children:
            name = _aside_name(parent, name, want_dir=False)
        self._put_child(parent, name, node)
        path = (*parent_path, name)
        self._event(path, recursive=isinstance(node, DirNode))
        return path

    def _set_value(
        self,
        node: FileNode,
        new: Merge,
        path: RelPath,
        *,
        replaced: bool = False,
        terms: tuple[Content, ...] = (),
    ) -> None:
        """Give ``node`` the value ``new``, as a conflict side if it races (rule: Race)."""
        before, before_mtime_ms = node.value, node.mtime_ms
        if any(map(self._unseen_recent, node.versions)):
            seen = node.value_at(self.entry.seen)
            value = before.plus_diff(new, seen if seen is not None else ABSENT)
            if new.is_resolved():
                if len(value.adds) > len(before.adds) + 1:
                    # The terms this writer saw are gone from the value (an append or
                    # a copy rewrote them), so nothing cancelled: re-adding them as
                    # sides would bring replaced contents back. A racing write adds one.
                    value = before.plus_diff(new, ABSENT)
            elif seen is None or len(value.adds) > len(before.adds) + len(new.adds):
                # A conflict moved or copied here, racing what the mover had not seen
                # or can no longer cancel: its sides join the file's, each over an
                # empty base, except those the file holds (the same writes, seen
                # through a copy of this file).
                value = _join(before, new)
            self._set(node, "value", value)
        elif self.entry.legacy_writeback:
            self._set(node, "value", _edit_v1(before, new))
        else:
            self._set(node, "value", _written_back(before, new, terms))
        self._set(node, "mtime_ms", self.time_ms)
        self._record(node, before)
        # ``replaced``: another node now stands at ``path`` (a rename or copy over a
        # file), which is a change whatever its value.
        changed = merge_key(node.value) != merge_key(before) or node.mtime_ms != before_mtime_ms
        if replaced or changed:
            self._event(path)

    # -- ops -----------------------------------------------------------------------

    def _write(self, op: Write | Append) -> None:
        parent, parent_path = self._ensure_dir(op.path[:-1])
        name = op.path[-1]
        existing = parent.children.get(name)
        if isinstance(existing, FileNode):
            path = (*parent_path, name)
            if isinstance(op, Write):
                self._set_value(existing, Merge.resolved(op.content), path, terms=op.terms)
            else:
                before = existing.value
                self._set(existing, "value", before.map(lambda v: _concat(v, op.content)))
                self._set(existing, "mtime_ms", self.time_ms)
                self._record(existing, before)
                self._event(path)
            return
        node = FileNode(
            ino=self.tree.new_ino(),
            mode=op.mode & MODE_MASK,
            mtime_ms=self.time_ms,
            atime_ms=self.time_ms,
            value=Merge.resolved(op.content),
        )
        self._record(node, None, fresh=True)
        self._place(parent, parent_path, name, node)

    def _mkdir(self, op: Mkdir) -> None:
        if not op.path:
            return
        parent, parent_path = self._ensure_dir(op.path[:-1])
        name = op.path[-1]
        if isinstance(parent.children.get(name), DirNode):
            return
        self._place(parent, parent_path, name, self._new_dir(op.mode))

    def _rm(self, op: Rm) -> None:
        parent = self.tree.parent_of(op.path) if op.path else None
        node = parent.children.get(op.path[-1]) if parent is not None else None
        if parent is None or node is None:
            return
        if not isinstance(node, DirNode):
            if not self._protected(node):
                self._del_child(parent, op.path[-1])
                self._event(op.path)
            return
        if node.children and not op.recursive:
            return
        if not self._prune(node):
            self._del_child(parent, op.path[-1])
        self._event(op.path, recursive=True)

    def _prune(self, top: DirNode) -> bool:
        """Remove what a recursive rm may remove below ``top``; return if anything is left.

        Children in sorted order, depth first; a directory goes once nothing is left in
        it. Each frame: a directory, its name in the frame below, its names still to visit.
        """
        frames: list[tuple[DirNode, str, Iterator[str]]] = [(top, "", iter(sorted(top.children)))]
        while frames:
            directory, name_in_parent, names = frames[-1]
            for name in names:
                child = directory.children[name]
                if isinstance(child, DirNode):
                    frames.append((child, name, iter(sorted(child.children))))
                    break
                if not self._protected(child):
                    self._del_child(directory, name)
            else:
                frames.pop()
                if frames and not directory.children:
                    self._del_child(frames[-1][0], name_in_parent)
        return bool(top.children)

    def _move_or_copy(self, op: Mv | Cp) -> None:
        src_parent = self.tree.parent_of(op.src) if op.src else None
        node = src_parent.children.get(op.src[-1]) if src_parent is not None else None
        if src_parent is None or node is None or not op.dst or is_ancestor(op.src, op.dst):
            return
        if isinstance(op, Cp):
            if isinstance(node, DirNode) and not op.recursive:
                return
            node = self._copy(node)
        dst_parent, dst_parent_path = self._ensure_dir(op.dst[:-1])
        if isinstance(op, Mv):
            self._del_child(src_parent, op.src[-1])
            self._event(op.src, recursive=isinstance(node, DirNode))
        name = op.dst[-1]
        existing = dst_parent.children.get(name)
        if isinstance(node, FileNode) and isinstance(existing, FileNode):
            # Renaming or copying over a file is a write of the moved value to the
            # destination: a racing write there survives as a conflict side.
            moved, moved_mtime_ms = node.value, node.mtime_ms
            if isinstance(op, Mv):
                value, versions = _taken_over(node, existing)
                self._set(node, "value", value)
                self._set(node, "versions", versions)
            else:
                node.value, node.versions = existing.value, existing.versions  # a fresh copy
            self._set_value(node, moved, (*dst_parent_path, name), replaced=True)
            if isinstance(op, Mv):
                self._set(node, "mtime_ms", moved_mtime_ms)  # rename(2) keeps the file's mtime
            self._put_child(dst_parent, name, node)
            return
        if existing is not None and _replaceable(node, existing) and not self._protected(existing):
            self._del_child(dst_parent, name)
        if isinstance(op, Mv):
            self._record_move(node)
        placed = self._place(dst_parent, dst_parent_path, name, node)
        if isinstance(op, Mv) and placed == op.src:
            # Put back where it was (a stale move onto its own aside name): nothing a
            # reader can observe changed.
            self._drop_event(Event(op.src, isinstance(node, DirNode)))

    def _copy(self, root: AnyNode) -> AnyNode:
        """Return a fresh copy of ``root``'s subtree (inodes in sorted pre-order).

        Walked with an explicit stack of (node, the copy of its directory, its name).
        """
        top: AnyNode | None = None
        stack: list[tuple[AnyNode, DirNode | None, str]] = [(root, None, "")]
        while stack:
            node, into, name = stack.pop()
            ino, mode, now = self.tree.new_ino(), node.mode, self.time_ms
            copy: AnyNode
            if isinstance(node, DirNode):
                copy = DirNode(ino=ino, mode=mode, mtime_ms=now, atime_ms=now)
                children = node.children
                stack.extend((children[n], copy, n) for n in sorted(children, reverse=True))
            elif isinstance(node, FileNode):
                copy = FileNode(ino=ino, mode=mode, mtime_ms=now, atime_ms=now, value=node.value)
            else:
                copy = SymlinkNode(
                    ino=ino, mode=mode, mtime_ms=now, atime_ms=now, target=node.target
                )
            self._record(copy, None, fresh=True)
            if node.meta:
                stamp = (self._version(None),)
                copy.meta = {k: MetaSlot(slot.value, stamp) for k, slot in node.meta.items()}
            if into is None:
                top = copy
            else:
                into.children[name] = copy
        assert top is not None
        return top


def _stub(version: Version) -> Version:
    """Return ``version`` without the value before it (no longer known)."""
    if version.before is None:
        return version
    return Version(version.seq, version.time_ms, version.author, None)


def _pruned(versions: list[Version], time_ms: int, window_ms: int) -> list[Version]:
    """Return ``versions`` without what races no longer need (as `_Folder._record` keeps)."""
    cutoff = time_ms - window_ms
    drop = 0
    while drop + 1 < len(versions) and versions[drop + 1].time_ms < cutoff:
        drop += 1
    drop = max(drop, len(versions) - MAX_VERSIONS)
    if drop > 0:
        del versions[: drop - 1]
        versions[0] = _stub(versions[0])
    return versions


def _meta_values(meta: Meta) -> dict[str, str]:
    return {key: merge_key(slot.value) for key, slot in meta.items()}


def _taken_over(node: FileNode, existing: FileNode) -> tuple[Merge, list[Version]]:
    """Return the value and history a file renamed over ``existing`` takes over.

    The renamed file's own recent versions stay, so a later entry that had not seen
    them still races them; each gets, as its value before, the destination's value at
    its sequence, so `FileNode.value_at` keeps answering for the destination.
    """
    carried = [Version(v.seq, v.time_ms, v.author, existing.value_at(v.seq)) for v in node.versions]
    return existing.value, sorted(existing.versions + carried, key=lambda v: v.seq)


def _replaceable(node: AnyNode, existing: AnyNode) -> bool:
    """Whether rename(2) lets ``node`` replace ``existing`` (same family, empty directory)."""
    if isinstance(existing, DirNode):
        return isinstance(node, DirNode) and not existing.children
    return not isinstance(node, DirNode)


def _aside_name(parent: DirNode, name: str, *, want_dir: bool) -> str:
    """Return ``<name>.conflict-<n>``: the first free one, or an existing directory if wanted."""
    n = 1
    while True:
        candidate = f"{name}.conflict-{n}"
        existing = parent.children.get(candidate)
        if existing is None or (want_dir and isinstance(existing, DirNode)):
            return candidate
        n += 1


def _join(before: Merge, new: Merge) -> Merge:
    """Return ``before`` plus each side of ``new`` it does not hold, over an empty base.

    For a conflicted value moved or copied onto a file it races (docs/conflicts.md,
    rule 11): at most the moved value's sides are added, and none the file holds.
    """
    added: list[Content | None] = []
    for side in new.adds:
        if side not in before.adds and side not in added:
            added.append(side)
    return Merge((*before.adds, *added), (*before.removes, *[None] * len(added))).simplify()


def _concat(value: Content | None, tail: Content) -> Content:
    return (value if value is not None else EMPTY).concat(tail)


def _written_back(before: Merge, new: Merge, terms: tuple[Content, ...]) -> Merge:
    """Return the value a sequential write of ``new`` leaves (docs/conflicts.md, rule 6).

    A write-back (``terms``: the conflict block its writer wrote, as its mount parsed
    it, `engine.ops.Write`) over a conflict of as many terms keeps the conflict with
    those terms, or leaves it as it is when every term is unchanged (jj's partial
    resolution); anything else replaces the value. No byte is read, so a write-back
    folds alike whether its contents are inline or blobs.
    """
    if before.is_resolved() or not terms:
        return new
    old = [EMPTY if v is None else v for v in before.terms()]
    if len(terms) != len(old):
        return new
    if all(term == was for term, was in zip(terms, old, strict=True)):
        return before
    return Merge(terms[0::2], terms[1::2]).simplify()


def _edit_v1(before: Merge, new: Merge) -> Merge:
    """Return the value a sequential write of ``new`` left in codec version 1.

    Writing back a conflict's materialization with its markers intact keeps the
    conflict, with the edited sides (jj's partial resolution); anything else
    replaces the value. The block is found by parsing inline bytes, so a write-back
    whose bytes or terms are blobs is a plain write: the reason version 2 entries
    carry their terms (`_written_back`). Kept so version 1 logs replay as they folded.
    """
    if before.is_resolved() or not new.is_resolved() or new.adds[0] is None:
        return new
    data = new.adds[0].inline_bytes()
    terms = [EMPTY if v is None else v for v in before.terms()]
    term_bytes = [t.inline_bytes() for t in terms]
    if data is None or any(b is None for b in term_bytes):
        return new
    sides = [b for b in term_bytes[0::2] if b is not None]
    bases = [b for b in term_bytes[1::2] if b is not None]
    if data == conflicts.materialize(sides, bases):
        return before
    parsed = conflicts.parse(data, len(sides))
    if parsed is None:
        return new
    new_sides, new_bases = parsed
    return Merge(
        tuple(Content.of(s) for s in new_sides), tuple(Content.of(b) for b in new_bases)
    ).simplify()
