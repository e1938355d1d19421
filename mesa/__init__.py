"""mesafs: a realtime versioned filesystem for AI agents (the public SDK)."""

from __future__ import annotations

from engine.ids import ROOT_CHANGE_ID as VIRTUAL_ROOT_CHANGE_ID
from mesa._client import FsNamespace, Mesa, Repo, Repos
from mesa._fs import MesaFileSystem, MesaFileSystemSubscription
from mesa._mount import Mount
from mesa._types import DiskCacheConfig, FsStat, RepoConfig, WatchEvent
from mesa.errors import (
    ApiError,
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    InvalidOptionsError,
    LogCorruptError,
    MesaConnectionError,
    MesaError,
    MissingCredentialError,
    NotFoundError,
    RateLimitError,
    ServerError,
    ValidationError,
)

__all__ = [
    "VIRTUAL_ROOT_CHANGE_ID",
    "ApiError",
    "AuthenticationError",
    "AuthorizationError",
    "ConflictError",
    "DiskCacheConfig",
    "FsNamespace",
    "FsStat",
    "InvalidOptionsError",
    "LogCorruptError",
    "Mesa",
    "MesaConnectionError",
    "MesaError",
    "MesaFileSystem",
    "MesaFileSystemSubscription",
    "MissingCredentialError",
    "Mount",
    "NotFoundError",
    "RateLimitError",
    "Repo",
    "RepoConfig",
    "Repos",
    "ServerError",
    "ValidationError",
    "WatchEvent",
]
