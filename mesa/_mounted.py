"""The repos of one mount by name, and the lookups ``fs.*`` namespaces share.

`MountedRepos` is what `MesaFileSystem`, ``fs.changes`` and ``fs.bookmarks`` know of
a mount: its org and its `RepoMount`s. A repo is named ``app`` or ``org/app``; one
that is not mounted is ``FileNotFoundError``, a write to a read-only one
``OSError(EROFS)``, as filesystem methods raise. A path that is relative or outside
the mounted repos is ``FileNotFoundError`` whose message says that mount paths are
``/<org>/<repo>/...`` and names the repos mounted (`outside`, `relative`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from engine import paths
from mesa._errormap import os_error
from mesa._mount import RepoMount

#: What tools print for ENOENT; the hint follows it (``fs.bash`` shows it as bash would).
_ENOENT = os.strerror(errno.ENOENT)


class MountedRepos:
    """The mounted repos of one org, in the order they were mounted."""

    def __init__(self, org: str) -> None:
        self.org = org
        self._by_name: dict[str, RepoMount] = {}

    def add(self, repo: RepoMount) -> None:
        """Attach a mounted repo."""
        self._by_name[repo.name] = repo

    def get(self, name: str) -> RepoMount | None:
        """Return the repo mounted as ``name``, or None."""
        return self._by_name.get(name)

    def __getitem__(self, name: str) -> RepoMount:
        return self._by_name[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def values(self) -> list[RepoMount]:
        """The mounted repos, in mount order."""
        return list(self._by_name.values())

    def mounted(self, repo: str) -> RepoMount:
        """Return the mounted repo ``repo`` (``app`` or ``org/app``), or raise ENOENT."""
        if not isinstance(repo, str):
            raise TypeError("repo must be a str")
        name = repo
        if "/" in repo:
            org, _, name = repo.partition("/")
            if org != self.org:
                raise self.outside(f"/{repo}", org, name)
        found = self._by_name.get(name)
        if found is None:
            raise self.outside(f"/{self.org}/{name}", self.org, name)
        found.check_alive()
        return found

    def writable(self, repo: str) -> RepoMount:
        """Return the mounted repo if it is writable, else raise ``OSError(EROFS)``."""
        found = self.mounted(repo)
        if found.read_only:
            raise os_error(errno.EROFS, found.prefix)
        return found

    def locate(self, path: str) -> tuple[RepoMount, paths.RelPath]:
        """Return the mounted repo and the repo-relative path of ``/<org>/<repo>/...``.

        The path is taken literally (``.`` and ``..`` folded, symlinks not followed).
        """
        if not isinstance(path, str):
            raise TypeError(f"path must be a str, not {type(path).__name__}")
        parts = paths.normalize(path).split("/")[1:]
        if not path.startswith("/"):
            raise self.relative(path)
        if len(parts) < 2 or parts[0] != self.org:
            raise self.outside(path, parts[0], parts[1] if len(parts) > 1 else None)
        return self.mounted(parts[1]), tuple(parts[2:])

    def hint(self) -> str:
        """Say where paths of this mount are: ``/<org>/<repo>/...`` and the repos mounted."""
        mounted = ", ".join(f"/{self.org}/{name}" for name in self._by_name) or "none"
        return f"mount paths are /<org>/<repo>/... (mounted here: {mounted})"

    def relative(self, path: str) -> OSError:
        """Return the ``FileNotFoundError`` for a relative ``path``, with the hint."""
        return os_error(errno.ENOENT, path, f"{_ENOENT}: not an absolute path; {self.hint()}")

    def outside(self, path: str, org: str, repo: str | None) -> OSError:
        """Return the ``FileNotFoundError`` for ``path`` in an org or repo not mounted here.

        ``repo`` None: ``path`` stops above the repos (``/`` or ``/<org>``).
        """
        if org and org != self.org:
            why = f"org {org!r} is not mounted here"
        elif repo is None:
            why = "not inside a mounted repo"
        else:
            why = f"repo {self.org}/{repo} is not mounted here"
        return os_error(errno.ENOENT, path, f"{_ENOENT}: {why}; {self.hint()}")
