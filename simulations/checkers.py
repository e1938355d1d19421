"""Safety checkers over trees, folds and events (checkers a, b and e; see docs/simulations.md).

- (a) `PrefixHashes`: every mount (and the oracle) that folded the log up to
  sequence N holds the same tree hash at N.
- (b) `replay_from_scratch`: folding the whole log into a fresh state gives, at
  every sequence some mount reported, the hash that mount held.
- (e) `check_events`: the events of each folded entry equal the difference between
  the trees before and after it (`diff`, defined below).
- `check_materialization`: every conflict in a tree reads back as a jj block that
  `engine.conflicts.parse` turns back into its exact sides and bases.
- (h) `check_spill`: an entry whose inline bytes were spilled to blobs folds to what
  readers would have seen had it gone inline.

A failed check raises `CheckFailedError`, which names the checker and explains.
"""

from __future__ import annotations

from collections.abc import Callable

from engine import conflicts
from engine.codec import decode_entry
from engine.content import Content, digest_of
from engine.fold import AppliedOps, ChangeState, Event, fold
from engine.ops import Entry, Logged, Op
from engine.paths import RelPath, is_ancestor, to_str
from engine.replica import Folded
from engine.tree import DirNode, FileNode, SymlinkNode, Tree, merge_key, meta_key
from simulations.failure import CheckFailedError
from simulations.known import Findings
from simulations.sequencer import Stored

# -- (a) same prefix, same tree --------------------------------------------------------


class PrefixHashes:
    """Checker (a): the first hash reported at each sequence, and who reported it."""

    def __init__(self) -> None:
        self.hashes: dict[int, tuple[str, str]] = {}

    def observe(self, who: str, seq: int, tree_hash: str) -> None:
        """Record that ``who`` holds ``tree_hash`` after folding up to ``seq``.

        Raises:
            CheckFailedError: another replica reported a different hash at ``seq``.
        """
        first = self.hashes.setdefault(seq, (who, tree_hash))
        if first[1] != tree_hash:
            raise CheckFailedError(
                "a:same-prefix-same-tree",
                f"after folding up to seq {seq}, {who} holds tree {tree_hash[:16]} but"
                f" {first[0]} held {first[1][:16]}",
            )


# -- (b) replay from scratch -----------------------------------------------------------


def replay_from_scratch(
    entries: list[Stored],
    window_ms: int,
    prefix: PrefixHashes,
    start: ChangeState | None = None,
) -> str:
    """Checker (b): fold the whole log into a fresh state; compare with every reported hash.

    ``start`` is the change's base state (a child change starts from its parent's
    sealed tree); empty by default.

    Returns:
        The final tree hash of the replay.

    Raises:
        CheckFailedError: the replay's hash differs at a sequence some replica reported.
    """
    state = start if start is not None else ChangeState(window_ms=window_ms)
    tree_hash = state.tree.hash()
    for stored in entries:
        fold(state, Logged(stored.seq, stored.time_ms, decode_entry(stored.payload)))
        if stored.seq in prefix.hashes:
            tree_hash = state.tree.hash()
            who, live = prefix.hashes[stored.seq]
            if live != tree_hash:
                raise CheckFailedError(
                    "b:replay-equals-live",
                    f"replaying the log from scratch gives tree {tree_hash[:16]} at seq"
                    f" {stored.seq}; {who} held {live[:16]} live",
                )
    return state.tree.hash()


# -- (e) events equal the tree diff ----------------------------------------------------

Observable = tuple[str, int, int, int, int, str, bytes]


def observable(tree: Tree) -> dict[RelPath, Observable]:
    """Return what a reader can observe at each path: kind, inode, mode, times, value, metadata.

    The value is the file's merge key (every side and base), the symlink's target,
    or empty for a directory; metadata is every key's value (`engine.tree.meta_key`).
    A directory's entries are observed through its children's paths, so adding a
    child changes the child's path, not the parent's.
    """
    out: dict[RelPath, Observable] = {}
    for path, node in tree.walk():
        if isinstance(node, FileNode):
            kind, value = "f", merge_key(node.value)
        elif isinstance(node, SymlinkNode):
            kind, value = "l", node.target
        else:
            kind, value = "d", ""
        meta = meta_key(node.meta)
        out[path] = (kind, node.ino, node.mode, node.mtime_ms, node.atime_ms, value, meta)
    return out


def diff(before: dict[RelPath, Observable], after: dict[RelPath, Observable]) -> list[RelPath]:
    """Return the paths whose observation differs (present in one only, or changed), sorted."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _covered(path: RelPath, events: list[Event]) -> bool:
    return any(
        e.path == path or (e.recursive and is_ancestor(e.path, path) and e.path != path)
        for e in events
    )


def check_event_set(
    who: str,
    seq: int,
    changed: list[RelPath],
    events: list[Event],
    *,
    op: Op | None = None,
    findings: Findings | None = None,
) -> None:
    """Checker (e) for one entry: every changed path covered, no phantom non-recursive event.

    Raises:
        CheckFailedError: a changed path has no event on it or a recursive event on an
            ancestor (missing event), or a non-recursive event names an unchanged
            path (phantom event).
    """
    rendered = ", ".join(f"{to_str(e.path) or '/'}{'/**' if e.recursive else ''}" for e in events)
    for path in changed:
        if not _covered(path, events):
            raise CheckFailedError(
                "e:events-equal-diff",
                f"{who} folding seq {seq}: {to_str(path)!r} changed but no event covers"
                f" it (events: {rendered or 'none'})",
            )
    changed_set = set(changed)
    for event in events:
        if not event.recursive and event.path not in changed_set:
            explanation = (
                f"{who} folding seq {seq}: phantom event on {to_str(event.path)!r},"
                f" which did not change (events: {rendered})"
            )
            raise CheckFailedError("e:events-equal-diff", explanation)


def clone_state(state: ChangeState) -> ChangeState:
    """Return an independent copy of a replica's state."""
    applied = AppliedOps()
    applied.watermark = dict(state.applied.watermark)
    applied.sparse = {a: set(s) for a, s in state.applied.sparse.items()}
    return ChangeState(state.tree.clone(), state.seq, applied, state.window_ms)


