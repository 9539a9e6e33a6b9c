"""Templates stay readable: no line longer than LIMIT characters, so markup is reviewed line by
line instead of as one run of tags and conditions."""

from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
LIMIT = 160


def test_template_lines_stay_under_the_limit() -> None:
    too_long = [
        f"{path.relative_to(TEMPLATES)}:{number} ({len(line)} characters)"
        for path in sorted(TEMPLATES.rglob("*.html"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if len(line) > LIMIT
    ]
    assert too_long == [], "Template lines over the limit:\n" + "\n".join(too_long)
