"""Figures of a whole project that a layer above monitoring computes (the budget, from
``costs``): that layer registers a reader here when Django starts, and alert rules read the
figure through it. With nothing registered the figure is unknown and its rules stay quiet."""

from __future__ import annotations

from collections.abc import Callable

ProjectFigureReader = Callable[[int], float | None]

_readers: dict[str, ProjectFigureReader] = {}


def project_figure_register(figure: str, reader: ProjectFigureReader) -> None:
    """``reader(project_id)`` answers ``figure`` (None: not known for that project)."""
    _readers[figure] = reader


def project_figure(figure: str, project_id: int) -> float | None:
    reader = _readers.get(figure)
    return reader(project_id) if reader is not None else None
