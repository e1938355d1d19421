"""The public surface is pinned: a change to it is a deliberate edit of this file."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import mesa
import mesa_sdk

ROOT = Path(__file__).resolve().parent.parent

PUBLIC = [
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
    "VIRTUAL_ROOT_CHANGE_ID",
    "ValidationError",
    "WatchEvent",
    "__version__",
]


def test_mesa_all_is_pinned() -> None:
    assert sorted(mesa.__all__) == PUBLIC
    assert len(set(mesa.__all__)) == len(mesa.__all__)


def test_every_public_name_exists_and_is_not_private_by_mistake() -> None:
    for name in mesa.__all__:
        assert hasattr(mesa, name), name
    exported = {n for n in vars(mesa) if not n.startswith("_")} - {"annotations"}
    modules = {"errors", "server", "instruments", "fuse", "cli"}
    # Everything mesa/__init__ binds publicly is either exported or a submodule.
    assert exported - set(mesa.__all__) <= modules


def test_mesa_sdk_is_the_same_surface() -> None:
    assert sorted(mesa_sdk.__all__) == PUBLIC
    for name in mesa.__all__:
        assert getattr(mesa_sdk, name) is getattr(mesa, name)


def test_version_matches_the_distribution() -> None:
    assert mesa.__version__ == importlib.metadata.version("mesafs")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" in pyproject["project"]["dynamic"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "mesa._version.__version__"


def test_public_errors_say_when_they_are_raised() -> None:
    for name in mesa.__all__:
        value = getattr(mesa, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert value.__doc__ is not None, name
            assert value.__doc__.startswith("Raised "), name
