"""Change ids and op ids.

A change id is 16 bytes printed as 32 "reverse hex" characters (jj's alphabet:
``z y x w v u t s r q p o n m l k`` for 0..15). The virtual root change is 32 ``z``.
The engine never makes randomness: callers pass the 16 random bytes in.
"""

from __future__ import annotations

import re

from engine.errors import InvalidInputError

REVERSE_HEX_ALPHABET = "zyxwvutsrqponmlk"
CHANGE_ID_LENGTH = 32
ROOT_CHANGE_ID = "z" * CHANGE_ID_LENGTH

_CHANGE_ID_RE = re.compile(r"^[k-z]{32}$")
_AUTHOR_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TO_REVERSE = str.maketrans("0123456789abcdef", REVERSE_HEX_ALPHABET)
_FROM_REVERSE = str.maketrans(REVERSE_HEX_ALPHABET, "0123456789abcdef")


def change_id_from_bytes(raw: bytes) -> str:
    """Encode 16 bytes as a 32-character reverse-hex change id."""
    if len(raw) != CHANGE_ID_LENGTH // 2:
        raise InvalidInputError(f"a change id is 16 bytes, got {len(raw)}")
    return raw.hex().translate(_TO_REVERSE)


def change_id_to_bytes(change_id: str) -> bytes:
    """Decode a reverse-hex change id back to its 16 bytes."""
    validate_change_id(change_id)
    return bytes.fromhex(change_id.translate(_FROM_REVERSE))


def is_change_id(value: object) -> bool:
    """Return whether ``value`` is a well-formed change id."""
    return isinstance(value, str) and _CHANGE_ID_RE.match(value) is not None


def validate_change_id(value: object) -> str:
    """Return ``value`` if it is a change id, else raise `InvalidInputError`."""
    if not is_change_id(value):
        raise InvalidInputError(f"not a change id (32 chars in k..z): {value!r}")
    assert isinstance(value, str)
    return value


def validate_author(value: object) -> str:
    """Return ``value`` if it is a valid author (mount id), else raise `InvalidInputError`."""
    if not isinstance(value, str) or _AUTHOR_RE.match(value) is None:
        raise InvalidInputError(f"not an author id ([A-Za-z0-9_-]{{1,64}}): {value!r}")
    return value


def op_id(author: str, counter: int) -> str:
    """Return the op id of an author's ``counter``-th op: unique across the log."""
    return f"{author}.{counter}"
