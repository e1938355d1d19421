"""The instruments in simulations/bench/ reach mesa only through its public API or the seam.

They may import ``mesa`` (public names only), ``mesa.server``, ``mesa.instruments``
(the documented seam for instruments) and ``mesa.fuse.tuning``; nothing else from
mesa. They may not reach into a client or a mount through private attributes
(``fs._repos``) or the client's transport and tokens (``mesa.instruments.raw_transport``
hands those out). Checked on the source, so a benchmark nobody runs in CI still obeys.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "simulations" / "bench"
MESA_MODULES = frozenset({"mesa", "mesa.server", "mesa.instruments", "mesa.fuse.tuning"})
CLIENT_INTERNALS = frozenset({"transport", "management_token", "sign_token"})


def violations(source: str) -> list[str]:
    """Return what ``source`` uses of mesa beyond the public API and the seam."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(
                f"{node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] == "mesa" and alias.name not in MESA_MODULES
            )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mesa":
            if node.module not in MESA_MODULES:
                found.append(f"{node.lineno}: from {node.module} import ...")
            found.extend(
                f"{node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if alias.name.startswith("_")
            )
        elif isinstance(node, ast.Attribute):
            private = node.attr.startswith("_") and not node.attr.startswith("__")
            on_self = isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}
            if (private and not on_self) or node.attr in CLIENT_INTERNALS:
                found.append(f"{node.lineno}: .{node.attr}")
    return sorted(found, key=lambda text: int(text.split(":")[0]))


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_bench_modules_use_only_the_public_api_and_the_seam(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


def test_the_walk_finds_the_instruments() -> None:
    names = {p.name for p in BENCH.glob("*.py")}
    assert {"realtime.py", "fuse.py", "fuse_floor.py", "live.py"} <= names


def test_the_check_can_fail() -> None:
    source = (
        "from mesa._client import Mesa\n"
        "from mesa import _snapshots, server\n"
        "import mesa.fuse._ops\n"
        "from mesa.instruments import folded_state\n"
        "state = fs._repos[repo]\n"
        "token = client.management_token()\n"
        "log = client.transport\n"
        "self._inos = 1\n"
    )
    assert violations(source) == [
        "1: from mesa._client import ...",
        "2: from mesa import _snapshots",
        "3: import mesa.fuse._ops",
        "5: ._repos",
        "6: .management_token",
        "7: .transport",
    ]
