"""pyproject.toml declares every package the code imports, in a range; requirements.txt (with
requirements-data.txt and scripts/install.sh for torch) pins each one to a version inside it."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

from django.conf import settings
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PRODUCT = (
    "config",
    "ftportal",
    "catalog",
    "datasets",
    "training",
    "evaluation",
    "registry",
    "serving",
    "costs",
    "monitoring",
    "providers",
)
DEVELOPMENT = ("tests", "bench", "fakes")
OWN_MODULES = {*PRODUCT, *DEVELOPMENT, "manage"}


def _top_level_imports(folders: tuple[str, ...]) -> dict[str, str]:
    """Each imported top-level module that is not the standard library or ours, with one file
    that imports it."""
    found: dict[str, str] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in OWN_MODULES:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _distributions_of(modules: dict[str, str]) -> dict[str, str]:
    providers = importlib.metadata.packages_distributions()
    named: dict[str, str] = {}
    for module, where in modules.items():
        assert module in providers, f"{where} imports {module}, which no installed package provides"
        for distribution in providers[module]:
            named[canonicalize_name(distribution)] = f"{where} imports {module}"
    return named


def _declared() -> tuple[dict[str, Requirement], dict[str, Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(line) for line in project["dependencies"]]
    development = [Requirement(line) for line in project["optional-dependencies"]["dev"]]
    return (
        {canonicalize_name(r.name): r for r in runtime},
        {canonicalize_name(r.name): r for r in development},
    )


def _pinned() -> dict[str, str]:
    """name: exact version, from the lock files and install.sh's torch."""
    pins: dict[str, str] = {}
    for lock in ("requirements.txt", "requirements-data.txt"):
        for line in (REPO / lock).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                name, version = line.split("==")
                pins[canonicalize_name(name)] = version
    torch = re.search(
        r"torch==\$\{FTPORTAL_TORCH_VERSION:-([^}]+)\}", (REPO / "scripts/install.sh").read_text()
    )
    assert torch, "scripts/install.sh no longer pins torch where this test looks"
    pins["torch"] = torch.group(1)
    return pins


def _installed_apps() -> dict[str, str]:
    return {app.split(".")[0]: f"INSTALLED_APPS has {app}" for app in settings.INSTALLED_APPS}


def test_every_package_the_product_imports_is_a_declared_dependency():
    runtime, _ = _declared()
    modules = {**_installed_apps(), **_top_level_imports(PRODUCT)}
    used = _distributions_of({m: why for m, why in modules.items() if m not in OWN_MODULES})
    missing = {name: why for name, why in used.items() if name not in runtime}
    assert not missing, f"used but not in [project] dependencies: {missing}"


def test_every_package_the_tests_and_benches_import_is_declared():
    runtime, development = _declared()
    used = _distributions_of(_top_level_imports(DEVELOPMENT))
    missing = {name: why for name, why in used.items() if name not in {**runtime, **development}}
    assert not missing, f"used but not declared in pyproject.toml: {missing}"


def test_every_declared_dependency_is_pinned_inside_its_range():
    runtime, development = _declared()
    pins = _pinned()
    for name, requirement in {**runtime, **development}.items():
        assert name in pins, f"{requirement} is declared but not pinned in requirements.txt"
        assert requirement.specifier, f"{requirement} has no version range"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} is pinned outside the declared range {requirement.specifier}"
        )


def test_torch_stays_on_the_tested_minor_version():
    runtime, _ = _declared()
    torch = runtime["torch"].specifier
    assert torch.contains("2.13.0") and not torch.contains("2.14.0") and not torch.contains("3.0")
