"""``fetch_webpage``: one web page as text, within the fleet file's host rules and caps.

Rules (``[fetch]`` in the fleet file, checked by :mod:`kitty.tools._fetch_rules`) for the
first URL and for every redirect:

* only ``http`` and ``https``;
* a host in ``blocked_hosts`` is never fetched (``.example.com`` also blocks its subdomains),
  nor one that resolves to an address or network listed there, in any spelling;
* a host that resolves to a private, loopback, link-local, reserved or otherwise non-public
  address is refused unless it is in ``allowed_hosts`` or ``allow_private = true`` (so a
  model cannot read the machine's own services or the local network by default).

The body is read up to ``max_bytes`` within ``timeout_s`` (the whole fetch, redirects
included). ``identity`` encoding is asked for; a server that compresses anyway is decoded
within ``max_bytes`` (gzip and deflate only), so a compressed bomb never inflates. HTML
becomes text in a worker thread, never on the event loop (:mod:`kitty.tools._page_text`:
linear in the page's size, title first), cut to ``max_chars``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urljoin

import httpx
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from endpoints.config import FetchSettings
from kitty.errors import ToolError
from kitty.tools._content_decoding import BoundedDecoder, UndecodableBody
from kitty.tools._fetch_rules import (
    CheckedUrl,
    IpAddress,
    Resolver,
    check_url_allowed,
    resolve_host,
)
from kitty.tools._page_text import page_text

__all__ = [
    "FETCH_TOOL",
    "IpAddress",
    "check_url_allowed",
    "fetch_bytes",
    "fetch_webpage_tool",
]

FETCH_TOOL = "fetch_webpage"
MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}
_USER_AGENT = "kitty-orchestrator-fetch_webpage/1"
_PAGE_ACCEPT = "text/html, text/*;q=0.9, */*;q=0.5"
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")


class FetchArgs(BaseModel):
    """Arguments of ``fetch_webpage``."""

    url: str = Field(description="The page's full http:// or https:// URL")


def fetch_webpage_tool(settings: FetchSettings) -> BaseTool | None:
    """The ``fetch_webpage`` tool for these settings, or None when ``[fetch]`` disables it.

    Args:
        settings: The fleet file's ``[fetch]`` table.

    Returns:
        A tool taking ``url`` and returning the page's title and text; a refused or failed
        fetch raises :class:`~kitty.errors.ToolError` saying why and what to change.
    """
    if not settings.enabled:
        return None

    async def fetch_webpage(url: str) -> str:
        return await fetch_text(url, settings)

    return StructuredTool.from_function(
        coroutine=fetch_webpage,
        name=FETCH_TOOL,
        args_schema=FetchArgs,
        description=(
            "Fetch one web page (http or https) and return its title and text. "
            "Private and local addresses are refused."
        ),
    )


async def fetch_text(url: str, settings: FetchSettings, *, resolve: Resolver = resolve_host) -> str:
    """Fetch ``url`` under ``settings`` and return ``Title``/``URL`` lines and the text.

    Args:
        url: The page to fetch.
        settings: The fleet file's ``[fetch]`` table.
        resolve: Turns a host name into addresses (the system resolver by default).

    Raises:
        ToolError: Refused, unreachable, too slow, an HTTP error status, too many
            redirects, or not a text document.
    """
    async with _checked_get(url, settings, accept=_PAGE_ACCEPT, resolve=resolve) as (
        final_url,
        response,
    ):
        content_type = response.headers.get("content-type", "")
        if content_type and not content_type.lower().startswith(_TEXT_TYPES):
            raise ToolError(
                f"{final_url} is {content_type.split(';')[0]}, not a text page; "
                "fetch_webpage reads HTML and text only"
            )
        body, cut = await _read_capped(final_url, response, settings.max_bytes)
        text = body.decode(response.encoding or "utf-8", errors="replace")
    # html2text takes seconds on a few MB (its input is at most max_bytes): off the loop.
    return await asyncio.to_thread(
        page_text, final_url, content_type, text, cut, settings.max_chars
    )


async def fetch_bytes(
    url: str,
    settings: FetchSettings,
    *,
    max_bytes: int,
    accept: str = "*/*",
    resolve: Resolver = resolve_host,
) -> tuple[str, bytes, bool]:
    """GET ``url`` as bytes under the same host rules as ``fetch_webpage`` (every hop checked).

    For callers that need a binary body (an image attached to a run) rather than a page:
    the rules, redirects and timeout are those of ``[fetch]``; only the cap is the caller's.
    The rules apply whether or not ``[fetch]`` offers the tool.

    Args:
        url: The URL to fetch.
        settings: The fleet file's ``[fetch]`` table.
        max_bytes: Most body bytes read.
        accept: The ``Accept`` header.
        resolve: Turns a host name into addresses (the system resolver by default).

    Returns:
        The final URL, the body (at most ``max_bytes``) and True when the body was longer.

    Raises:
        ToolError: Refused, unreachable, too slow, an HTTP error status or too many
            redirects; the message says which.
    """
    async with _checked_get(url, settings, accept=accept, resolve=resolve) as (
        final_url,
        response,
    ):
        body, cut = await _read_capped(final_url, response, max_bytes)
    return final_url, body, cut


@asynccontextmanager
async def _checked_get(
    url: str, settings: FetchSettings, *, accept: str, resolve: Resolver
) -> AsyncIterator[tuple[str, httpx.Response]]:
    """GET with manual redirects, each hop checked by :func:`check_url_allowed`.

    The one redirect loop of both entry points, so a host rule cannot be fixed in one and
    missed in the other. Each hop connects to an address its check resolved and allowed,
    never to a second lookup's answer (DNS rebinding). Yields the final URL and its
    streaming response (status below 400); ``[fetch]`` ``timeout_s`` covers every hop and
    whatever the caller reads inside the block.

    Raises:
        ToolError: Refused, unreachable, too slow, an HTTP error status or too many
            redirects; the message says which.
    """
    try:
        async with (
            asyncio.timeout(settings.timeout_s),
            httpx.AsyncClient(
                follow_redirects=False,
                timeout=settings.timeout_s,
                # Compressed bodies are decoded here within the cap, never by httpx.
                headers={
                    "User-Agent": _USER_AGENT,
                    "Accept": accept,
                    "Accept-Encoding": "identity",
                },
                trust_env=False,  # no proxies: the connection goes to the checked address
                # One request per connection: a kept connection was verified (TLS) for the
                # host of an earlier hop, not for this one.
                limits=httpx.Limits(max_keepalive_connections=0),
            ) as client,
        ):
            current = url.strip()
            for _hop in range(MAX_REDIRECTS + 1):
                checked = await asyncio.to_thread(
                    check_url_allowed, current, settings, resolve=resolve
                )
                async with _pinned_get(client, checked) as response:
                    location = response.headers.get("location")
                    if response.status_code in _REDIRECTS and location:
                        current = urljoin(current, location)
                        continue
                    if response.status_code >= 400:
                        raise ToolError(
                            f"{current} answered HTTP {response.status_code} "
                            f"{response.reason_phrase}".rstrip()
                        )
                    yield current, response
                    return
    except (TimeoutError, httpx.TimeoutException):
        raise ToolError(
            f"fetching {url} took longer than {settings.timeout_s:g} s "
            "([fetch] timeout_s in the fleet file)"
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ToolError(f"could not fetch {url}: {type(exc).__name__}: {exc}") from None
    raise ToolError(f"{url} redirected more than {MAX_REDIRECTS} times; not followed further")


@asynccontextmanager
async def _pinned_get(
    client: httpx.AsyncClient, checked: CheckedUrl
) -> AsyncIterator[httpx.Response]:
    """GET ``checked.url`` over a connection to one of its checked addresses, in order.

    The request goes to the address itself; the ``Host`` header and, for https, the TLS
    server name (SNI) and certificate check stay those of the URL's host. An address that
    refuses the connection is skipped for the next one (as a resolver's answer list is).
    """
    url = httpx.URL(checked.url)
    headers = {"Host": url.netloc.decode("ascii")}
    extensions: dict[str, str] = {}
    if checked.resolved and url.scheme == "https":
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
    refused: httpx.ConnectError | None = None
    for address in checked.addresses:
        request = client.build_request(
            "GET", url.copy_with(host=str(address)), headers=headers, extensions=extensions
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            refused = exc
            continue
        try:
            yield response
        finally:
            await response.aclose()
        return
    assert refused is not None  # a CheckedUrl has at least one address
    raise refused


async def _read_capped(url: str, response: httpx.Response, max_bytes: int) -> tuple[bytes, bool]:
    """At most ``max_bytes`` of the decoded body; True when more was there.

    Reads raw bytes and undoes any ``Content-Encoding`` with a :class:`BoundedDecoder`, so
    a compressed bomb never holds more than the cap (plus a small constant) in memory.

    Raises:
        ToolError: The body's encoding is not one that can be decoded within the cap.
    """
    try:
        decoder = BoundedDecoder(response.headers.get("content-encoding", ""), max_bytes + 1)
        chunks: list[bytes] = []
        size = 0
        async for raw in response.aiter_raw():
            chunk = decoder.feed(raw)
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                return b"".join(chunks)[:max_bytes], True
    except UndecodableBody as exc:
        raise ToolError(f"{url} cannot be read: {exc}") from None
    return b"".join(chunks), False
