"""Which tools a task is offered: allowlist entries matched against the configured sources.

Sources, in order: LangChain tools passed from Python (named as they are), the built-ins
(``fetch_webpage``, ``web_search``, ``memory.store`` / ``memory.recall``) when configured,
and the MCP servers of the fleet file (``NAME.TOOL``). An allowlist entry is a tool name or
``NAME.*`` (every tool of one MCP server). A built-in without its configuration is not
offered; a server that fails to start is reported, and the task goes on without it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from langchain_core.tools import BaseTool

from endpoints.config import FleetConfig
from kitty.errors import ToolSourceError

logger = logging.getLogger("kitty.tools")

FETCH = "fetch_webpage"
SEARCH = "web_search"
MEMORY_TOOLS = ("memory.store", "memory.recall")
BUILTIN_NAMES = (FETCH, SEARCH, *MEMORY_TOOLS)


def allows(allowlist: Iterable[str], name: str) -> bool:
    """True when ``name`` is on the allowlist, by name or by a ``SERVER.*`` entry."""
    for entry in allowlist:
        if entry == name or (entry.endswith(".*") and name.startswith(entry[:-1])):
            return True
    return False


def _server_of(entry: str) -> str | None:
    head, dot, _ = entry.partition(".")
    return head if dot else None


def configured(
    allowlist: Iterable[str], fleet: FleetConfig, python_tools: Sequence[BaseTool] = ()
) -> list[str]:
    """Allowlist entries some configured source could provide (nothing is started).

    This is what the planner and the agent's prompt are told before a task runs.
    """
    python_names = {t.name for t in python_tools}
    found: list[str] = []
    for entry in allowlist:
        if entry in python_names or (
            entry.endswith(".*") and any(allows([entry], n) for n in python_names)
        ):
            found.append(entry)
        elif entry == FETCH:
            if fleet.fetch.enabled:
                found.append(entry)
        elif entry == SEARCH:
            if fleet.search.searxng_url:
                found.append(entry)
        elif entry in MEMORY_TOOLS or entry == "memory.*":
            if fleet.memory.enabled:
                found.append(entry)
        elif (server := _server_of(entry)) is not None and server in fleet.mcp:
            found.append(entry)
    return found


def unprovided(
    agents: Mapping[str, Sequence[str]], found: Mapping[str, Sequence[str]], fleet: FleetConfig
) -> str | None:
    """One warning naming every allowlisted tool that no source provides, by agent.

    Args:
        agents: Agent -> its allowlist.
        found: Agent -> the tools its sources really provide this run.
        fleet: The fleet (its MCP servers are named in the warning).

    Returns:
        The warning, or ``None`` when every allowlisted tool has a source.
    """
    missing = {
        agent: [e for e in allowlist if not any(allows([e], n) for n in found.get(agent, ()))]
        for agent, allowlist in agents.items()
    }
    parts = [f"{agent}: {', '.join(names)}" for agent, names in missing.items() if names]
    if not parts:
        return None
    servers = ", ".join(sorted(fleet.mcp)) or "none"
    return (
        f"allowlisted tools that no source provides ({'; '.join(parts)}); MCP servers "
        f"configured: {servers}. Add [mcp.NAME] servers, [search] searxng_url or [fetch] to "
        "the fleet file, or pass Python tools with tools=[...]; until then these agents "
        "run without them"
    )


@dataclass
class OfferedTools:
    """The tools one task may call this run, and the sources that failed.

    Attributes:
        tools: Name -> tool.
        problems: One line per source that could not start (names it and the fix).
    """

    tools: dict[str, BaseTool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def tools_for(
    allowlist: Sequence[str],
    fleet: FleetConfig,
    *,
    agent: str,
    python_tools: Sequence[BaseTool] = (),
    user_id: str | None = None,
    memory_path: Path | None = None,
) -> OfferedTools:
    """Resolve an agent's allowlist into tools, starting the sources it needs.

    Args:
        allowlist: The agent's tool names and ``SERVER.*`` entries.
        fleet: The run's fleet (``[mcp.*]``, ``[fetch]``, ``[search]``, ``[memory]``).
        agent: Agent name (memory namespace).
        python_tools: LangChain tools the caller passed.
        user_id: Memory namespace of the user (default: the fleet's ``[memory] user_id``).
        memory_path: Default SQLite file of the memory store.
    """
    offered = OfferedTools()
    if not allowlist:
        return offered
    for tool in python_tools:
        if allows(allowlist, tool.name):
            offered.tools[tool.name] = tool
    for tool in _builtin_tools(allowlist, fleet):
        offered.tools.setdefault(tool.name, tool)
    if fleet.memory.enabled and any(allows(allowlist, n) for n in MEMORY_TOOLS):
        try:
            for tool in await _memory_tools(fleet, agent, user_id, memory_path):
                if allows(allowlist, tool.name):
                    offered.tools.setdefault(tool.name, tool)
        except ToolSourceError as exc:
            offered.problems.append(str(exc))
    for server in _servers_needed(allowlist, fleet):
        try:
            from kitty.tools._mcp import mcp_tools

            for tool in await mcp_tools(server, fleet.mcp[server]):
                if allows(allowlist, tool.name):
                    offered.tools.setdefault(tool.name, tool)
        except ToolSourceError as exc:
            logger.warning("%s", exc)
            offered.problems.append(str(exc))
    return offered


def _servers_needed(allowlist: Sequence[str], fleet: FleetConfig) -> list[str]:
    needed: list[str] = []
    for entry in allowlist:
        server = _server_of(entry)
        if server is not None and server in fleet.mcp and server not in needed:
            needed.append(server)
    return needed


def _builtin_tools(allowlist: Sequence[str], fleet: FleetConfig) -> list[BaseTool]:
    from kitty.tools._fetch import fetch_webpage_tool
    from kitty.tools._search import web_search_tool

    found: list[BaseTool] = []
    if allows(allowlist, FETCH) and (fetch := fetch_webpage_tool(fleet.fetch)) is not None:
        found.append(fetch)
    if allows(allowlist, SEARCH) and (search := web_search_tool(fleet.search)) is not None:
        found.append(search)
    return found


async def _memory_tools(
    fleet: FleetConfig, agent: str, user_id: str | None, memory_path: Path | None
) -> list[BaseTool]:
    from kitty.tools._memory import memory_store, memory_tools

    path = memory_path or Path.home() / ".kitty" / "memory.sqlite"
    store = await memory_store(fleet.memory, path)
    return memory_tools(store, agent, user_id or fleet.memory.user_id, settings=fleet.memory)
