"""State machines: allowed transitions are written down once and checked in one place."""

from __future__ import annotations

from collections.abc import Mapping

from .errors import ConflictError


def check_transition(
    *,
    kind: str,
    current: str,
    target: str,
    allowed: Mapping[str, frozenset[str]],
) -> None:
    if target not in allowed.get(current, frozenset()):
        raise ConflictError(f"A {kind} cannot go from '{current}' to '{target}'.")
