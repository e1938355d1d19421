"""Layers import downward only, and engine/ imports nothing impure.

The layers are ``simulations -> mesa -> transports -> engine`` (design.md §2);
``mesa_sdk`` is a root alias of mesa's public API and sits beside simulations. A
layer may import itself, the layers below it, the stdlib and third-party packages;
engine/ may import only itself and the stdlib, minus the modules banned in
engine/ruff.toml (clock, randomness, OS, network, asyncio, ...). Every import
statement counts, wherever it is written (inside functions, under TYPE_CHECKING),
and relative imports are resolved to their package.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYER_PACKAGES = ("engine", "transports", "mesa", "simulations")
FIRST_PARTY = frozenset({*LAYER_PACKAGES, "mesa_sdk"})

# Which first-party top-level modules each layer may import (itself included).
ALLOWED_FIRST_PARTY: dict[str, frozenset[str]] = {
    "engine": frozenset({"engine"}),
    "transports": frozenset({"transports", "engine"}),
    "mesa": frozenset({"mesa", "transports", "engine"}),
    "simulations": frozenset({"simulations", "mesa", "transports", "engine"}),
    "mesa_sdk": frozenset({"mesa_sdk", "mesa", "transports", "engine"}),
}

# Kept equal to the banned-api table of engine/ruff.toml (checked below).
ENGINE_BANNED = frozenset(
    {
        "time",
        "datetime",
        "random",
        "secrets",
        "os",
        "sys",
        "socket",
        "asyncio",
        "anyio",
        "threading",
        "subprocess",
        "select",
        "selectors",
        "uuid",
        "pathlib",
        "io",
        "shutil",
        "tempfile",
        "signal",
        "multiprocessing",
        "concurrent",
        "urllib",
        "http",
        "ssl",
        "nats",
        "jwt",
        "zstandard",
        "pycrdt",
        "transports",
        "mesa",
        "simulations",
    }
)

_DYNAMIC_IMPORTERS = frozenset({"__import__", "import_module"})


@dataclass(frozen=True, order=True)
class Violation:
    """One forbidden import, located at ``path:line``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def _imported_modules(tree: ast.Module, package: str) -> list[tuple[int, str]]:
    """Return (line, absolute dotted module) for every import in ``tree``.

    ``package`` is the package relative imports are resolved against. A relative
    import that climbs above the top-level package yields a name starting with ".".
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
                continue
            parts = package.split(".") if package else []
            if node.level - 1 >= len(parts):
                found.append((node.lineno, "." * node.level + (node.module or "")))
                continue
            base = parts[: len(parts) - (node.level - 1)]
            found.append((node.lineno, ".".join([*base, *([node.module] if node.module else [])])))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC_IMPORTERS)
                or (isinstance(node.func, ast.Attribute) and node.func.attr in _DYNAMIC_IMPORTERS)
            )
        ):
            # importlib.import_module("x") / __import__("x") with a literal name.
            found.append((node.lineno, node.args[0].value))
    return sorted(found)


def check_source(source: str, *, module: str, path: str) -> list[Violation]:
    """Return the layering violations of one module's source.

    Args:
        source: the Python source text.
        module: the module's dotted name (``engine.fold``; a package is named
            ``engine.sub.__init__`` so relative imports resolve like Python does).
        path: the file name used in reports.
    """
    parts = module.split(".")
    layer = parts[0]
    allowed = ALLOWED_FIRST_PARTY[layer]
    package = ".".join(parts[:-1])
    tree = ast.parse(source, filename=path)
    violations: list[Violation] = []
    for line, name in _imported_modules(tree, package):
        if name.startswith("."):
            violations.append(
                Violation(path, line, f"relative import {name!r} climbs above package {layer!r}")
            )
            continue
        top = name.split(".")[0]
        if top in FIRST_PARTY and top not in allowed:
            violations.append(
                Violation(path, line, f"{layer} imports {name} (layers import downward only)")
            )
        elif layer == "engine" and top in ENGINE_BANNED:
            violations.append(Violation(path, line, f"engine imports banned module {name}"))
        elif layer == "engine" and top not in FIRST_PARTY and top not in sys.stdlib_module_names:
            violations.append(
                Violation(path, line, f"engine imports {name} (only engine and the stdlib)")
            )
    return violations


def _module_name(file: Path) -> str:
    rel = file.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts)


def project_files() -> list[Path]:
    """Return every .py file of the layered packages, plus mesa_sdk.py if present."""
    files: list[Path] = []
    for package in LAYER_PACKAGES:
        files.extend(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)
    sdk = ROOT / "mesa_sdk.py"
    if sdk.is_file():
        files.append(sdk)
    return sorted(files)


def check_tree() -> list[Violation]:
    """Return the layering violations of the whole project, sorted by file and line."""
    violations: list[Violation] = []
    for file in project_files():
        violations.extend(
            check_source(
                file.read_text(encoding="utf-8"),
                module=_module_name(file),
                path=str(file.relative_to(ROOT)),
            )
        )
    return sorted(violations)


# --- the project itself ---------------------------------------------------------------


def test_project_layers_import_downward_only() -> None:
    violations = check_tree()
    assert not violations, "layering violations:\n" + "\n".join(map(str, violations))


def test_walk_covers_the_layers() -> None:
    files = {str(p.relative_to(ROOT)) for p in project_files()}
    # Guards against a walk that silently checks nothing.
    assert "engine/ids.py" in files
    assert "transports/base.py" in files


def test_banned_list_matches_engine_ruff_config() -> None:
    config = tomllib.loads((ROOT / "engine" / "ruff.toml").read_text(encoding="utf-8"))
    assert config["extend"] == "../pyproject.toml"
    banned_api = config["lint"]["flake8-tidy-imports"]["banned-api"]
    assert set(banned_api) == ENGINE_BANNED
    for name, entry in banned_api.items():
        assert entry["msg"].startswith("engine/ is pure: "), name


# --- the checker can fail -------------------------------------------------------------


def _reported(source: str, module: str) -> list[tuple[int, str]]:
    return [(v.line, v.message) for v in check_source(source, module=module, path="x.py")]


ENGINE_SOURCE = """\
from __future__ import annotations
import asyncio
import os.path
from time import monotonic
from . import ids
from .paths import RelPath
import hashlib, numpy
from engine.errors import FsError


