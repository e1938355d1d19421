"""Public value types: mount options, stats and watch events."""

from __future__ import annotations

from dataclasses import dataclass

from engine.ids import is_change_id
from mesa.errors import InvalidOptionsError


@dataclass(frozen=True)
class RepoConfig:
    """Mount one repo, optionally pinned to a bookmark or a change, optionally read-only."""

    name: str
    bookmark: str | None = None
    change_id: str | None = None
    read_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidOptionsError("RepoConfig.name must be a non-empty string")
        if self.bookmark is not None and self.change_id is not None:
            raise InvalidOptionsError("RepoConfig takes a bookmark or a change_id, not both")
        if self.bookmark is not None and (not isinstance(self.bookmark, str) or not self.bookmark):
            raise InvalidOptionsError("RepoConfig.bookmark must be a non-empty string")
        if self.change_id is not None and not is_change_id(self.change_id):
            raise InvalidOptionsError(
                f"RepoConfig.change_id must be a change id (32 chars in k..z), "
                f"not {self.change_id!r}"
            )
        if not isinstance(self.read_only, bool):
            raise InvalidOptionsError("RepoConfig.read_only must be a bool")


@dataclass(frozen=True)
class DiskCacheConfig:
    """Keep fetched blobs on disk under ``path``, up to ``max_size_bytes`` (auto when None)."""

    path: str
    max_size_bytes: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise InvalidOptionsError("DiskCacheConfig.path must be a non-empty string")
        size = self.max_size_bytes
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise InvalidOptionsError(
                "DiskCacheConfig.max_size_bytes must be a positive int or None"
            )


@dataclass(frozen=True)
class FsStat:
    """Metadata of a path, as ``stat``/``lstat`` return it; ``mode`` is the permission bits."""

    is_file: bool
    is_directory: bool
    is_symbolic_link: bool
    mode: int
    size: int
    mtime_ms: float


@dataclass(frozen=True)
class WatchEvent:
    """An invalidation: ``path`` changed; ``recursive`` when descendants may have too."""

    path: str
    recursive: bool
