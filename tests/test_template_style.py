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


# Included where every character shows (inside the answer diff's <pre>, and mid-sentence in the
# worker warning): a final newline would appear on the page, so these files have none.
NO_FINAL_NEWLINE = ("diff_segment.html", "ftportal/worker_last_seen.html")


def test_inline_includes_end_without_a_newline() -> None:
    ending_in_newline = [
        name for name in NO_FINAL_NEWLINE if (TEMPLATES / name).read_text().endswith("\n")
    ]
    assert ending_in_newline == [], f"Must not end with a newline: {ending_in_newline}"
