"""``web_search``: the first results of a SearXNG instance's JSON search API.

SearXNG (``[search] searxng_url`` in the fleet file) answers
``GET /search?q=...&format=json`` with ``{"query", "number_of_results", "results": [{"url",
"title", "content", "engine", ...}], "answers", "suggestions", "infoboxes", ...}`` when the
instance's ``settings.yml`` lists ``json`` under ``search: formats:``; otherwise it answers
HTTP 403. Without ``searxng_url`` the tool is not offered.
"""

from __future__ import annotations

from typing import Any

import httpx
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from endpoints.config import SearchSettings
from kitty.errors import ToolError

__all__ = ["SEARCH_TOOL", "format_results", "search_web", "web_search_tool"]

SEARCH_TOOL = "web_search"
_SNIPPET_CHARS = 300


class SearchArgs(BaseModel):
    """Arguments of ``web_search``."""

    query: str = Field(min_length=1, description="What to search the web for")


def web_search_tool(settings: SearchSettings) -> BaseTool | None:
    """The ``web_search`` tool, or None when ``[search] searxng_url`` is not set.

    Args:
        settings: The fleet file's ``[search]`` table.

    Returns:
        A tool taking ``query`` and returning numbered ``title — url`` lines, each with
        the result's snippet; a failed search raises :class:`~kitty.errors.ToolError`.
    """
    if not settings.searxng_url:
        return None

    async def web_search(query: str) -> str:
        return await search_web(query, settings)

    return StructuredTool.from_function(
        coroutine=web_search,
        name=SEARCH_TOOL,
        args_schema=SearchArgs,
        description="Search the web; returns the top results as title, URL and snippet.",
    )


def _search_url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith("/search") else f"{base}/search"


async def search_web(query: str, settings: SearchSettings) -> str:
    """Ask the SearXNG instance and format its first ``max_results`` results.

    Args:
        query: The search words.
        settings: The fleet file's ``[search]`` table (``searxng_url`` must be set).

    Raises:
        ToolError: The instance is unreachable, slow, answers an HTTP error or not the
            JSON format; the message names the instance and what to check.
    """
    instance = settings.searxng_url or ""
    url = _search_url(instance)
    try:
        async with httpx.AsyncClient(timeout=settings.timeout_s, trust_env=False) as client:
            response = await client.get(
                url,
                params={"q": query, "format": "json"},
                headers={"Accept": "application/json"},
            )
    except httpx.TimeoutException:
        raise ToolError(
            f"the SearXNG instance at {instance} did not answer within "
            f"{settings.timeout_s:g} s ([search] timeout_s in the fleet file)"
        ) from None
    except httpx.HTTPError as exc:
        raise ToolError(
            f"cannot reach the SearXNG instance at {instance} ({type(exc).__name__}: {exc}); "
            "check [search] searxng_url in the fleet file and that the instance runs"
        ) from None
    if response.status_code == 403:
        raise ToolError(
            f"the SearXNG instance at {instance} refused the JSON API (HTTP 403): enable it "
            "in the instance's settings.yml (search: formats: [html, json])"
        )
    if response.status_code >= 400:
        raise ToolError(
            f"the SearXNG instance at {instance} answered HTTP {response.status_code} for "
            f"{url}; check [search] searxng_url (the instance's base URL) and its logs"
        )
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ToolError(
            f"the SearXNG instance at {instance} did not answer SearXNG's JSON format; "
            "check that [search] searxng_url is the instance's base URL and that its "
            "settings.yml enables the json format"
        )
    return format_results(query, payload, settings.max_results)


def format_results(query: str, payload: dict[str, Any], max_results: int) -> str:
    """Numbered ``title — url`` lines with an indented snippet, or why there are none.

    Args:
        query: The search words (named when nothing was found).
        payload: SearXNG's JSON answer.
        max_results: Most results listed.
    """
    lines: list[str] = []
    answers = [str(a) for a in payload.get("answers") or [] if isinstance(a, str)]
    if answers:
        lines.append(f"Answer: {answers[0]}")
    results = [r for r in payload["results"] if isinstance(r, dict) and r.get("url")]
    for number, result in enumerate(results[:max_results], start=1):
        title = " ".join(str(result.get("title") or result["url"]).split())
        lines.append(f"{number}. {title} — {result['url']}")
        snippet = " ".join(str(result.get("content") or "").split())
        if snippet:
            if len(snippet) > _SNIPPET_CHARS:
                snippet = snippet[:_SNIPPET_CHARS].rstrip() + "…"
            lines.append(f"  {snippet}")
    if not results:
        suggestions = [str(s) for s in payload.get("suggestions") or []][:3]
        hint = f"; suggestions: {', '.join(suggestions)}" if suggestions else ""
        lines.append(f"no results for {query!r}{hint}")
    return "\n".join(lines)
