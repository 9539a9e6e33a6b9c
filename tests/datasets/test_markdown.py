"""Guidelines markdown is the one place the project marks HTML safe; these tests are why that
is allowed: whatever a user types, the HTML holds only markdown's own tags, escaped text and
web or mail links."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from datasets.review.markdown import render_markdown

# What commonmark emits by itself; any other tag could only come from the user's text.
MARKDOWN_TAGS = frozenset(
    [
        "p",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "em",
        "strong",
        "a",
        "img",
        "code",
        "pre",
        "blockquote",
        "ul",
        "ol",
        "li",
        "hr",
        "br",
    ]
)
ALLOWED_ATTRIBUTES = frozenset({"href", "src", "alt", "title", "start"})
SAFE_URL = re.compile(r"^(https?:|mailto:|[^:]*$|[^:]*[/?#])", re.IGNORECASE)


class _Audit(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in MARKDOWN_TAGS:
            self.problems.append(f"tag <{tag}>")
        for name, value in attrs:
            if name not in ALLOWED_ATTRIBUTES:
                self.problems.append(f"attribute {name} on <{tag}>")
            if name in ("href", "src") and not SAFE_URL.match("".join((value or "").split())):
                self.problems.append(f"{name}={value!r}")


def problems(text: str) -> list[str]:
    audit = _Audit()
    audit.feed(str(render_markdown(text)))
    audit.close()
    return audit.problems


ATTACKS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](java&#x09;script:alert(1))",
    "[x]( javascript:alert(1) )",
    "![x](javascript:alert(1))",
    "![x](data:text/html;base64,PHNjcmlwdD4=)",
    "[x](vbscript:msgbox(1))",
    "[x](file:///etc/passwd)",
    "<javascript:alert(1)>",
    '[x](https://example.com "a\\" onmouseover=\\"alert(1)")',
    "```\n</code><script>alert(1)</script>\n```",
    "<div onclick=alert(1)>block html</div>",
    "[x]: javascript:alert(1)\n\n[x]",
]


def test_known_attacks_come_out_as_text_or_without_their_link():
    for attack in ATTACKS:
        assert problems(attack) == [], attack
        assert "<script" not in str(render_markdown(attack)).lower(), attack


def test_web_mail_and_relative_links_survive():
    html = str(render_markdown("[a](https://x.org/p?q=1) [b](mailto:t@x.org) [c](#rules) [d](/p)"))
    for href in (
        'href="https://x.org/p?q=1"',
        'href="mailto:t@x.org"',
        'href="#rules"',
        'href="/p"',
    ):
        assert href in html


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("<>\"'`=()[]!:/&#;*_-\n aJjSsCcRrIiPpTtVvBbDdAa1")),
        max_size=80,
    )
)
def test_no_text_produces_a_tag_attribute_or_link_markdown_would_not(text: str):
    assert problems(text) == []
