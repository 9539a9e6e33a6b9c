"""The vendored front-end libraries are the files their README names, and no page loads a
script or a style sheet from another site."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from django.conf import settings

VENDOR = Path(settings.BASE_DIR) / "static" / "vendor"
TEMPLATES = Path(settings.BASE_DIR) / "templates"
# What makes a browser fetch something (a script, a style sheet, an image, a frame, a CSS
# url() or @import) from another site: http:, https: or protocol-relative. Links people
# follow (<a href>) are not loads.
_REMOTE = r"""\s*=\s*["']?\s*(?:https?:)?//"""
EXTERNAL = re.compile(
    rf"<(?:script|img|iframe|source)\b[^>]*\bsrc{_REMOTE}"
    rf"|<link\b[^>]*\bhref{_REMOTE}"
    r"""|url\(\s*["']?\s*(?:https?:)?//|@import\s+["']?(?:https?:)?//""",
    re.IGNORECASE,
)


def readme_entries() -> dict[str, dict[str, str]]:
    """static/vendor/README.txt: blocks of "key: value" lines, each starting with "file:"."""
    entries: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in (VENDOR / "README.txt").read_text().splitlines():
        key, colon, value = line.partition(":")
        if not colon or key.startswith(" ") or " " in key:
            continue
        if key == "file":
            current = entries.setdefault(value.strip(), {})
        elif current is not None:
            current[key] = value.strip()
    return entries


def test_each_vendored_file_has_the_checksum_and_licence_its_readme_records() -> None:
    entries = readme_entries()
    vendored = sorted(
        path.name
        for path in VENDOR.iterdir()
        if path.name != "README.txt" and not path.name.endswith(".LICENSE")
    )

    assert sorted(entries) == vendored
    assert "chart.umd.min.js" in entries and "htmx.min.js" in entries
    for name, entry in entries.items():
        digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
        assert entry.get("sha256") == digest, f"{name}: README.txt records another checksum"
        assert re.fullmatch(r"\S+ \d+\.\d+\.\d+ \(npm\), \S+.*", entry["package"]), entry
        licence = re.search(r"see (\S+)$", entry["licence"])
        assert licence and (VENDOR / licence.group(1)).is_file(), f"{name}: no licence file"


def test_the_chart_library_is_the_pinned_version() -> None:
    head = (VENDOR / "chart.umd.min.js").read_text()[:200]
    version = readme_entries()["chart.umd.min.js"]["package"].split()[1]
    assert f"Chart.js v{version}\n" in head


def test_no_template_or_style_sheet_loads_anything_from_another_site() -> None:
    files = [*TEMPLATES.rglob("*.html"), *(Path(settings.BASE_DIR) / "static").rglob("*.css")]
    offenders = [
        f"{path.relative_to(settings.BASE_DIR)}:{number}: {line.strip()[:120]}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if EXTERNAL.search(line)
    ]
    assert len(files) > 10
    assert not offenders, offenders


def test_the_external_url_check_catches_a_cdn() -> None:
    assert EXTERNAL.search('<script src="https://cdn.jsdelivr.net/npm/chart.js"></script>')
    assert EXTERNAL.search("<link rel=stylesheet href=//unpkg.com/x.css>")
    assert EXTERNAL.search("body { background: url('http://example.com/a.png'); }")
    assert not EXTERNAL.search("<script src=\"{% static 'vendor/chart.umd.min.js' %}\"></script>")
    assert not EXTERNAL.search('<a href="https://docs.example.org/">documentation</a>')
    assert not EXTERNAL.search('<input placeholder="http://localhost:11434/v1">')