def check_events(
    who: str, before: ChangeState, folded: list[Folded], findings: Findings | None = None
) -> None:
    """Checker (e) for a batch a replica folded, starting from a copy of its prior state.

    Each entry is folded again into ``before`` (consumed), so the trees between the
    entries of the batch are known; the events must also be the replica's.
    """
    seen = observable(before.tree)
    for item in folded:
        events = fold(before, Logged(item.seq, item.time_ms, item.entry))
        if events != item.events:
            raise CheckFailedError(
                "e:events-equal-diff",
                f"{who} seq {item.seq}: folding the entry again gave events {events},"
                f" the replica's fold gave {item.events}",
            )
        now = observable(before.tree)
        changed = diff(seen, now)
        check_event_set(who, item.seq, changed, item.events, op=item.entry.op, findings=findings)
        seen = now


# -- materialization round trip --------------------------------------------------------


def check_materialization(
    who: str, tree: Tree, read: Callable[[Content], bytes] | None = None
) -> int:
    """Check that every conflict reads back as a block that parses to its exact terms.

    ``read`` gives a blob term's bytes (the simulated blob store); without it, conflicts
    with blob terms are skipped.

    Returns:
        How many conflicted files were checked.

    Raises:
        CheckFailedError: a block does not parse back to the conflict's sides and bases.
    """
    checked = 0
    for path, node in tree.walk():
        if not isinstance(node, FileNode) or node.value.is_resolved():
            continue
        terms = [b"" if v is None else _bytes(v, read) for v in node.value.terms()]
        data = [t for t in terms if t is not None]
        if len(data) != len(terms):
            continue  # blob sides and no blob store to read them from
        sides, bases = data[0::2], data[1::2]
        block = conflicts.materialize(sides, bases)
        if conflicts.parse(block, len(sides)) != (sides, bases):
            raise CheckFailedError(
                "g:materialization-round-trips",
                f"{who}: the conflict at {to_str(path)!r} does not parse back to its terms",
            )
        checked += 1
    return checked


def _bytes(content: Content, read: Callable[[Content], bytes] | None) -> bytes | None:
    data = content.inline_bytes()
    return data if data is not None or read is None else read(content)


# -- a spill keeps the fold ------------------------------------------------------------


def byte_view(tree: Tree, read: Callable[[Content], bytes]) -> dict[RelPath, tuple[object, ...]]:
    """What a reader observes at each path, with file terms as bytes, not content keys.

    An inline segment and a blob of the same bytes have one digest, but a content
    made of several segments (an append after a spill) has another key than the same
    bytes in one segment: readers see the bytes.
    """
    out: dict[RelPath, tuple[object, ...]] = {}
    for path, node in tree.walk():
        if isinstance(node, FileNode):
            terms = tuple(None if v is None else digest_of(read(v)) for v in node.value.terms())
            out[path] = ("f", node.ino, node.mode, node.mtime_ms, node.atime_ms, terms)
        elif isinstance(node, SymlinkNode):
            out[path] = ("l", node.ino, node.mtime_ms, node.atime_ms, node.target)
        else:
            out[path] = ("d", node.ino, node.mode, node.mtime_ms, node.atime_ms)
        out[path] += (meta_key(node.meta),)
    return out


def check_spill(
    state: ChangeState,
    logged: Logged,
    original: Entry,
    read: Callable[[Content], bytes],
) -> None:
    """Checker (h): folding a spilled entry gives what folding it unspilled would have.

    `engine.driver.spilled` moves an entry's inline bytes to blobs when the server
    refuses it as too large; the entry must mean the same to the fold. Folds both into
    copies of ``state`` (the state before the entry) and compares what readers see.
    A conflict block written back (rule 6) is covered too: its terms are spilled with
    its bytes (was known bug ``spilled-writeback``, docs/simulations.md).

    Raises:
        CheckFailedError: the two folds leave trees a reader can tell apart.
    """
    spilled_state, inline_state = clone_state(state), clone_state(state)
    fold(spilled_state, logged)
    fold(inline_state, Logged(logged.seq, logged.time_ms, original))
    spilled, inline = byte_view(spilled_state.tree, read), byte_view(inline_state.tree, read)
    differ = sorted(p for p in spilled.keys() | inline.keys() if spilled.get(p) != inline.get(p))
    if not differ:
        return
    explanation = (
        f"seq {logged.seq} ({logged.entry.op_id}) was spilled to blobs; folding it"
        f" inline would leave {to_str(differ[0])!r} otherwise"
    )
    raise CheckFailedError("h:spill-keeps-the-fold", explanation)


def is_dir(tree: Tree, path: RelPath) -> bool:
    """Return whether ``path`` is a directory in ``tree``."""
    return isinstance(tree.lookup(path), DirNode)
