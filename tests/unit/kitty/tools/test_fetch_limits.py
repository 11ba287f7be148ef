"""The fetch path under hostile servers: compressed bombs, hostile HTML.

A real loopback HTTP server plays the hostile site; the fetch settings allow 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import html2text
import pytest

from endpoints.config import FetchSettings
from kitty.errors import ToolError
from kitty.tools._fetch import fetch_bytes, fetch_webpage_tool

LOOPBACK = FetchSettings.model_validate({"enabled": True, "allowed_hosts": ["127.0.0.1"]})
BOMB_BYTES = 64 * 1024 * 1024
PAGE = b"<html><head><title>Packed</title></head><body><p>Gzipped words.</p></body></html>"


def _settings(**changes: object) -> FetchSettings:
    return LOOPBACK.model_copy(update=changes)


def _bodies() -> dict[str, tuple[str, bytes]]:
    zeros = b"\0" * BOMB_BYTES
    once = gzip.compress(zeros, compresslevel=9)
    return {
        # 64 MiB of zeros: ~64 KB on the wire, one raw read of it decodes to ~64 MiB.
        "/bomb-gzip": ("gzip", once),
        # The same, gzipped twice: a few hundred bytes on the wire.
        "/bomb-gzip-gzip": ("gzip, gzip", gzip.compress(once, compresslevel=9)),
        "/bomb-deflate": ("deflate", zlib.compress(zeros, 9)),
        "/page-gzip": ("gzip", gzip.compress(PAGE)),
        "/page-raw-deflate": ("deflate", zlib.compress(PAGE)[2:-4]),  # no zlib header
        "/zstd": ("zstd", b"\x28\xb5\x2f\xfd" + b"\0" * 64),
        "/bad-gzip": ("gzip", b"\x1f\x8bnot really gzip at all"),
        # Hostile HTML, about 2 MB each: titles that never end, and a long plain page.
        "/page-open-titles": ("identity", b"<html><title>" * 150_000),
        "/page-title-starts": ("identity", b"<title " * 280_000),
        "/page-long": ("identity", b"<p>hello world</p>" * 110_000),
        "/page-odd-title": (
            "identity",
            b"<html><head><TITLE lang=en>\n A &amp; B </Title ></head><body>x</body></html>",
        ),
        "/page-huge-title": ("identity", b"<title>" + b"word " * 100_000 + b"</title>"),
    }


class _Handler(BaseHTTPRequestHandler):
    bodies: dict[str, tuple[str, bytes]] = {}
    seen_accept_encoding: list[str] = []  # replaced per server by the fixture

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.seen_accept_encoding.append(self.headers.get("Accept-Encoding", ""))
        encoding, body = self.bodies.get(self.path, ("", b""))
        if not body:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html" if "page" in self.path else "image/png")
        self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # The client stops reading at its cap, as it should.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


@dataclass(frozen=True)
class Site:
    """The hostile site: its base URL and the Accept-Encoding headers it received."""

    url: str
    seen_accept_encoding: list[str]


@pytest.fixture(scope="module")
def hostile() -> Iterator[Site]:
    seen: list[str] = []
    handler = type("Handler", (_Handler,), {"bodies": _bodies(), "seen_accept_encoding": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Site(f"http://127.0.0.1:{server.server_address[1]}", seen)
    server.shutdown()
    server.server_close()


@pytest.fixture
def site(hostile: Site) -> str:
    return hostile.url


@pytest.mark.parametrize("path", ["/bomb-gzip", "/bomb-gzip-gzip", "/bomb-deflate"])
async def test_a_compression_bomb_is_cut_at_the_cap_without_inflating_it(
    site: str, path: str
) -> None:
    """Security review finding 1: a decoded chunk must never exceed the cap by much.

    Before the fix httpx decoded each raw read whole: 273 bytes of ``gzip, gzip`` became
    one 64 MiB chunk before the cap was looked at.
    """
    tracemalloc.start()
    try:
        final, body, cut = await fetch_bytes(f"{site}{path}", LOOPBACK, max_bytes=1000)
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert final == f"{site}{path}"
    assert cut is True and body == b"\0" * 1000
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1048576:.1f} MiB while reading {path}"


async def test_identity_is_asked_for_and_a_gzipped_page_still_reads(hostile: Site) -> None:
    """Security review finding 1: ask for no encoding; decode a server that sends one anyway."""
    tool = fetch_webpage_tool(LOOPBACK)
    assert tool is not None
    hostile.seen_accept_encoding.clear()
    for path in ("/page-gzip", "/page-raw-deflate"):
        text = await tool.ainvoke({"url": f"{hostile.url}{path}"})
        assert text.splitlines()[0] == "Title: Packed" and "Gzipped words." in text
    assert hostile.seen_accept_encoding == ["identity", "identity"]


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/zstd", "Content-Encoding zstd"),
        ("/bad-gzip", "is not valid gzip"),
    ],
)
async def test_an_encoding_that_cannot_be_decoded_within_bounds_is_refused(
    site: str, path: str, says: str
) -> None:
    """Security review finding 1: unknown encodings are refused, not decoded unbounded."""
    with pytest.raises(ToolError, match=says) as refused:
        await fetch_bytes(f"{site}{path}", LOOPBACK, max_bytes=1000)
    assert f"{site}{path}" in str(refused.value)


# A guard: before the fix the title regex took about 40 minutes on each of these, and
# html.parser (under html2text) hours on the second (70 KB of it took 29 s).
@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", ["/page-open-titles", "/page-title-starts"])
async def test_a_title_that_never_ends_does_not_stall_the_fetch(site: str, path: str) -> None:
    """Security review finding 5: title and text are found in linear time, on 2 MB of bait."""
    tool = fetch_webpage_tool(_settings(max_bytes=3_000_000))
    assert tool is not None
    text = await tool.ainvoke({"url": f"{site}{path}"})
    assert text.splitlines()[0] == f"URL: {site}{path}"  # no title line: none ended


async def test_titles_are_still_read_and_bounded(site: str) -> None:
    """Security review finding 5: case, attributes, entities and spaces as before; a
    title is cut to a line's length."""
    tool = fetch_webpage_tool(LOOPBACK)
    assert tool is not None
    odd = await tool.ainvoke({"url": f"{site}/page-odd-title"})
    assert odd.splitlines()[0] == "Title: A & B"
    huge = await tool.ainvoke({"url": f"{site}/page-huge-title"})
    title = huge.splitlines()[0]
    assert title.startswith("Title: word word") and len(title) <= len("Title: ") + 200


async def test_html_is_converted_off_the_event_loop(
    site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security review finding 5: the loop keeps running while a page becomes text.

    The conversion waits, inside html2text, for the event loop to tick: on the loop's own
    thread it never would (the wait gives up after 10 s and records False).
    """
    converting = threading.Event()
    loop_ticked = threading.Event()
    waits: list[bool] = []
    handle = html2text.HTML2Text.handle

    def watched_handle(self: html2text.HTML2Text, data: str) -> str:
        converting.set()
        waits.append(loop_ticked.wait(timeout=10))
        return handle(self, data)

    async def ticker() -> None:
        while True:
            if converting.is_set():
                loop_ticked.set()
            await asyncio.sleep(0.05)

    monkeypatch.setattr(html2text.HTML2Text, "handle", watched_handle)
    tool = fetch_webpage_tool(_settings(max_bytes=3_000_000, max_chars=100))
    assert tool is not None
    ticking = asyncio.create_task(ticker())
    try:
        text = await tool.ainvoke({"url": f"{site}/page-long"})
    finally:
        ticking.cancel()
    assert waits == [True]
    assert text.startswith(f"URL: {site}/page-long") and "hello world" in text
