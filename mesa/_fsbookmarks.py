"""``fs.bookmarks``: the bookmarks of the mounted repos, with filesystem errors.

The same operations as ``mesa.bookmarks`` (`mesa._bookmarks`), on a mounted repo: a
missing bookmark or change is ``FileNotFoundError``, an existing one
``FileExistsError``, a change to a read-only repo ``OSError(EROFS)``.
"""

from __future__ import annotations

import errno

from mesa._bookmarks import (
    Bookmark,
    delete,
    list_records,
    move,
    public,
    require_record,
    try_create,
)
from mesa._errormap import fs_errors, os_error
from mesa._mounted import MountedRepos


class FsBookmarks:
    """``fs.bookmarks``: bookmarks of the mounted repos."""

    def __init__(self, repos: MountedRepos) -> None:
        self._repos = repos

    async def create(self, repo: str, name: str) -> None:
        """Create ``name`` at the active change (`FileExistsError` if it exists)."""
        rm = self._repos.writable(repo)
        with fs_errors(rm.prefix):
            if await try_create(rm.store, name, rm.change_id) is None:
                raise os_error(errno.EEXIST, f"{rm.prefix}@{name}", "bookmark exists")

    async def get(self, repo: str, name: str) -> Bookmark:
        """Return bookmark ``name`` (`FileNotFoundError` if missing)."""
        rm = self._repos.mounted(repo)
        with fs_errors(f"{rm.prefix}@{name}"):
            return public(rm.store, (await require_record(rm.store, name))[0])

    async def list(self, repo: str, glob: str | None = None) -> list[str]:
        """Return the names of the repo's bookmarks (matching ``glob``), sorted."""
        rm = self._repos.mounted(repo)
        return [record.name for record, _ in await list_records(rm.store, glob)]

    async def move(
        self, repo: str, name: str, *, change_id: str, allow_backwards: bool = False
    ) -> None:
        """Move ``name`` to ``change_id`` (fast-forward only unless ``allow_backwards``)."""
        rm = self._repos.writable(repo)
        with fs_errors(f"{rm.prefix}@{name}"):
            await move(rm.store, name, change_id, allow_backwards=allow_backwards)

    async def delete(self, repo: str, name: str) -> None:
        """Delete bookmark ``name`` (`FileNotFoundError` if missing)."""
        rm = self._repos.writable(repo)
        with fs_errors(f"{rm.prefix}@{name}"):
            await delete(rm.store, name)
