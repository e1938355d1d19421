"""Repo-relative paths.

Inside the engine a path is a tuple of components (``RelPath``); the repo root is
``()``. Components are non-empty, contain no ``/`` or NUL, are not ``.`` or ``..``,
and are at most 255 bytes in UTF-8. The SDK maps ``/<org>/<repo>/a/b`` to ``("a", "b")``.
"""

from __future__ import annotations

import errno

from engine.errors import FsError

RelPath = tuple[str, ...]
ROOT: RelPath = ()
NAME_MAX_BYTES = 255


def validate_name(name: str) -> str:
    """Return ``name`` if it is a valid single component, else raise `FsError`."""
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise FsError(errno.EINVAL, name, "invalid path component")
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES:
        raise FsError(errno.ENAMETOOLONG, name, "file name too long")
    return name


def validate(path: RelPath) -> RelPath:
    """Return ``path`` if every component is valid, else raise `FsError`."""
    for name in path:
        validate_name(name)
    return path


def to_str(path: RelPath) -> str:
    """Render a repo-relative path as ``a/b/c`` (the root is ``""``)."""
    return "/".join(path)


def normalize(path: str) -> str:
    """Normalize an absolute path lexically: fold ``.``/``..`` and clamp at ``/``.

    This never touches a tree: ``..`` after a symlink is folded lexically, as the
    spec's ``resolve_path`` does.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def join(base: str, path: str) -> str:
    """Join ``path`` onto ``base`` (unless ``path`` is absolute) and normalize."""
    if path.startswith("/"):
        return normalize(path)
    return normalize(base.rstrip("/") + "/" + path)


def is_ancestor(ancestor: RelPath, path: RelPath) -> bool:
    """Return whether ``ancestor`` is ``path`` or one of its ancestors."""
    return path[: len(ancestor)] == ancestor
