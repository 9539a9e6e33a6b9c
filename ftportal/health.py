"""Figures that higher apps add to ``/healthz`` (``ftportal.views.healthz``): this layer may not
import them, so each registers a section from its AppConfig.ready (the serving app: its request
log's queue, ``serving.apps``). A section is a name and a function answering plain JSON values
about this process, read at each health check."""

from __future__ import annotations

from collections.abc import Callable

HealthSection = Callable[[], dict[str, object]]

_sections: dict[str, HealthSection] = {}


def health_section_register(name: str, section: HealthSection) -> None:
    """Answer ``section()`` under ``name`` in every health check (registering again replaces)."""
    _sections[name] = section


def health_sections() -> dict[str, dict[str, object]]:
    return {name: section() for name, section in sorted(_sections.items())}
