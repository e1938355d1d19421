"""The public surface is pinned: a change to it is a deliberate edit of this file."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
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


def test_mesa_file_system_metadata_methods_are_pinned() -> None:
    fs = mesa.MesaFileSystem
    for name in ("set_metadata", "get_metadata", "clear_metadata"):
        assert inspect.iscoroutinefunction(getattr(fs, name)), name
    assert list(inspect.signature(fs.set_metadata).parameters) == ["self", "path", "metadata"]
    get = inspect.signature(fs.get_metadata).parameters
    assert list(get) == ["self", "path", "at"]
    assert get["at"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(fs.clear_metadata).parameters) == ["self", "path"]
    fields = [f.name for f in dataclasses.fields(mesa.HistoryEntry)]
    assert fields == ["seq", "time_ms", "author", "op", "paths", "metadata"]
