"""Guidelines markdown to HTML, safe to show: raw HTML is escaped and unsafe links refused."""

from __future__ import annotations

from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

_SAFE_SCHEMES = ("http:", "https:", "mailto:")


def _link_allowed(url: str) -> bool:
    """Only web and mail links, or links without a scheme (relative, #anchors).

    markdown-it already refuses javascript:, vbscript:, file: and most data: URLs; we refuse any
    other scheme as well, since a guideline has no reason to link to one.
    """
    compact = "".join(url.split()).lower()
    scheme_end = compact.find(":")
    if scheme_end == -1 or "/" in compact[:scheme_end] or "?" in compact[:scheme_end]:
        return True
    return compact.startswith(_SAFE_SCHEMES)


# "commonmark" with html=False: a <script> typed into the guidelines comes out as text.
_renderer = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
_renderer.validateLink = _link_allowed  # type: ignore[method-assign]


def render_markdown(text: str) -> SafeString:
    # Safe to mark: markdown-it escapes every piece of the user's text it emits, raw HTML is
    # disabled and links pass _link_allowed; the output is markup markdown-it built itself.
    return mark_safe(_renderer.render(text))  # noqa: S308
