"""Tool settings in the fleet file: ``[mcp.NAME]`` servers and the built-ins' tables.

``[mcp.NAME]`` declares an MCP server whose tools agents see as ``NAME.TOOL``;
``[fetch]``, ``[search]`` and ``[memory]`` configure the built-in ``fetch_webpage``,
``web_search`` and ``memory.store`` / ``memory.recall`` tools.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
        blocked_hosts: Hosts never fetched (a leading ``.`` blocks subdomains too).
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
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    store: str | None = None
    embeddings_endpoint: str | None = None
    user_id: str = "default"
