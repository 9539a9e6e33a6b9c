"""The import graph of the product keeps the shape docs/architecture.md draws.

Packages sit in layers and import only their own layer or lower ones; a lower layer that must
react to a higher one gets a hook registered from above. Between modules there is no import
cycle at load time, and an import deferred into a function that closes a cycle says why in a
comment beside it (the usual reason: a service queues a task whose module calls that service).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Lowest first; a package may import packages of its own rank or lower. config/ is the site
# (settings, root URLs, Celery app, demo): it sits above every app.
LAYER_OF = {
    "providers": 0,
    "ftportal": 1,
    "catalog": 1,
    "datasets": 2,
    "training": 3,
    "registry": 4,
    "evaluation": 5,
    "serving": 6,
    "monitoring": 7,
    "costs": 8,
    "config": 9,
}
# (lower, higher) within one rank: the catalog is built on the core, never the reverse.
LOWER_WITHIN_RANK = {("ftportal", "catalog")}
DJANGO_FREE = ("providers",)
DJANGO_TOPS = ("django", "rest_framework", "celery", "drf_spectacular")


@dataclass(frozen=True)
class Edge:
    source: str  # module importing
    target: str  # module imported (one of ours)
    path: Path
    line: int
    deferred: bool  # inside a function or class body, run only when called
    type_only: bool  # under `if TYPE_CHECKING:`, never run
    commented: bool  # a comment on the line or the line above says why


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _product_files() -> Iterator[Path]:
    for top in LAYER_OF:
        folder = REPO / top
        if folder.is_dir():
            yield from (p for p in sorted(folder.rglob("*.py")) if "migrations" not in p.parts)


@cache
def _modules() -> frozenset[str]:
    return frozenset(_module_name(path) for path in _product_files())


def _resolve(importer: str, is_package: bool, module: str | None, level: int) -> str:
    if level == 0:
        return module or ""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """Our modules an import statement loads: `from pkg import mod` names the submodule."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = _resolve(importer, is_package, node.module, node.level)
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in _modules() else base
            for alias in node.names
        ]
    return [name for name in names if name.split(".")[0] in LAYER_OF]


def _has_comment(lines: list[str], line: int) -> bool:
    return "#" in lines[line - 1] or lines[line - 2].strip().startswith("#")


def _edges_of(path: Path) -> Iterator[Edge]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    importer = _module_name(path)
    is_package = path.name == "__init__.py"
    module_level = {id(node) for node in tree.body}
    type_only = {
        id(inner)
        for node in tree.body
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for inner in node.body
    }
    module_level |= {  # a module-level `try:` or `if:` runs when the module loads
        id(inner)
        for node in tree.body
        if isinstance(node, (ast.If, ast.Try))
        for inner in [*node.body, *getattr(node, "orelse", []), *getattr(node, "handlers", [])]
    }
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for target in _targets(node, importer, is_package):
            yield Edge(
                source=importer,
                target=target,
                path=path.relative_to(REPO),
                line=node.lineno,
                deferred=id(node) not in module_level,
                type_only=id(node) in type_only,
                commented=_has_comment(lines, node.lineno),
            )


@cache
def _edges() -> tuple[Edge, ...]:
    return tuple(edge for path in _product_files() for edge in _edges_of(path))


def _top(module: str) -> str:
    return module.split(".")[0]


def _upward(edge: Edge) -> bool:
    source, target = _top(edge.source), _top(edge.target)
    if source == target:
        return False
    if LAYER_OF[target] == LAYER_OF[source]:
        return (source, target) in LOWER_WITHIN_RANK
    return LAYER_OF[target] > LAYER_OF[source]


def _reaches(start: str, goal: str, edges: tuple[Edge, ...]) -> bool:
    following: dict[str, set[str]] = {}
    for edge in edges:
        following.setdefault(edge.source, set()).add(edge.target)
    seen, stack = {start}, [start]
    while stack:
        for nxt in following.get(stack.pop(), set()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return False


def test_the_graph_is_read_from_the_product() -> None:
    """Guards the checks below against reading nothing."""
    assert len(_modules()) > 100
    assert any(
        e.source.startswith("evaluation.") and _top(e.target) == "registry" for e in _edges()
    )


def test_no_package_imports_one_above_it() -> None:
    upward = [f"{e.path}:{e.line} {e.source} -> {e.target}" for e in _edges() if _upward(e)]
    assert not upward, "\n".join(upward)


def test_providers_stay_free_of_django() -> None:
    found = []
    for path in _product_files():
        if _top(_module_name(path)) not in DJANGO_FREE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [f"{path.relative_to(REPO)}: {n}" for n in names if _top(n) in DJANGO_TOPS]
    assert not found, "\n".join(found)


def test_modules_form_no_cycle_when_they_load() -> None:
    loading = tuple(
        e for e in _edges() if not e.deferred and not e.type_only and e.source != e.target
    )
    cyclic = sorted(
        f"{e.path}:{e.line} {e.source} -> {e.target}"
        for e in loading
        if _reaches(e.target, e.source, loading)
    )
    assert not cyclic, "\n".join(cyclic)


def test_a_deferred_import_that_closes_a_cycle_says_why() -> None:
    edges = tuple(e for e in _edges() if not e.type_only)
    silent = sorted(
        f"{e.path}:{e.line} {e.source} -> {e.target}"
        for e in edges
        if e.deferred and not e.commented and _reaches(e.target, e.source, edges)
    )
    assert not silent, "\n".join(silent)