def f():
    import random
    from transports import base
    return importlib.import_module("socket")
"""


def test_engine_violations_are_reported_with_lines() -> None:
    assert _reported(ENGINE_SOURCE, "engine.fold") == [
        (2, "engine imports banned module asyncio"),
        (3, "engine imports banned module os.path"),
        (4, "engine imports banned module time"),
        (7, "engine imports numpy (only engine and the stdlib)"),
        (12, "engine imports banned module random"),
        (13, "engine imports transports (layers import downward only)"),
        (14, "engine imports banned module socket"),
    ]


@pytest.mark.parametrize("name", sorted(ENGINE_BANNED))
def test_every_banned_module_is_reported_in_engine(name: str) -> None:
    source = f"import {name}\nfrom {name}.sub import thing\n"
    assert [line for line, _ in _reported(source, "engine.fold")] == [1, 2]


def test_transports_importing_upward_is_reported() -> None:
    source = (
        "from mesa import x\n"
        "import simulations.world\n"
        "from engine.ids import op_id\n"
        "import nats\n"
        "import mesa_sdk\n"
    )
    assert _reported(source, "transports.jetstream") == [
        (1, "transports imports mesa (layers import downward only)"),
        (2, "transports imports simulations.world (layers import downward only)"),
        (5, "transports imports mesa_sdk (layers import downward only)"),
    ]


def test_mesa_importing_simulations_is_reported() -> None:
    source = "from transports.memory import MemoryTransport\nfrom simulations import run\n"
    assert _reported(source, "mesa._mount") == [
        (2, "mesa imports simulations (layers import downward only)"),
    ]


def test_simulations_may_import_every_lower_layer() -> None:
    source = "import engine\nimport transports.memory\nfrom mesa import Mesa\nimport anyio\n"
    assert _reported(source, "simulations.world") == []


def test_relative_imports_resolve_to_their_package() -> None:
    # In engine/sub/mod.py ".." is engine; in engine/sub/__init__.py "." is engine.sub.
    assert _reported("from .. import ids\nfrom ..paths import x\n", "engine.sub.mod") == []
    assert _reported("from . import mod\n", "engine.sub.__init__") == []
    # Climbing out of the top-level package is an error Python would raise too.
    assert _reported("from .. import mesa\n", "engine.fold") == [
        (1, "relative import '..' climbs above package 'engine'"),
    ]


def test_violation_renders_as_file_and_line() -> None:
    (violation,) = check_source("import time\n", module="engine.fold", path="engine/fold.py")
    assert str(violation) == "engine/fold.py:1: engine imports banned module time"


# --- the module graph: no cycles, no reaching into another package's private modules ---

#: Documented internal seams: modules of one package that another may import although
#: they reach private pieces. Each names its documentation. (Tests are not a package
#: of the product and may import private modules: they test them.)
SEAMS: dict[str, str] = {
    "mesa.instruments": "mesa/instruments.py module docstring; docs/architecture.md",
}


def _project_modules() -> dict[str, Path]:
    """Return every first-party module by dotted name (packages as ``pkg.__init__``)."""
    return {_module_name(file): file for file in project_files()}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """Return the first-party module ``name`` names (a package as its ``__init__``)."""
    if name in modules:
        return name
    if f"{name}.__init__" in modules:
        return f"{name}.__init__"
    return None


def import_graph(modules: dict[str, Path] | None = None) -> dict[str, set[str]]:
    """Return module -> the first-party modules it imports, every import statement counted.

    ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
    ``pkg``; imports inside functions and under ``TYPE_CHECKING`` count like any other.
    """
    modules = _project_modules() if modules is None else modules
    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        package = ".".join(module.split(".")[:-1])
        edges: set[str] = set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                targets = [
                    f"{base}.{alias.name}"
                    if _resolve(f"{base}.{alias.name}", modules) is not None
                    else base
                    for alias in node.names
                ]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != module:
                    edges.add(resolved)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        # Iterative Tarjan: (node, iterator over its successors).
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in graph:
                    continue
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return sorted(out)


def _is_private(module: str) -> bool:
    return any(part.startswith("_") and part != "__init__" for part in module.split(".")[1:])


def private_reaches(graph: dict[str, set[str]]) -> list[str]:
    """Return ``a -> b`` for each import of another top-level package's private module."""
    out: list[str] = []
    for module, edges in sorted(graph.items()):
        for target in sorted(edges):
            if module.split(".")[0] == target.split(".")[0] or module in SEAMS:
                continue
            if _is_private(target):
                out.append(f"{module} -> {target}")
    return out


