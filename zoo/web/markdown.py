"""Model cards as HTML: markdown-it-py (the one module that imports it), made safe for a page anyone may open.

The card is a file from the store, written by whoever made the model (a hub repository's author): it is
untrusted. Raw HTML in it is escaped (``html=False``: ``<script>`` shows as text), and a link or image whose
scheme is not http, https or mailto (``javascript:``, ``data:``, ``vbscript:``, ``file:``) loses its target:
markdown-it's own ``validateLink`` refuses the dangerous schemes, and this module refuses every scheme it does
not know as well. The text is capped at ``MAX_CARD`` characters before it is parsed.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

MAX_CARD = 256 * 1024
_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*):")
_SAFE = {"http", "https", "mailto"}


def _validate_link(url: str) -> bool:
    """A link is kept when it is relative (no scheme) or its scheme is http, https or mailto. Browsers strip
    tabs, newlines and other control characters from a scheme (``java\\tscript:``), so they are removed first."""
    cleaned = re.sub(r"[\x00-\x20\x7f]", "", url)
    match = _SCHEME.match(cleaned)
    return match is None or match.group(1).lower() in _SAFE


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
    md.validateLink = _validate_link
    return md


_MD = _parser()


def card_html(text: str) -> str:
    """The card's Markdown as HTML safe to put in a page: no raw HTML, no script links. A YAML front matter
    (the hub's metadata block) is left out of the rendering."""
    text = text[:MAX_CARD]
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            text = text[text.find("\n", end + 4) + 1 if text.find("\n", end + 4) != -1 else len(text):]
    return _MD.render(text)
