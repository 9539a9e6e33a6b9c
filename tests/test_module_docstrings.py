"""Every views and API module opens with a docstring saying which pages or operations it serves,
so a reader finds the right module without reading its functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APPS = (
    "config",
    "ftportal",
    "catalog",
    "datasets",
    "training",
    "evaluation",
    "registry",
    "serving",
    "costs",
)
PATTERNS = ("views.py", "*_views.py", "api.py", "*_api.py")


def _views_and_api_modules() -> list[Path]:
    return sorted(
        {path for app in APPS for pattern in PATTERNS for path in (REPO / app).rglob(pattern)}
    )


def test_there_are_views_and_api_modules_to_check() -> None:
    assert len(_views_and_api_modules()) >= 10


def test_each_views_and_api_module_has_a_docstring() -> None:
    missing = [
        str(path.relative_to(REPO))
        for path in _views_and_api_modules()
        if not ast.get_docstring(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert missing == [], "Modules without a docstring: " + ", ".join(missing)