def test_no_import_cycle_anywhere() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_package_imports_another_packages_private_modules() -> None:
    found = private_reaches(import_graph())
    assert not found, "private modules reached from outside:\n" + "\n".join(found)


def test_cycle_finder_finds_a_cycle_and_only_it() -> None:
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}, "b.v": set()}
    assert cycles(graph) == [["a.x", "a.y", "a.z"]]
    assert cycles({"a.x": {"a.y"}, "a.y": set()}) == []


def test_private_reach_is_reported_and_seams_are_allowed() -> None:
    graph = {
        "simulations.x": {"mesa._mount", "mesa.instruments", "engine.fold"},
        "mesa.instruments": {"mesa._mount"},
        "mesa.fuse._ops": {"mesa._fs"},
    }
    assert private_reaches(graph) == ["simulations.x -> mesa._mount"]


def test_import_graph_sees_type_checking_and_function_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "mesa"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mesa._b import B\n"
    )
    (pkg / "_b.py").write_text("def f():\n    from mesa import _a\n")
    modules = {"mesa.__init__": pkg / "__init__.py", "mesa._a": pkg / "_a.py"}
    modules["mesa._b"] = pkg / "_b.py"
    graph = import_graph(modules)
    assert graph["mesa._a"] == {"mesa._b"}
    assert graph["mesa._b"] == {"mesa._a"}
    assert cycles(graph) == [["mesa._a", "mesa._b"]]
