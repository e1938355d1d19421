"""The README's quickstart, run as written against a private embedded server.

Every fenced block of the "Quickstart" section runs: Python blocks are saved under the
name their first comment gives, bash blocks run in order in one shell (``set -e``) with
the venv's ``mesa`` first on PATH, in a temporary directory and MESA_HOME.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesa import server
from tests.fuse.fuseutil import fuse_unusable

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quickstart_blocks() -> list[tuple[str, str]]:
    """The (language, text) of each fenced block of the README's quickstart section."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Quickstart")
    end = text.index("\n## ", start + 1)
    return FENCE.findall(text[start:end])


def test_the_quickstart_has_the_blocks_it_promises() -> None:
    languages = [language for language, _ in quickstart_blocks()]
    assert languages == ["bash", "python", "bash", "bash"]
    text = (ROOT / "README.md").read_text()
    assert text.index("## Quickstart") > text.index(".venv/bin/pytest -q -m")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "mesa-home"
    yield home
    server.stop(home)


@pytest.mark.skipif(fuse_unusable() is not None, reason=f"FUSE unavailable: {fuse_unusable()}")
def test_the_readme_quickstart_runs_as_written(home: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    script = ["set -euo pipefail"]
    for language, body in quickstart_blocks():
        if language == "python":
            name = re.match(r"# (\S+\.py)", body)
            assert name is not None, body
            (work / name.group(1)).write_text(body)
        else:
            script.append(body)
    env = {key: value for key, value in os.environ.items() if not key.startswith("MESA_")}
    env["MESA_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        result = subprocess.run(
            ["bash", "-c", "\n".join(script)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(work / "mnt")], check=False)
    out, err = result.stdout, result.stderr
    assert result.returncode == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    assert "created acme/app (default bookmark main)" in out
    assert "bob reads: b'# notes\\n'" in out
    assert "<<<<<<< conflict 1 of 1" in out
    assert "Conflicted files (1):\n  C notes.md" in out
    assert "No files changed" not in out
    assert "merged idea into main: " in out
    assert "nothing to merge: main already contains idea" in out
    assert "+an idea" in out
    assert "deleted acme/app" in out
    # The second status (after resolving through FUSE) has no conflict left.
    statuses = out.split("Repo:      app")
    assert len(statuses) == 3
    assert "Conflicted" not in statuses[2]
