"""``mesa mount`` / ``mesa unmount`` argument handling (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesa._types import RepoConfig
from mesa.cli import main
from mesa.fuse._cli import parse_repos

CHANGE = "k" * 32


def test_repo_specs_name_bookmarks_changes_and_read_only() -> None:
    assert parse_repos(["app", f"docs@{CHANGE}", "web@feature"], ["docs"]) == [
        RepoConfig("app"),
        RepoConfig("docs", change_id=CHANGE, read_only=True),
        RepoConfig("web", bookmark="feature"),
    ]


def test_read_only_must_name_a_mounted_repo() -> None:
    with pytest.raises(ValueError, match="not mounted: other"):
        parse_repos(["app"], ["other"])
    with pytest.raises(ValueError, match="invalid --repo"):
        parse_repos(["@main"], [])


def test_mount_refuses_what_it_cannot_mount(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mount", "/nonexistent/dir", "--org", "acme", "--repo", "app"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["mount", str(tmp_path), "--org", "acme", "--repo", "a", "--read-only", "b"]) == 2
    assert "not mounted: b" in capsys.readouterr().err


def test_unmount_of_something_not_mounted_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["unmount", str(tmp_path)]) == 1
    assert "mesa unmount" in capsys.readouterr().err
