"""Conflicted file values rendered as jj "snapshot"-style conflict markers, and parsed back.

A conflict of n+1 sides and n bases reads back as one marker block: the lines that
every term (all sides and all bases) shares at its start and at its end stay outside
the block, verbatim; everything else is written in full, term by term, in the order
side #1, base, side #2, base #2, side #3, ... Nothing is merged line by line, so
there is always exactly one block, "conflict 1 of 1".

The functions work on bytes; an absent term (the file did not exist) is ``b""``.

Invariants:

* Markers are `MIN_MARKER_LEN` characters long, or longer when some line of some
  term already looks like a marker: the length is then the longest such run plus
  `MARKER_LEN_INCREMENT`, so no content line can be mistaken for a marker line.
* Every term inside the block ends with a newline when the block is written: when a
  term lacks its final newline, one end-of-line is appended to every term and the end
  marker loses its own, exactly as jj does.
* `parse` inverts `materialize`: ``parse(materialize(sides, bases), len(sides))``
  returns ``(sides, bases)`` byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

MIN_MARKER_LEN = 7
"""Shortest conflict marker, as in jj."""

MARKER_LEN_INCREMENT = 4
"""How much longer than the longest marker-like content line a marker is, as in jj."""

_MARKER_CHARS = frozenset(b"<>+-%\\|=")
# Rust's `u8::is_ascii_whitespace`, which jj uses: no vertical tab, unlike bytes.isspace.
_ASCII_WHITESPACE = frozenset(b" \t\n\x0c\r")

_START_TEXT = b" conflict 1 of 1"
_END_TEXT = b" conflict 1 of 1 ends"
_NO_NEWLINE = " (no terminating newline)"


def _split_lines(data: bytes) -> list[bytes]:
    """Split ``data`` after each newline; a final line without one is its own line."""
    lines: list[bytes] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            lines.append(data[start:])
            break
        lines.append(data[start : end + 1])
        start = end + 1
    return lines


def _marker_run(line: bytes) -> tuple[int, int] | None:
    """Return ``(char, run length)`` if ``line`` looks like a conflict marker, else None.

    A line looks like a marker when it starts with a run of one marker character that
    is followed by the end of the line or by ASCII whitespace.
    """
    if not line or line[0] not in _MARKER_CHARS:
        return None
    char = line[0]
    run = len(line) - len(line.lstrip(bytes((char,))))
    if run < len(line) and line[run] not in _ASCII_WHITESPACE:
        return None
    return char, run


def _strip_eol(line: bytes) -> bytes:
    """Return ``line`` without its LF or CRLF terminator."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def marker_length(terms: Sequence[bytes]) -> int:
    """Return the conflict-marker length to use for a conflict between ``terms``.

    Args:
        terms: Every side and base, whole (not trimmed of common lines).

    Returns:
        `MIN_MARKER_LEN`, or the longest marker-like run in any line of any term plus
        `MARKER_LEN_INCREMENT` when that is longer.
    """
    longest = 0
    for term in terms:
        for line in _split_lines(term):
            found = _marker_run(line)
            if found is not None:
                longest = max(longest, found[1])
    return max(MIN_MARKER_LEN, longest + MARKER_LEN_INCREMENT)


def _interleave(sides: Sequence[bytes], bases: Sequence[bytes]) -> list[bytes]:
    """Return the terms in rendering order: side, base, side, ..., side."""
    terms = [sides[0]]
    for base, side in zip(bases, sides[1:], strict=True):
        terms.extend((base, side))
    return terms


def _labels(num_sides: int) -> list[str]:
    """Return the section labels in rendering order for ``num_sides`` sides."""
    labels = ["side #1"]
    for index in range(1, num_sides):
        labels.append("base" if num_sides == 2 else f"base #{index}")
        labels.append(f"side #{index + 1}")
    return labels


def _common_line_counts(lines_per_term: list[list[bytes]]) -> tuple[int, int]:
    """Return how many lines all terms share at their start and at their end.

    Prefix and suffix never overlap within a term. Prefix lines always end with a
    newline, so the start marker always begins a line (only identical terms could
    share a final line without one; that line then goes to the suffix).
    """
    first = lines_per_term[0]
    shortest = min(len(lines) for lines in lines_per_term)
    prefix = 0
    while (
        prefix < shortest
        and first[prefix].endswith(b"\n")
        and all(lines[prefix] == first[prefix] for lines in lines_per_term)
    ):
        prefix += 1
    suffix = 0
    while suffix < shortest - prefix and all(
        lines[-1 - suffix] == first[-1 - suffix] for lines in lines_per_term
    ):
        suffix += 1
    return prefix, suffix


def _detect_eol(hunks: Sequence[bytes]) -> bytes:
    """Return CRLF if every hunk with a newline has CRLF first, and one does; else LF."""
    seen_crlf = False
    for hunk in hunks:
        index = hunk.find(b"\n")
        if index < 0:
            continue
        if not hunk[:index].endswith(b"\r"):
            return b"\n"
        seen_crlf = True
    return b"\r\n" if seen_crlf else b"\n"


