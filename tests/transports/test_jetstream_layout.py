"""transports/jetstream/ stays split: one concern per module, each under 400 lines."""

from __future__ import annotations

from pathlib import Path

import pytest

import transports.jetstream

PACKAGE = Path(transports.jetstream.__file__).parent
MAX_LINES = 400
MODULES = sorted(PACKAGE.glob("*.py"))


def test_the_package_has_its_modules() -> None:
    assert {path.name for path in MODULES} >= {
        "__init__.py",
        "_blobs.py",
        "_connection.py",
        "_kv.py",
        "_log.py",
        "_names.py",
        "_subscription.py",
        "_transport.py",
    }


@pytest.mark.parametrize("path", MODULES, ids=[path.name for path in MODULES])
def test_every_module_is_under_the_line_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines < MAX_LINES, f"{path.name} has {lines} lines; split it by concern"
