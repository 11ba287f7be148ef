"""An agent's tools in one run: its allowlist, what the planner is told, what it is offered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from agents.registry import AgentSpec
from endpoints.config import FleetConfig
from endpoints.runtime import RuntimeSlot, process_runtime
from graph.context import Context
from graph.persistence import default_checkpoint_location
from kitty.tools import OfferedTools, configured, tools_for, unprovided

logger = logging.getLogger("kitty.tools")


def allowlist(agent: AgentSpec, context: Context) -> list[str]:
    """The agent's own allowlist plus what the caller added for it (``agent_tools``)."""
    extra = context.agent_tools.get(agent.name, [])
    return list(dict.fromkeys([*agent.tool_allowlist, *extra]))


def configured_tools(agent: AgentSpec, context: Context, fleet: FleetConfig) -> list[str]:
    """Tools of the agent some configured source provides (nothing is started)."""
    return configured(allowlist(agent, context), fleet, context.tools)


_WARNED_FLEETS: RuntimeSlot[set[str]] = RuntimeSlot(
    "fleets warned of tools no source provides", set
)


def warn_unprovided(
    agents: Mapping[str, AgentSpec],
    context: Context,
    fleet: FleetConfig,
    found: Mapping[str, Sequence[str]],
) -> None:
    """Log once per fleet file which allowlisted tools no source provides."""
    key = fleet.source or fleet.name
    warned = process_runtime().get(_WARNED_FLEETS)
    if key in warned:
        return
    warned.add(key)
    allowlists = {name: allowlist(agent, context) for name, agent in agents.items()}
    if (warning := unprovided(allowlists, found, fleet)) is not None:
        logger.warning("%s", warning)


def memory_path() -> Path:
    """The memory store's default file: beside the checkpoints."""
    location = default_checkpoint_location()
    if "://" in location:  # a Postgres checkpointer: keep memory in the home directory
        return Path("~/.kitty/memory.sqlite").expanduser()
    return Path(location).expanduser().with_name("memory.sqlite")


async def available_tools(
    agents: Mapping[str, AgentSpec], context: Context, fleet: FleetConfig
) -> dict[str, list[str]]:
    """Agent name -> the tools it really has this run, for the planner's agent list.

    The sources are started here (their first use): a server's real tool list, not the
    allowlist, is what the planner is told.
    """
    names = [name for name, agent in agents.items() if allowlist(agent, context)]
    found = await asyncio.gather(*(offered_tools(agents[n], context, fleet) for n in names))
    return {name: sorted(offered.tools) for name, offered in zip(names, found, strict=True)}


async def offered_tools(agent: AgentSpec, context: Context, fleet: FleetConfig) -> OfferedTools:
    """The tools the agent may call this run, starting the sources they need."""
    return await tools_for(
        allowlist(agent, context),
        fleet,
        agent=agent.name,
        python_tools=context.tools,
        user_id=context.user_id,
        memory_path=memory_path(),
    )