def materialize(sides: Sequence[bytes], bases: Sequence[bytes]) -> bytes:
    """Render a conflict as one jj snapshot-style marker block.

    Args:
        sides: The sides (adds), in log order; ``b""`` for an absent file.
        bases: The bases (removes); exactly one fewer than ``sides``.

    Returns:
        The common leading lines, the marker block, then the common trailing lines.
    """
    assert len(sides) >= 2, "a conflict has at least two sides"
    assert len(sides) == len(bases) + 1, "a conflict has one more side than bases"
    terms = _interleave(sides, bases)
    length = marker_length(terms)
    lines_per_term = [_split_lines(term) for term in terms]
    prefix, suffix = _common_line_counts(lines_per_term)
    hunks = [b"".join(lines[prefix : len(lines) - suffix]) for lines in lines_per_term]
    eol = _detect_eol(hunks)
    missing_newline = any(hunk and not hunk.endswith(b"\n") for hunk in hunks)

    first = lines_per_term[0]
    out = [b"".join(first[:prefix]), b"<" * length + _START_TEXT + eol]
    for index, (hunk, label) in enumerate(zip(hunks, _labels(len(sides)), strict=True)):
        if hunk and not hunk.endswith(b"\n"):
            label += _NO_NEWLINE
        char = b"+" if index % 2 == 0 else b"-"
        out.append(char * length + b" " + label.encode("ascii") + eol)
        out.append(hunk + eol if missing_newline else hunk)
    out.append(b">" * length + _END_TEXT)
    if not missing_newline:
        out.append(eol)
    out.append(b"".join(first[len(first) - suffix :]))
    return b"".join(out)


def _find_start(lines: Sequence[bytes]) -> tuple[int, int] | None:
    """Return ``(line index, marker length)`` of the start marker, or None.

    The start marker is the longest ``<`` run followed by " conflict 1 of 1": content
    lines are always shorter, so a shorter such line is content, not a second block.
    """
    best: tuple[int, int] | None = None
    for index, line in enumerate(lines):
        found = _marker_run(line)
        if found is None or found[0] != ord("<") or found[1] < MIN_MARKER_LEN:
            continue
        if _strip_eol(line)[found[1] :] != _START_TEXT:
            continue
        if best is None or found[1] > best[1]:
            best = (index, found[1])
    return best


def _find_structure(lines: Sequence[bytes], start: int, length: int) -> list[int] | None:
    """Return the indexes of the section headers then the end marker, or None.

    Every marker-like line at least ``length`` long must be the start marker, a
    section header inside the block, or the single end marker; anything else (a
    second block, a stray or longer marker) makes the rendering invalid.
    """
    headers: list[int] = []
    end: int | None = None
    for index, line in enumerate(lines):
        found = _marker_run(line)
        if index == start or found is None or found[1] < length:
            continue
        char, run = found
        inside = start < index and end is None
        if inside and run == length and char in b"+-":
            headers.append(index)
        elif inside and run == length and _strip_eol(line) == b">" * length + _END_TEXT:
            end = index
        else:
            return None
    if end is None:
        return None
    return [*headers, end]


def _valid_sections(lines: Sequence[bytes], start: int, marks: list[int], num_sides: int) -> bool:
    """Return whether the headers alternate side/base, start and end on a side, and fit."""
    headers = marks[:-1]
    if not headers or headers[0] != start + 1 or len(headers) != 2 * num_sides - 1:
        return False
    return all(
        lines[index][0] == (ord("+") if position % 2 == 0 else ord("-"))
        for position, index in enumerate(headers)
    )


def parse(data: bytes, num_sides: int) -> tuple[list[bytes], list[bytes]] | None:
    """Parse a rendering made by `materialize` back into its sides and bases.

    Args:
        data: The file bytes, possibly edited by a user.
        num_sides: The number of sides the conflict must have.

    Returns:
        ``(sides, bases)`` with the text outside the block reattached to every term,
        or None when ``data`` is not exactly one valid block with ``num_sides`` sides.
    """
    assert num_sides >= 2, "a conflict has at least two sides"
    lines = _split_lines(data)
    found = _find_start(lines)
    if found is None:
        return None
    start, length = found
    marks = _find_structure(lines, start, length)
    if marks is None or not _valid_sections(lines, start, marks, num_sides):
        return None
    hunks = [b"".join(lines[head + 1 : tail]) for head, tail in pairwise(marks)]
    end = marks[-1]
    if not lines[end].endswith(b"\n"):
        # The end marker lost its newline: every term had one end-of-line appended.
        crlf = lines[start].endswith(b"\r\n")
        if not all(hunk.endswith(b"\n") for hunk in hunks):
            return None
        hunks = [hunk[:-2] if crlf and hunk.endswith(b"\r\n") else hunk[:-1] for hunk in hunks]
    prefix = b"".join(lines[:start])
    suffix = b"".join(lines[end + 1 :])
    terms = [prefix + hunk + suffix for hunk in hunks]
    return terms[0::2], terms[1::2]
