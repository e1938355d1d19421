"""mesafs: a realtime versioned filesystem for AI agents (the public SDK)."""

from __future__ import annotations

from engine.ids import ROOT_CHANGE_ID as VIRTUAL_ROOT_CHANGE_ID
from mesa._bash import Bash, ExecResult
from mesa._bookmarks import Bookmark, Bookmarks, MergeResult
from mesa._changes import ChangeDiff, ChangeInfo, DiffStats, FileDiff
from mesa._client import Changes, Diffs, FsNamespace, Mesa, Repo, Repos
from mesa._fs import MesaFileSystem, MesaFileSystemSubscription
from mesa._fsbookmarks import FsBookmarks
from mesa._history import CheckpointResult, FsChanges, HistoryEntry
from mesa._mounting import Mount
from mesa._types import DiskCacheConfig, FsStat, RepoConfig, WatchEvent
from mesa._version import __version__
from mesa.errors import (
    ApiError,
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    FoldError,
    InvalidOptionsError,
    LogCorruptError,
    MesaConnectionError,
    MesaError,
    MissingCredentialError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServerError,
    ValidationError,
)

__all__ = [
    "__version__",
    "VIRTUAL_ROOT_CHANGE_ID",
    "ApiError",
    "AuthenticationError",
    "AuthorizationError",
    "Bash",
    "Bookmark",
    "Bookmarks",
    "ChangeDiff",
    "ChangeInfo",
    "Changes",
    "CheckpointResult",
    "ConflictError",
    "DiffStats",
    "Diffs",
    "DiskCacheConfig",
    "ExecResult",
    "FileDiff",
    "FoldError",
    "FsBookmarks",
    "FsChanges",
    "FsNamespace",
    "FsStat",
    "HistoryEntry",
    "InvalidOptionsError",
    "LogCorruptError",
    "MergeResult",
    "Mesa",
    "MesaConnectionError",
    "MesaError",
    "MesaFileSystem",
    "MesaFileSystemSubscription",
    "MissingCredentialError",
    "Mount",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitError",
    "Repo",
    "RepoConfig",
    "Repos",
    "ServerError",
    "ValidationError",
    "WatchEvent",
]
