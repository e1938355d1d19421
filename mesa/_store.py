"""A repo seen with one token: the store beneath the SDK's facades.

`RepoStore` names where one repo's records (KV), logs and blobs are read and written,
with which token, under which context. The domain modules build on it:
`mesa._changes` (change records, trees, seals, ancestry, diffs), `mesa._bookmarks`
(bookmark records, compare-and-set moves, following, merges), `mesa._snapshots`
(snapshot records and blobs) and `mesa._history` (a change's past). The facades
(`mesa._client`, ``fs.changes``, ``fs.bookmarks``) only open a store and call them.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesa._blobs import BlobCache
from mesa._context import Context
from mesa._gateway import Gateway
from mesa._records import RepoRecord, repo_key
from mesa.errors import NotFoundError
from transports.base import LogId


@dataclass(frozen=True)
class RepoStore:
    """One repo seen with one token (see module docstring)."""

    ctx: Context
    token: str
    repo: RepoRecord

    @property
    def gateway(self) -> Gateway:
        """Where the repo's logs, blobs and records live."""
        return self.ctx.gateway

    @property
    def org(self) -> str:
        """The org."""
        return self.ctx.org

    @property
    def name(self) -> str:
        """The repo name."""
        return self.repo.name

    @property
    def window_ms(self) -> int:
        """The repo's race window: every replica of its changes folds with it."""
        return self.repo.race_window_ms

    def log(self, change_id: str) -> LogId:
        """Return the log of ``change_id``."""
        return LogId(self.org, self.name, change_id)

    def blobs(self) -> BlobCache:
        """Return a blob reader for this repo (no disk cache)."""
        return BlobCache(self.gateway, self.org, self.name, self.token, None)


async def open_store(ctx: Context, token: str, repo: str) -> RepoStore:
    """Return the store of ``repo`` seen with ``token``.

    Raises:
        InvalidOptionsError: the name is invalid.
        NotFoundError: no such repo.
    """
    entry = await ctx.gateway.kv_get(token, repo_key(ctx.org, repo))
    if entry is None:
        raise NotFoundError(f"repo {ctx.org}/{repo} not found")
    return RepoStore(ctx, token, RepoRecord.decode(entry.value))
