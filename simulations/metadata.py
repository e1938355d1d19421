"""Checker (i): per-file metadata keeps the race rules of contents (docs/simulations.md).

Every metadata value the workload sets is a unique tag (``m17``), so each can be
followed per node (by inode) and key without trusting the fold:

- **No set is lost.** When a tag leaves the sides of a key of a node that still
  exists, the entry that removed it must, against the entry that put it there (its
  carrier: the set, or the copy that made the node), be by the same author, or have
  seen it (``seen >= its seq``), or be stamped outside the race window of it. A tag
  the merge algebra brings back from a base is carried by the set that first wrote
  it. Removing the node (rm, a rename over it) removes its metadata: not a loss.
- **A conflict needs a race.** A key only gains sides through a set of that key
  racing an earlier set (or the copy that made the node) by another author, unseen,
  within the window.

The tree, the inodes and every other rule are the other checkers' business: folds
and events of metadata entries are covered by checkers a, b and e like any entry.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from engine.ops import Cp, Logged, SetMetadata
from engine.paths import to_str
from engine.tree import Tree
from simulations.failure import CheckFailedError

#: (inode, key) -> the values on its sides (None: an absent side), in order.
Census = dict[tuple[int, str], tuple[str | None, ...]]


@dataclass(frozen=True, slots=True)
class Stamp:
    """An entry that put a metadata value somewhere: its sequence, time and author."""

    seq: int
    time_ms: int
    author: str


def census(tree: Tree, alive: set[int] | None = None) -> Census:
    """Return the sides of every metadata key of every node of ``tree``.

    With ``alive``, also add every node's inode to it.
    """
    out: Census = {}
    for _, node in tree.walk():
        if alive is not None:
            alive.add(node.ino)
        for key, slot in sorted((node.meta or {}).items()):
            sides: list[str | None] = []
            for value in slot.value.adds:
                data = value.inline_bytes() if value is not None else None
                sides.append(data.decode("utf-8") if data is not None else None)
            out[(node.ino, key)] = tuple(sides)
    return out


class MetadataChecker:
    """Follows every metadata tag and checks each entry (see module docstring)."""

    def __init__(self, window_ms: int, coverage: Counter[str], base: Tree) -> None:
        self.window_ms = window_ms
        self.coverage = coverage
        self.census = census(base)
        # Values in the base (a child change's sealed parent) were seen by everyone.
        stamp = Stamp(0, 0, "base")
        #: (inode, key, tag) -> the entry that put the tag there.
        self.carriers: dict[tuple[int, str, str], Stamp] = {
            (ino, key, tag): stamp
            for (ino, key), sides in self.census.items()
            for tag in sides
            if tag is not None
        }
        #: tag -> the set that first wrote it.
        self.origins: dict[str, Stamp] = {tag: stamp for (_, _, tag) in self.carriers}
        #: (inode, key) -> every set of it and the copy that made it: what may race.
        self.stamps: dict[tuple[int, str], list[Stamp]] = {place: [stamp] for place in self.census}

    def observe(self, logged: Logged, tree: Tree) -> None:
        """Check the entry just folded into ``tree`` (not a duplicate of an earlier one).

        Raises:
            CheckFailedError: a set was lost, or a key gained a side without a race.
        """
        entry, op = logged.entry, logged.entry.op
        this = Stamp(logged.seq, logged.time_ms, entry.author)
        alive: set[int] = set()
        before, after = self.census, census(tree, alive)
        self.census = after
        set_ino, set_keys, own = 0, set[str](), set[str]()
        if isinstance(op, SetMetadata):
            self.coverage["metadata_set"] += 1
            node = tree.lookup(op.path)
            set_ino = node.ino if node is not None else 0
            set_keys = {key for key, value in op.items if value is not None}
            own = {value for _, value in op.items if value is not None}
            for tag in sorted(own):
                self.origins.setdefault(tag, this)
        for place in sorted(before):
            ino, key = place
            gone = {t for t in before[place] if t is not None} - set(after.get(place, ()))
            for tag in sorted(gone):
                carrier = self.carriers.pop((ino, key, tag))
                if ino in alive:
                    self._check_lost(logged, place, tag, carrier)
        for place in sorted(after):
            ino, key = place
            if place not in before:
                # A new key here: set now, or copied with the node (the copy is a set).
                self.stamps[place] = [this]
            elif ino == set_ino and key in set_keys:
                self.stamps[place].append(this)
            new_tags = {t for t in after[place] if t is not None} - set(before.get(place, ()))
            for tag in sorted(new_tags):
                carried = tag in own or isinstance(op, Cp)
                self.carriers[(ino, key, tag)] = this if carried else self.origins[tag]
            if place in before and len(after[place]) > len(before[place]):
                self._check_race(logged, place)
                self.coverage["metadata_conflict"] += 1
            if place in before and len(before[place]) > 1 and len(after[place]) == 1:
                self.coverage["metadata_resolved"] += 1

    def _check_lost(self, logged: Logged, place: tuple[int, str], tag: str, carrier: Stamp) -> None:
        entry = logged.entry
        if (
            entry.author == carrier.author
            or entry.seen >= carrier.seq
            or abs(logged.time_ms - carrier.time_ms) > self.window_ms
        ):
            return
        raise CheckFailedError(
            "i:metadata-race-rules",
            f"seq {logged.seq} ({entry.op_id}, seen {entry.seen}) removed metadata value"
            f" {tag!r} of key {place[1]!r} on inode {place[0]}, set by {carrier.author} at seq"
            f" {carrier.seq} within the window and not seen: a lost set",
        )

    def _check_race(self, logged: Logged, place: tuple[int, str]) -> None:
        entry, op = logged.entry, logged.entry.op
        racing = [
            s
            for s in self.stamps.get(place, ())
            if s.author != entry.author
            and s.seq > entry.seen
            and s.seq < logged.seq
            and abs(logged.time_ms - s.time_ms) <= self.window_ms
        ]
        if isinstance(op, SetMetadata) and racing:
            return
        what = f"{type(op).__name__} {to_str(getattr(op, 'path', ()))!r}"
        raise CheckFailedError(
            "i:metadata-race-rules",
            f"seq {logged.seq} ({entry.op_id}, {what}) gave key {place[1]!r} of inode"
            f" {place[0]} more sides ({len(self.census[place])}) without racing a set",
        )
