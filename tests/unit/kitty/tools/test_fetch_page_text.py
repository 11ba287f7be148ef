"""Page text: the markup tidied in one pass keeps what html2text needs."""

from __future__ import annotations

import pytest

from kitty.tools._page_text import page_text, page_title, tidy_html


@pytest.mark.parametrize(
    ("markup", "tidy"),
    [
        ('<P class="x">a < b &amp; c</p>', "<p>a &lt; b &amp; c</p>"),
        ("<br/><BR ><img src=x.png alt='>'>", "<br><br><img>'>"),
        ("<!doctype html><!-- note --><h1>Hi</h1>", "<h1>Hi</h1>"),
        ("<script>if (a<b) {}</script>t<style>p{}</STYLE >u", "tu"),
        ("x <title never closes <b", "x &lt;title never closes &lt;b"),
        ("<!-- never closes <p>", ""),
        ("tail <", "tail &lt;"),
    ],
)
def test_tidy_html_keeps_plain_tags_and_escapes_what_is_not_a_tag(markup: str, tidy: str) -> None:
    """Security review finding 5: tags lose attributes; a "<" that starts none is text."""
    assert tidy_html(markup) == tidy


def test_a_page_keeps_its_structure() -> None:
    """Security review finding 5: headings and lists survive the tidying."""
    page = (
        '<html><head><title x="1">T</title><script>var s = "<p>SECRET";</script></head>'
        '<body><h2 id="a">Part</h2><ul><li class="i">one</li><li>two</li></ul>'
        "<p>x &lt; y</p></body></html>"
    )
    text = page_text("https://e.example/", "text/html", page, False, 1000)
    assert text.splitlines()[:3] == ["Title: T", "URL: https://e.example/", ""]
    assert "## Part" in text and "* one" in text and "* two" in text
    assert "x < y" in text and "SECRET" not in text


@pytest.mark.parametrize(
    ("markup", "title"),
    [
        ("<TITLE lang=en>\n A &amp;  B </Title >", "A & B"),
        ("<titles>no</titles><title>yes</title>", "yes"),
        ("<title>never ends", ""),
        ("<title never ends", ""),
        ("<title>" + "w " * 1000 + "</title>", ("w " * 100).strip()),
    ],
)
def test_page_title(markup: str, title: str) -> None:
    """Security review finding 5: the title is read as before, bounded, in linear time."""
    assert page_title(markup) == title
