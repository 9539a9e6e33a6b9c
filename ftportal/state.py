"""State machines: allowed transitions are written down once and checked in one place.

Each app keeps its table of allowed moves beside its model and makes its state changes through
one named transition in its own services (a training job's records an event, an evaluation's
stamps its times); those all come down to ``state_change`` here, so every row moves the same
way: the move is checked, the status and the other changes are set together, and a failure
text loses its server paths before it is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from .errors import ConflictError
from .paths import without_server_paths

# The fields that hold a failure's text, often an exception's: no page may show a server path.
FAILURE_TEXTS = ("error", "failure_message")


class Stateful(Protocol):
    """A row with a status that moves along a table of allowed transitions."""

    status: str

    def save(self, *, update_fields: Iterable[str] | None = None) -> None: ...


def check_transition(
    *,
    kind: str,
    current: str,
    target: str,
    allowed: Mapping[str, frozenset[str]],
) -> None:
    if target not in allowed.get(current, frozenset()):
        raise ConflictError(f"A {kind} cannot go from '{current}' to '{target}'.")


def state_set(
    row: Stateful,
    *,
    kind: str,
    target: str,
    allowed: Mapping[str, frozenset[str]],
    changes: Mapping[str, object] | None = None,
) -> list[str]:
    """Move ``row`` to ``target`` if ``allowed`` permits it and set the other field changes,
    without saving (for a caller that writes many rows in one bulk update). Returns the names of
    the fields set, status first. Nothing is set when the move is refused."""
    check_transition(kind=kind, current=row.status, target=target, allowed=allowed)
    values = dict(changes or {})
    for name in FAILURE_TEXTS:
        text = values.get(name)
        if isinstance(text, str):
            values[name] = without_server_paths(text)
    row.status = target
    for name, value in values.items():
        setattr(row, name, value)
    return ["status", *values]


def state_change(
    row: Stateful,
    *,
    kind: str,
    target: str,
    allowed: Mapping[str, frozenset[str]],
    changes: Mapping[str, object] | None = None,
    update_fields: Sequence[str] | None = None,
) -> None:
    """``state_set``, then save: the whole row when ``update_fields`` is None, else only the
    status, the changed fields and ``update_fields`` (columns the caller set itself, or an
    auto_now column that must be written)."""
    changed = state_set(row, kind=kind, target=target, allowed=allowed, changes=changes)
    row.save(update_fields=None if update_fields is None else [*changed, *update_fields])
