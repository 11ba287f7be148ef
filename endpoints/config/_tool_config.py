"""Tool settings in the fleet file: ``[mcp.NAME]`` servers and the built-ins' tables.

``[mcp.NAME]`` declares an MCP server whose tools agents see as ``NAME.TOOL``;
``[fetch]``, ``[search]`` and ``[memory]`` configure the built-in ``fetch_webpage``,
``web_search`` and ``memory.store`` / ``memory.recall`` tools.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

McpTransport = Literal["stdio", "streamable_http", "sse"]


class McpServerConfig(BaseModel):
    """One MCP server.

    Attributes:
        transport: ``stdio`` (a command this process starts), ``streamable_http`` or
            ``sse`` (a server already listening at ``url``).
        command: Executable to start (stdio).
        args: Its arguments (stdio).
        env: Extra environment variables for it (stdio).
        cwd: Working directory for it (stdio).
        url: Server URL (HTTP transports).
        headers: HTTP headers, e.g. an ``Authorization`` (HTTP transports).
        timeout_s: Most seconds one tool call may take.
    """

    model_config = ConfigDict(extra="forbid")

    transport: McpTransport
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _fields_fit_transport(self) -> McpServerConfig:
        if self.transport == "stdio":
            if not self.command:
                raise ValueError("transport 'stdio' needs command = \"program\" (and args)")
            if self.url or self.headers:
                raise ValueError("url and headers are for the HTTP transports, not 'stdio'")
        else:
            if not self.url:
                raise ValueError(f'transport {self.transport!r} needs url = "http://..."')
            if self.command or self.args or self.env or self.cwd:
                raise ValueError(
                    f"command, args, env and cwd are for 'stdio', not {self.transport!r}"
                )
        return self

    def describe(self) -> str:
        """How the server is reached, for error messages."""
        if self.transport == "stdio":
            return " ".join([self.command or "", *self.args]).strip()
        return f"{self.transport} {self.url}"


class FetchSettings(BaseModel):
    """``fetch_webpage``: what may be fetched and how much.

    Attributes:
        enabled: Offer the tool: on when the fleet file has a ``[fetch]`` table (unless
            it says ``enabled = false``), off without one.
        allowed_hosts: Hosts allowed even on private or loopback addresses.
        blocked_hosts: Hosts and addresses never fetched: a host name (a leading ``.``
            blocks subdomains too), an IP address or a CIDR network. Addresses are
            compared with every address a URL's host resolves to, in any spelling;
            entries are normalised when loaded (IPv4-mapped IPv6 becomes IPv4).
        allow_private: Allow every private, loopback and link-local address.
        timeout_s: Most seconds per fetch.
        max_bytes: Largest body read.
        max_chars: Longest text returned to the model.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)
    blocked_hosts: list[str] = Field(default_factory=list)
    allow_private: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    max_bytes: int = Field(default=2_000_000, gt=0)
    max_chars: int = Field(default=4000, gt=0)

    @field_validator("blocked_hosts")
    @classmethod
    def _blocked_entries_are_hosts_or_networks(cls, entries: list[str]) -> list[str]:
        return [_blocked_entry(entry) for entry in entries]


_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"\.?{_LABEL}(?:\.{_LABEL})*")
_NUMBER_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_EXAMPLES = "e.g. metadata.google.internal, .example.com, 169.254.169.254 or 169.254.0.0/16"


def _blocked_entry(entry: str) -> str:
    """One ``blocked_hosts`` entry checked and normalised: a name, an address or a network.

    Raises:
        ValueError: The entry would never match as meant; the message says how to write it.
    """
    text = entry.strip().lower()
    if not text:
        raise ValueError("an entry is empty; remove it")
    if "://" in text:
        host = text.split("://", 1)[1].split("/", 1)[0]
        raise ValueError(f"{entry!r} is a URL, not a host name; write the host alone ({host})")
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            if "host bits set" not in str(exc):
                raise ValueError(
                    f"{entry!r} is not a valid network; write a CIDR such as 169.254.0.0/16 "
                    "or fd00::/8"
                ) from None
            loose = ipaddress.ip_network(text, strict=False)
            raise ValueError(
                f"{entry!r} has host bits set; write the network's first address ({loose})"
            ) from None
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            first = network.network_address.ipv4_mapped  # ::ffff:a.b.c.d/112 is IPv4's /16
            if first is not None:
                return f"{first}/{network.prefixlen - 96}"
        return str(network)
    try:
        address = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(address)
    name = text.rstrip(".") if text != "." else text
    if not name.isascii() or not _HOST_NAME.fullmatch(name):
        raise ValueError(
            f"{entry!r} is not a host name, an IP address or a CIDR network ({_EXAMPLES}); "
            "write international names in their xn-- form"
        )
    if _NUMBER_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        # Resolvers read 2852039166 or 0xa9.0xfe.0xa9.0xfe as an IPv4 address.
        raise ValueError(
            f"{entry!r} is not a valid IP address; write an IPv4 address in dotted decimal "
            "form (169.254.169.254) or a CIDR network (169.254.0.0/16)"
        )
    return name


class SearchSettings(BaseModel):
    """``web_search`` through a SearXNG instance's JSON API.

    Attributes:
        searxng_url: Base URL of the instance (its ``/search?format=json`` must be on);
            without it ``web_search`` is not offered.
        max_results: Results returned to the model.
        timeout_s: Most seconds per search.
    """

    model_config = ConfigDict(extra="forbid")

    searxng_url: str | None = None
    max_results: int = Field(default=5, gt=0, le=50)
    timeout_s: float = Field(default=10.0, gt=0)


DEFAULT_MAX_NOTE_CHARS = 2000
"""Default longest memory note, in characters (about 500 tokens: a fact, not a page)."""
DEFAULT_MAX_NOTES = 1000
"""Default most notes kept per user and agent."""
MAX_NOTES_LIMIT = 5000
"""Upper bound of ``max_notes`` (recall scans at most this many notes of a namespace)."""


class MemorySettings(BaseModel):
    """``memory.store`` / ``memory.recall`` on LangGraph's ``BaseStore``.

    Attributes:
        enabled: Offer the tools: on when the fleet file has a ``[memory]`` table (unless
            it says ``enabled = false``), off without one.
        store: ``sqlite:PATH`` / a ``.sqlite`` path, or ``postgresql://...``; default: a
            SQLite file beside the checkpoints.
        embeddings_endpoint: Name of a fleet endpoint serving ``/v1/embeddings``; with it
            recall also ranks by vector similarity.
        user_id: Default user namespace (``arun_goal(user_id=...)`` overrides it).
        max_note_chars: Longest note ``memory.store`` accepts, in characters; a longer
            one is refused and the model is told to store a shorter one.
        max_notes: Most notes kept per user and agent; storing one more forgets the
            oldest (by last update), so a long-running deployment keeps working.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    store: str | None = None
    embeddings_endpoint: str | None = None
    user_id: str = "default"
    max_note_chars: int = Field(default=DEFAULT_MAX_NOTE_CHARS, ge=1, le=100_000)
    # Recall reads at most MAX_NOTES_LIMIT notes of a namespace: more could never be found.
    max_notes: int = Field(default=DEFAULT_MAX_NOTES, ge=1, le=MAX_NOTES_LIMIT)
