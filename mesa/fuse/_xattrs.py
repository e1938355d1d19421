"""Per-file metadata as extended attributes: names, values and errnos (no I/O).

A node's metadata key ``k`` is the attribute ``user.mesa.k``; its value is the key's
UTF-8 string (a conflicted key reads as its jj conflict block, as through the SDK).
Only that namespace is served: any other name (``security.*``, ``system.*``,
``trusted.*``, other ``user.*``) fails with ``EOPNOTSUPP``, as every attribute did
before metadata existed, so tools that probe them (``cp -a``, ``ls`` looking for
ACLs and SELinux labels) behave as on a filesystem without those attributes.

Errnos: a key that is not set (or not a valid key) reads as ``ENODATA``; setting an
invalid or reserved key (``org``, ``repo``) or a value that is not UTF-8 or holds a
NUL is ``EINVAL``; a value over `engine.metadata.MAX_VALUE_BYTES`, or a set that would
leave more than `engine.metadata.MAX_KEYS` keys, is ``E2BIG``. Setting an empty value
deletes the key (metadata has no empty values). The org and repo, which
``get_metadata`` reports, are not attributes: they are the path.
"""

from __future__ import annotations

import errno
import os

from engine import metadata
from engine.errors import InvalidInputError
from engine.tree import AnyNode

PREFIX = b"user.mesa."


def _fail(code: int, message: str | None = None) -> OSError:
    return OSError(code, message or os.strerror(code))


def key_of(name: bytes) -> str:
    """Return the metadata key an attribute name names (not checked as a key).

    Raises:
        OSError: EOPNOTSUPP for a name outside ``user.mesa.``.
    """
    if not name.startswith(PREFIX):
        raise _fail(errno.EOPNOTSUPP)
    return name[len(PREFIX) :].decode("utf-8", "surrogateescape")


def get(node: AnyNode | None, name: bytes) -> bytes:
    """Return the value of attribute ``name`` on ``node`` (None: a node not folded yet)."""
    key = key_of(name)
    slot = (node.meta or {}).get(key) if node is not None else None
    if slot is None:
        raise _fail(errno.ENODATA)
    return metadata.render(slot.value).encode("utf-8")


def names(node: AnyNode | None) -> list[bytes]:
    """Return the attribute names of ``node``, sorted."""
    meta = node.meta if node is not None else None
    return [PREFIX + key.encode() for key in sorted(meta or {})]


def set_item(node: AnyNode, name: bytes, value: bytes) -> tuple[str, str | None]:
    """Return the (key, value) a setxattr sets; an empty value deletes (None).

    Raises:
        OSError: EOPNOTSUPP, EINVAL or E2BIG (module docstring).
    """
    key = key_of(name)
    try:
        metadata.check_key(key)
    except InvalidInputError as exc:
        raise _fail(errno.EINVAL, str(exc)) from None
    if len(value) > metadata.MAX_VALUE_BYTES:
        raise _fail(errno.E2BIG)
    try:
        text = value.decode("utf-8")
        checked = metadata.check_value(key, text)
    except (UnicodeDecodeError, InvalidInputError) as exc:
        raise _fail(errno.EINVAL, str(exc)) from None
    meta = node.meta or {}
    if checked is not None and key not in meta and len(meta) >= metadata.MAX_KEYS:
        raise _fail(errno.E2BIG)
    return key, checked


def remove_item(node: AnyNode | None, name: bytes) -> tuple[str, None]:
    """Return the (key, None) a removexattr deletes.

    Raises:
        OSError: EOPNOTSUPP outside the namespace, ENODATA for a key not set.
    """
    key = key_of(name)
    if node is None or key not in (node.meta or {}):
        raise _fail(errno.ENODATA)
    return key, None
