"""fetch_webpage against a real loopback HTTP server: text, host rules, redirects, caps."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langchain_core.tools import BaseTool

from endpoints.config import FetchSettings
from kitty.errors import ToolError
from kitty.tools._fetch import MAX_REDIRECTS, check_url_allowed, fetch_bytes, fetch_webpage_tool

PAGE = """<!doctype html><html><head><title>Wall hook &amp; bracket</title>
<style>.x { color: red }</style><script>var secret = "SCRIPT-TEXT";</script></head>
<body><h1>Hook sizing</h1><p>A <b>2 kg</b> bag needs a PETG hook with 40% infill.</p>
<ul><li>print flat</li><li>4 walls</li></ul></body></html>"""


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        address = self.server.server_address
        assert isinstance(address, tuple)  # (host, port): the site binds 127.0.0.1
        port = address[1]
        if self.path == "/page":
            self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        elif self.path == "/big":
            self._send(200, b"x" * 50_000, "text/plain")
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b"late", "text/plain")
        elif self.path == "/drip":
            # Each byte comes well within the read timeout; the whole page never does.
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            try:
                for _ in range(30):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.1)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should
        elif self.path == "/hop":
            self._send(302, b"", "text/plain", Location="/page")
        elif self.path == "/to-private":
            self._send(302, b"", "text/plain", Location="http://192.168.7.7/admin")
        elif self.path == "/to-localhost":
            self._send(301, b"", "text/plain", Location=f"http://localhost:{port}/page")
        elif self.path == "/loop":
            self._send(302, b"", "text/plain", Location="/loop")
        elif self.path == "/image":
            self._send(200, b"\x89PNG....", "image/png")
        else:
            self._send(404, b"no such page", "text/plain")


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _tool(**settings: object) -> BaseTool:
    tool = fetch_webpage_tool(FetchSettings.model_validate({"enabled": True, **settings}))
    assert tool is not None
    return tool


LOOPBACK = {"allowed_hosts": ["127.0.0.1"]}


async def test_html_becomes_text_with_the_title_first(site: str) -> None:
    tool = _tool(**LOOPBACK)
    assert tool.name == "fetch_webpage"
    text = await tool.ainvoke({"url": f"{site}/page"})
    assert text.splitlines()[0] == "Title: Wall hook & bracket"
    assert "Hook sizing" in text
    assert "2 kg bag needs a PETG hook with 40% infill" in text
    assert "print flat" in text
    assert "<" not in text and "SCRIPT-TEXT" not in text and "color: red" not in text


async def test_loopback_is_refused_by_default_with_the_fix(site: str) -> None:
    tool = _tool()
    with pytest.raises(ToolError) as refused:
        await tool.ainvoke({"url": f"{site}/page"})
    message = str(refused.value)
    assert "127.0.0.1" in message and "loopback" in message
    assert "allowed_hosts" in message and "allow_private" in message


async def test_allow_private_opens_every_private_address(site: str) -> None:
    text = await _tool(allow_private=True).ainvoke({"url": f"{site}/page"})
    assert "Hook sizing" in text


async def test_blocked_host_is_refused_even_when_private_is_allowed(site: str) -> None:
    tool = _tool(allow_private=True, blocked_hosts=["127.0.0.1"])
    with pytest.raises(ToolError, match="blocked by \\[fetch\\] blocked_hosts"):
        await tool.ainvoke({"url": f"{site}/page"})


def test_blocked_domain_covers_its_subdomains() -> None:
    settings = FetchSettings(blocked_hosts=[".example.com"])
    for url in ("https://example.com/", "https://docs.Example.com./a"):
        with pytest.raises(ToolError, match="blocked"):
            check_url_allowed(url, settings)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only http:// and https://"),
        ("ftp://example.org/x", "only http:// and https://"),
        ("http:///nohost", "no host"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.1.2.3/", "private"),
        ("http://[::1]:8080/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://localhost/", "loopback"),
    ],
)
def test_addresses_that_are_not_public_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        check_url_allowed(url, FetchSettings())


def test_a_public_address_passes() -> None:
    check_url_allowed("https://93.184.215.14/page", FetchSettings())


async def test_redirects_are_followed_and_each_hop_is_checked(site: str) -> None:
    tool = _tool(**LOOPBACK)
    followed = await tool.ainvoke({"url": f"{site}/hop"})
    assert "Hook sizing" in followed and f"URL: {site}/page" in followed
    with pytest.raises(ToolError, match=r"192\.168\.7\.7, a private address"):
        await tool.ainvoke({"url": f"{site}/to-private"})
    # localhost is the same machine, but only 127.0.0.1 was allowed.
    with pytest.raises(ToolError, match="host localhost resolves to"):
        await tool.ainvoke({"url": f"{site}/to-localhost"})


async def _page_tool(url: str, settings: FetchSettings) -> object:
    tool = fetch_webpage_tool(settings)
    assert tool is not None
    return await tool.ainvoke({"url": url})


async def _image_bytes(url: str, settings: FetchSettings) -> object:
    return await fetch_bytes(url, settings, max_bytes=1000, accept="image/*")


@pytest.mark.parametrize("fetch", [_page_tool, _image_bytes], ids=["fetch_webpage", "fetch_bytes"])
async def test_both_entry_points_refuse_a_redirect_to_a_forbidden_host(
    site: str, fetch: Callable[[str, FetchSettings], Awaitable[object]]
) -> None:
    settings = FetchSettings.model_validate({"enabled": True, **LOOPBACK})
    with pytest.raises(ToolError, match=r"192\.168\.7\.7, a private address"):
        await fetch(f"{site}/to-private", settings)
    with pytest.raises(ToolError, match="host localhost resolves to"):
        await fetch(f"{site}/to-localhost", settings)
    blocked = FetchSettings.model_validate(
        {"enabled": True, "allow_private": True, "blocked_hosts": ["localhost"]}
    )
    with pytest.raises(ToolError, match="blocked by \\[fetch\\] blocked_hosts"):
        await fetch(f"{site}/to-localhost", blocked)
    with pytest.raises(ToolError, match=f"more than {MAX_REDIRECTS} times"):
        await fetch(f"{site}/loop", settings)


async def test_redirect_loop_stops(site: str) -> None:
    with pytest.raises(ToolError, match=f"more than {MAX_REDIRECTS} times"):
        await _tool(**LOOPBACK).ainvoke({"url": f"{site}/loop"})


async def test_body_over_max_bytes_is_cut(site: str) -> None:
    text = await _tool(**LOOPBACK, max_bytes=1000, max_chars=100_000).ainvoke(
        {"url": f"{site}/big"}
    )
    assert "x" * 1000 in text and "x" * 1001 not in text
    assert "max_bytes" in text


async def test_text_is_cut_to_max_chars(site: str) -> None:
    text = await _tool(**LOOPBACK, max_chars=300).ainvoke({"url": f"{site}/big"})
    assert "x" * 300 in text and "x" * 301 not in text
    assert "cut at 300 characters" in text


async def test_timeout_becomes_a_tool_error(site: str) -> None:
    with pytest.raises(ToolError, match=r"longer than 0\.5 s"):
        await _tool(**LOOPBACK, timeout_s=0.5).ainvoke({"url": f"{site}/slow"})


async def test_timeout_caps_the_whole_fetch_not_each_read(site: str) -> None:
    with pytest.raises(ToolError, match=r"longer than 0\.5 s"):
        await _tool(**LOOPBACK, timeout_s=0.5).ainvoke({"url": f"{site}/drip"})


async def test_http_errors_and_binary_pages_are_tool_errors(site: str) -> None:
    tool = _tool(**LOOPBACK)
    with pytest.raises(ToolError, match="HTTP 404"):
        await tool.ainvoke({"url": f"{site}/missing"})
    with pytest.raises(ToolError, match="image/png, not a text page"):
        await tool.ainvoke({"url": f"{site}/image"})


def test_disabled_fetch_is_not_offered() -> None:
    assert fetch_webpage_tool(FetchSettings()) is None  # no [fetch] table: not offered
