"""web_search against a loopback server speaking SearXNG's documented JSON format.

SearXNG itself cannot run here; the server below answers ``GET /search?q=...&format=json``
the way an instance with the json format enabled does, and 403 the way one without it does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from langchain_core.tools import BaseTool

from endpoints.config import SearchSettings
from kitty.errors import ToolError
from kitty.tools._search import web_search_tool

# Shape of https://docs.searxng.org/dev/search_api.html (format=json).
RESULTS = [
    {
        "url": f"https://example.org/hooks/{n}",
        "title": f"Wall hook design {n}",
        "content": f"Load tests of printed hooks, part {n}.",
        "engine": "duckduckgo",
        "parsed_url": ["https", "example.org", f"/hooks/{n}", "", "", ""],
        "template": "default.html",
        "engines": ["duckduckgo", "brave"],
        "positions": [n],
        "score": 1.0 / n,
        "category": "general",
    }
    for n in range(1, 9)
]


class _Searx(BaseHTTPRequestHandler):
    requests: list[dict[str, list[str]]] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _json(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        _Searx.requests.append(query)
        prefix = parts.path.removesuffix("/search")
        if prefix == "/nojson" or query.get("format") != ["json"]:
            body = b"<html>403 Forbidden</html>"
            self.send_response(403)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if prefix == "/html":
            body = b"<html>not json</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if parts.path != "/search":
            self._json(404, {"error": "not found"})
            return
        q = query["q"][0]
        results = [] if q == "nothing at all" else RESULTS
        self._json(
            200,
            {
                "query": q,
                "number_of_results": len(results),
                "results": results,
                "answers": [],
                "corrections": [],
                "infoboxes": [],
                "suggestions": ["wall hook"] if not results else [],
                "unresponsive_engines": [],
            },
        )


@pytest.fixture(scope="module")
def searx() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Searx)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _tool(url: str, **settings: object) -> BaseTool:
    tool = web_search_tool(SearchSettings.model_validate({"searxng_url": url, **settings}))
    assert tool is not None
    return tool


async def test_results_are_numbered_title_url_and_snippet(searx: str) -> None:
    tool = _tool(searx + "/", max_results=3)
    assert tool.name == "web_search"
    text = await tool.ainvoke({"query": "printed wall hook 2 kg"})
    assert text.splitlines() == [
        "1. Wall hook design 1 — https://example.org/hooks/1",
        "  Load tests of printed hooks, part 1.",
        "2. Wall hook design 2 — https://example.org/hooks/2",
        "  Load tests of printed hooks, part 2.",
        "3. Wall hook design 3 — https://example.org/hooks/3",
        "  Load tests of printed hooks, part 3.",
    ]
    assert _Searx.requests[-1] == {"q": ["printed wall hook 2 kg"], "format": ["json"]}


async def test_no_results_says_so(searx: str) -> None:
    text = await _tool(searx).ainvoke({"query": "nothing at all"})
    assert text == "no results for 'nothing at all'; suggestions: wall hook"


async def test_json_format_disabled_answers_403_with_the_fix(searx: str) -> None:
    with pytest.raises(ToolError) as refused:
        await _tool(f"{searx}/nojson").ainvoke({"query": "hook"})
    message = str(refused.value)
    assert f"{searx}/nojson" in message and "HTTP 403" in message
    assert "settings.yml" in message and "json" in message


async def test_an_answer_that_is_not_json_names_the_instance(searx: str) -> None:
    with pytest.raises(ToolError, match="did not answer SearXNG's JSON format"):
        await _tool(f"{searx}/html").ainvoke({"query": "hook"})


async def test_wrong_path_and_unreachable_instance(searx: str) -> None:
    with pytest.raises(ToolError, match="HTTP 404"):
        await _tool(f"{searx}/somewhere/else").ainvoke({"query": "hook"})
    with pytest.raises(
        ToolError, match=r"cannot reach the SearXNG instance at http://127\.0\.0\.1:9"
    ):
        await _tool("http://127.0.0.1:9").ainvoke({"query": "hook"})


def test_without_a_url_the_tool_is_not_offered() -> None:
    assert web_search_tool(SearchSettings()) is None
