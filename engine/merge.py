"""The jj merge algebra over file values.

A `Merge` is ``adds[0] - removes[0] + adds[1] - removes[1] + ... + adds[n]``: n+1
sides and n bases. A resolved value is a merge with one side. A value is a
`Content` or ``None`` (absent). Racing writes extend a merge with the new side and
the base its author had seen, then `simplify` cancels equal add/remove pairs, as jj
does. Equality of contents is by `Content.key`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.content import Content

Value = Content | None


@dataclass(frozen=True, slots=True)
class Merge:
    """A possibly-conflicted file value: sides (adds) and bases (removes)."""

    adds: tuple[Value, ...]
    removes: tuple[Value, ...] = ()

    def __post_init__(self) -> None:
        assert len(self.adds) == len(self.removes) + 1, "a merge has one more side than bases"

    @staticmethod
    def resolved(value: Value) -> Merge:
        """Return the merge holding just ``value``."""
        return Merge((value,), ())

    def is_resolved(self) -> bool:
        """Return whether this merge has a single side."""
        return len(self.adds) == 1

    def with_diff(self, new: Value, old: Value) -> Merge:
        """Return this merge plus the change ``old -> new``, simplified."""
        return Merge((*self.adds, new), (*self.removes, old)).simplify()

    def plus_diff(self, new: Merge, old: Merge) -> Merge:
        """Return this merge plus the change ``old -> new`` (both possibly conflicted), simplified.

        ``new - old`` contributes ``new.adds + old.removes`` as sides and
        ``new.removes + old.adds`` as bases: jj's algebra for rebasing a change.
        """
        return Merge(
            (*self.adds, *new.adds, *old.removes),
            (*self.removes, *new.removes, *old.adds),
        ).simplify()

    def simplify(self) -> Merge:
        """Cancel each base against the first equal side; collapse equal sides.

        The relative order of the remaining sides and bases is kept, so the result is
        a pure function of the terms.
        """
        adds = list(self.adds)
        removes: list[Value] = []
        for base in self.removes:
            for i, side in enumerate(adds):
                if side == base and len(adds) > 1:
                    del adds[i]
                    break
            else:
                removes.append(base)
        # Sides must outnumber bases by one; a base that found no partner keeps one
        # of the sides from being dropped, so this holds by construction.
        assert len(adds) == len(removes) + 1
        if len(adds) > 1 and all(side == adds[0] for side in adds[1:]):
            return Merge.resolved(adds[0])
        return Merge(tuple(adds), tuple(removes))

    def map(self, fn: Callable[[Value], Value]) -> Merge:
        """Apply ``fn`` to every term (sides and bases), keeping the shape."""
        return Merge(tuple(fn(v) for v in self.adds), tuple(fn(v) for v in self.removes))

    def terms(self) -> list[Value]:
        """Return the terms in rendering order: side, base, side, base, ..., side."""
        out: list[Value] = [self.adds[0]]
        for base, side in zip(self.removes, self.adds[1:], strict=True):
            out.extend((base, side))
        return out
