"""Per-file metadata: the limits on keys and values, and how a key's value reads.

Every node (file, directory, symlink) may carry string metadata: a small mapping of
keys to values, set and deleted by `engine.ops.SetMetadata` entries and folded per
key with the race rules of file contents (docs/conflicts.md). A key's value is a
`engine.merge.Merge` whose terms are the UTF-8 bytes of the value (or None: absent),
so racing sets of one key keep both values as a first-class conflict, exactly like a
file's; `render` gives the string a reader sees (a conflict reads as its jj block).

Limits (checked by the SDK before anything is logged, and by the codec both ways, so
no entry outside them is ever written or folded):

- a key is 1..`MAX_KEY_BYTES` bytes of ASCII letters, digits, ``.``, ``_`` and ``-``,
  starting with a letter or digit; ``org`` and ``repo`` are reserved (get_metadata
  reports them, read-only);
- a value is a string of at most `MAX_VALUE_BYTES` UTF-8 bytes with no NUL; the
  empty string means "delete the key";
- one set names at most `MAX_KEYS` keys, and the SDK refuses a set that would leave
  a node with more than `MAX_KEYS` keys (racing sets of different keys can exceed it:
  they both apply).
"""

from __future__ import annotations

import re

from engine import conflicts
from engine.content import Content
from engine.errors import InvalidInputError
from engine.merge import Merge

#: The longest key, in bytes (``user.mesa.`` + key stays far below XATTR_NAME_MAX).
MAX_KEY_BYTES = 128
#: The longest value, in UTF-8 bytes.
MAX_VALUE_BYTES = 4096
#: The most keys one node may hold after a set (and one set may name).
MAX_KEYS = 64
#: Keys a caller cannot set: get_metadata reports them.
RESERVED_KEYS = frozenset({"org", "repo"})

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_key(key: object) -> str:
    """Return ``key`` if it is a valid, settable key; else raise `InvalidInputError`."""
    if not isinstance(key, str):
        raise InvalidInputError(f"metadata key must be a str, not {type(key).__name__}")
    if key in RESERVED_KEYS:
        raise InvalidInputError(f"metadata key {key!r} is reserved (read-only)")
    if not key or len(key) > MAX_KEY_BYTES or _KEY_RE.match(key) is None:
        raise InvalidInputError(
            f"invalid metadata key {key!r}: 1..{MAX_KEY_BYTES} characters of A-Z a-z 0-9 . _ -,"
            " starting with a letter or digit"
        )
    return key


def check_value(key: str, value: object) -> str | None:
    """Return ``value`` for ``key`` as stored: None (delete) for None or ""; else checked.

    Raises:
        InvalidInputError: not a str or None, over `MAX_VALUE_BYTES`, a NUL, or not
            encodable as UTF-8.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInputError(
            f"metadata value of {key!r} must be a str or None, not {type(value).__name__}"
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"metadata value of {key!r} is not encodable as UTF-8") from exc
    if size > MAX_VALUE_BYTES:
        raise InvalidInputError(
            f"metadata value of {key!r} is {size} bytes, over the limit of {MAX_VALUE_BYTES}"
        )
    if "\x00" in value:
        raise InvalidInputError(f"metadata value of {key!r} contains NUL")
    return value


def value_merge(value: str | None) -> Merge:
    """Return the resolved merge holding ``value`` (None: the key is absent)."""
    return Merge.resolved(None if value is None else Content.of(value.encode("utf-8")))


def render(value: Merge) -> str:
    """Return the string a reader sees for a key's value.

    A resolved value is itself; a conflict (racing sets) reads as its jj conflict
    block, exactly as a conflicted file reads, with an absent side or base empty.
    """
    if value.is_resolved():
        return _text(value.adds[0])
    sides = [_bytes(v) for v in value.adds]
    bases = [_bytes(v) for v in value.removes]
    return conflicts.materialize(sides, bases).decode("utf-8", "replace")


def _bytes(value: Content | None) -> bytes:
    if value is None:
        return b""
    data = value.inline_bytes()
    assert data is not None, "metadata values are always inline"
    return data


def _text(value: Content | None) -> str:
    return _bytes(value).decode("utf-8")
