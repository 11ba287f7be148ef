"""A fetched page as text for a model: title line, URL line, text, cut notes.

A page is hostile input: every step here runs in time linear in its size, so the only
bound needed is the body's (``[fetch]`` ``max_bytes``). Two stdlib traps are avoided:

* a title pattern like ``<title[^>]*>(.*?)</title>`` rescans the rest of the page from
  every ``<title`` it meets (2 MB of bait: about 40 minutes); the title is found with
  fixed-text searches instead;
* ``html.parser`` (under ``html2text``) rescans the rest of the page at every tag start
  that never closes (70 KB of ``<title `` took 29 s); :func:`tidy_html` first rewrites
  the markup into plain tags without attributes, escapes a ``<`` that starts no
  complete tag, and drops comments, declarations, scripts and styles.

Callers run :func:`page_text` in a worker thread: a few MB still take seconds.
"""

from __future__ import annotations

import html
import re

import html2text

__all__ = ["TITLE_MAX_CHARS", "page_text", "page_title", "tidy_html"]

TITLE_MAX_CHARS = 200
# Fixed texts and bounded names only: no pattern here can backtrack across the page.
_TITLE_START = re.compile(r"<title(?=[\s>/])", re.IGNORECASE)
_TITLE_END = re.compile(r"</title", re.IGNORECASE)
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]{0,31})(?=[\s/>])")
_DROPPED = {"script": re.compile(r"</script", re.I), "style": re.compile(r"</style", re.I)}
_BLANK_LINES = re.compile(r"\n{3,}")


def page_text(url: str, content_type: str, body: str, cut_bytes: bool, max_chars: int) -> str:
    """``Title:`` (HTML with a title) and ``URL:`` lines, then the text, cut to ``max_chars``.

    Args:
        url: The page's final URL.
        content_type: Its ``Content-Type`` ('' when it sent none).
        body: The body, decoded.
        cut_bytes: The body was cut at ``[fetch]`` ``max_bytes``.
        max_chars: Most characters of text returned.
    """
    is_html = "html" in content_type.lower() or (
        not content_type and "<html" in body[:2000].lower()
    )
    lines: list[str] = []
    if is_html:
        title = page_title(body)
        if title:
            lines.append(f"Title: {title}")
        text = _html_to_text(tidy_html(body))
    else:
        text = body.strip()
    lines.append(f"URL: {url}")
    notes: list[str] = []
    if len(text) > max_chars:
        text = text[:max_chars].rstrip()
        notes.append(f"[text cut at {max_chars} characters]")
    if cut_bytes:
        notes.append("[page cut: larger than [fetch] max_bytes]")
    return "\n".join([*lines, "", text, *notes]).strip()


def page_title(body: str) -> str:
    """The first ``<title>``'s text, spaces collapsed, at most :data:`TITLE_MAX_CHARS`."""
    start = _TITLE_START.search(body)
    if start is None:
        return ""
    opened = body.find(">", start.end())
    if opened < 0:
        return ""
    end = _TITLE_END.search(body, opened + 1)
    if end is None:
        return ""
    # Entities and spaces are handled on a bounded slice (an entity is a few chars long).
    raw = body[opened + 1 : min(end.start(), opened + 1 + 4 * TITLE_MAX_CHARS)]
    title = " ".join(html.unescape(raw).split())
    return title[:TITLE_MAX_CHARS].rstrip()


def tidy_html(body: str) -> str:
    """``body`` as tags without attributes and text, in one pass (linear in its size).

    Every ``>`` is looked for at most once: when a tag start has no ``>`` after it, no
    later one has either, so the rest is text.
    """
    out: list[str] = []
    i = 0
    size = len(body)
    while i < size:
        lt = body.find("<", i)
        if lt < 0:
            out.append(body[i:])
            break
        out.append(body[i:lt])
        if body.startswith("<!--", lt):
            end = body.find("-->", lt + 4)
            i = size if end < 0 else end + 3
            continue
        tag = _TAG.match(body, lt)
        if tag is None:
            if body.startswith(("<!", "<?"), lt):  # doctype, CDATA, processing instruction
                end = body.find(">", lt + 2)
                i = size if end < 0 else end + 1
            else:
                out.append("&lt;")  # a bare "<" in text
                i = lt + 1
            continue
        gt = body.find(">", tag.end())
        if gt < 0:
            out.append(html.escape(body[lt:], quote=False))  # no tag ends from here on
            break
        closing, name = tag.group(1), tag.group(2).lower()
        i = gt + 1
        if name in _DROPPED and not closing:
            ended = _DROPPED[name].search(body, i)
            close = -1 if ended is None else body.find(">", ended.end())
            i = size if close < 0 else close + 1
            continue
        out.append(f"<{closing}{name}>")
    return "".join(out)


def _html_to_text(body: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no hard wraps: the model reads lines, not a terminal
    converter.ignore_images = True
    converter.ignore_links = True  # URLs would eat most of max_chars
    converter.ignore_emphasis = True
    text = converter.handle(body)
    return _BLANK_LINES.sub("\n\n", text).strip()
