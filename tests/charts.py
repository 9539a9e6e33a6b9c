"""Reading a page's charts as static/js/charts.js does: each <canvas data-chart="ID"> and the
JSON element with that id."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any


class _ChartReader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.canvases: list[str] = []
        self.json_scripts: dict[str, str] = {}
        self._script_id: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "canvas" and named.get("data-chart"):
            self.canvases.append(named["data-chart"] or "")
        elif tag == "script" and named.get("type") == "application/json" and named.get("id"):
            self._script_id, self._text = named["id"], []

    def handle_data(self, data: str) -> None:
        if self._script_id is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script_id is not None:
            self.json_scripts[self._script_id] = "".join(self._text)
            self._script_id = None


def page_charts(html: str) -> dict[str, dict[str, Any]]:
    """Each chart of the page by its data element's id; fails when a canvas has no data."""
    reader = _ChartReader()
    reader.feed(html)
    missing = [name for name in reader.canvases if name not in reader.json_scripts]
    assert not missing, f"canvases without their chart data: {missing}"
    return {name: json.loads(reader.json_scripts[name]) for name in reader.canvases}


def series_points(chart: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Each series' [x, y] points by the series' name in the legend."""
    return {series["name"]: series["points"] for series in chart["series"]}
