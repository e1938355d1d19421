"""Checks of the arguments the SDK's methods take, each naming the argument it refuses.

A path or content of the wrong type is `TypeError`; a value the SDK cannot take is
`InvalidOptionsError` (also a `ValueError`), and so is a mode or a time of the wrong
type (they are options, as the SDK has always reported them). Paths are checked for what no path can
hold (a NUL, a character no encoding of a file name can carry); where a path leads is
the filesystem's business (`OSError` with the errno Linux gives).

Limits:
    times: milliseconds since the epoch in ``TIME_MIN_MS..TIME_MAX_MS``, the range a
        64-bit nanosecond timestamp (``st_mtime_ns``) can hold: years 1677 to 2262.
"""

from __future__ import annotations

import math

from mesa.errors import InvalidOptionsError

#: The times a 64-bit count of nanoseconds can hold, in milliseconds.
TIME_MIN_MS = -(2**63) // 1_000_000 + 1
TIME_MAX_MS = (2**63 - 1) // 1_000_000

Content = bytes | bytearray | memoryview | str


def path_arg(value: object, name: str = "path") -> str:
    """Return ``value`` if it can be a path.

    Raises:
        TypeError: it is not a str.
        InvalidOptionsError: it holds a NUL or a character a file name cannot encode
            (a lone surrogate other than the ``surrogateescape`` ones).
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if "\x00" in value:
        raise InvalidOptionsError(f"{name} holds a NUL character: {value!r}")
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise InvalidOptionsError(
            f"{name} holds a character no file name can encode ({exc.reason}): {value!r}"
        ) from None
    return value


def content_arg(value: object, name: str = "content") -> Content:
    """Return ``value`` if it can be a file's content (bytes-like, or str as UTF-8).

    Raises:
        TypeError: not bytes, bytearray, memoryview or str.
        InvalidOptionsError: a str that is not valid Unicode text (a lone surrogate).
    """
    if isinstance(value, bytes | bytearray | memoryview):
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be bytes or str, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidOptionsError(
            f"{name} is a str that UTF-8 cannot encode ({exc.reason} at {exc.start}); "
            "pass bytes for binary content"
        ) from None
    return value


def message_arg(value: object, name: str = "message") -> str | None:
    """Return ``value`` if it can be a change's description: a str, or None.

    Raises:
        TypeError: neither a str nor None.
    """
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    return value


def time_arg(value: object, name: str) -> int:
    """Return ``value`` (milliseconds since the epoch) as an int.

    Raises:
        InvalidOptionsError: not an int or float (bools are refused), NaN, infinite, or
            outside ``TIME_MIN_MS..TIME_MAX_MS``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionsError(
            f"{name} must be a number of milliseconds, not {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidOptionsError(f"{name} must be a finite number of milliseconds: {value!r}")
    ms = int(value)
    if not TIME_MIN_MS <= ms <= TIME_MAX_MS:
        raise InvalidOptionsError(
            f"{name} must be in {TIME_MIN_MS}..{TIME_MAX_MS} ms (years 1677-2262): {value!r}"
        )
    return ms


def mode_arg(value: object, name: str = "mode") -> int:
    """Return ``value`` if it is permission bits (``0..0o7777``).

    Raises:
        InvalidOptionsError: not an int (bools are refused), or outside ``0..0o7777``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise InvalidOptionsError(f"{name} must be an int in 0..0o7777, not {value!r}")
    return value
