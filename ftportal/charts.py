"""Charts as data. A selector builds a ``Chart``; the page renders it with
templates/ftportal/chart.html (the data goes in through ``json_script``) and static/js/charts.js
draws every chart of the page with the vendored Chart.js. Nothing else draws charts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

# How charts.js writes the values of an axis in its ticks and tooltips: "percent" takes
# fractions (0.25 is written 25 %), "scientific" suits learning rates (2.00e-4).
# "usd" writes dollars ("$1,234.50").
ValueFormat = Literal["decimal", "percent", "scientific", "integer", "usd"]
JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
Point = tuple[float | str, float]


@dataclass(frozen=True)
class Axis:
    """``title`` names the quantity and its unit, e.g. "Loss (cross-entropy per token)".
    ``labels`` makes it a category axis (model versions); otherwise it is numeric."""

    title: str
    format: ValueFormat = "decimal"
    min: float | None = None
    max: float | None = None
    labels: tuple[str, ...] = ()

    def as_json(self) -> dict[str, JsonValue]:
        return {
            "title": self.title,
            "format": self.format,
            "min": self.min,
            "max": self.max,
            "labels": list(self.labels),
        }


@dataclass(frozen=True)
class Series:
    """One line of a chart: its name in the legend and its (x, y) points in x order; ``axis``
    "y2" draws it against the chart's second value axis (on the right)."""

    name: str
    points: Sequence[Point]
    axis: Literal["y", "y2"] = "y"

    @property
    def latest(self) -> float | None:
        return self.points[-1][1] if self.points else None


@dataclass(frozen=True)
class Marker:
    """A moment on the x axis drawn as a labelled vertical line (a promotion, a rollback):
    ``x`` is where it stands, an x value of the chart's points (on a category axis, the label
    of the category that holds the moment); ``label`` says what happened there."""

    x: float | str
    label: str

    def as_json(self) -> dict[str, JsonValue]:
        return {"x": self.x, "label": self.label}


@dataclass(frozen=True)
class Chart:
    """``element_id`` names the page's JSON element, so it must be unique on the page;
    ``description`` says in words what the chart shows (screen readers read it); ``y2`` is a
    second value axis for series in another unit."""

    element_id: str
    description: str
    x: Axis
    y: Axis
    series: list[Series]
    y2: Axis | None = None
    # "bar" draws the series as bars stacked on each other (spend by kind per month: the
    # stack is the month's total); "line" draws lines.
    style: Literal["line", "bar"] = "line"
    # Vertical lines across the plot at these x values, each with its label.
    markers: tuple[Marker, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not any(series.points for series in self.series)

    @property
    def data(self) -> dict[str, JsonValue]:
        """What json_script writes into the page and charts.js reads."""
        return {
            "x": self.x.as_json(),
            "y": self.y.as_json(),
            "y2": self.y2.as_json() if self.y2 else None,
            "style": self.style,
            "series": [
                {"name": s.name, "axis": s.axis, "points": [[x, y] for x, y in s.points]}
                for s in self.series
            ],
            "markers": [marker.as_json() for marker in self.markers],
        }


@dataclass(frozen=True)
class HeatCell:
    """One cell of a heat map: ``column`` and ``row`` index the axes' labels, ``count`` is
    what the cell holds and ``shade`` (0 to 1) how strongly it is coloured."""

    column: int
    row: int
    count: int
    shade: float


@dataclass(frozen=True)
class HeatGroup:
    """Cells drawn in one colour, named in the legend (right answers, confusions, ...)."""

    name: str
    cells: Sequence[HeatCell]


@dataclass(frozen=True)
class HeatMap:
    """A matrix of counts drawn as coloured squares: ``x`` and ``y`` are category axes (their
    ``labels``), ``groups`` hold the cells, only those worth drawing (a confusion matrix of a
    hundred labels is mostly zeros, and the page carries its non-zero cells only).
    ``shade_title`` says what the shade measures, after a percentage: "of the expected
    label's items".
    Rendered like a ``Chart`` (templates/ftportal/chart.html); charts.js tells them apart by
    ``kind``."""

    element_id: str
    description: str
    x: Axis
    y: Axis
    groups: list[HeatGroup]
    shade_title: str
    count_title: str

    @property
    def is_empty(self) -> bool:
        return not any(group.cells for group in self.groups)

    @property
    def data(self) -> dict[str, JsonValue]:
        """What json_script writes into the page and charts.js reads; cells as
        [column, row, count, shade] to keep the page small."""
        return {
            "kind": "heatmap",
            "x": self.x.as_json(),
            "y": self.y.as_json(),
            "shade": {"title": self.shade_title, "format": "percent"},
            "count_title": self.count_title,
            "groups": [
                {
                    "name": group.name,
                    "cells": [
                        [cell.column, cell.row, cell.count, round(cell.shade, 4)]
                        for cell in group.cells
                    ],
                }
                for group in self.groups
            ],
        }
