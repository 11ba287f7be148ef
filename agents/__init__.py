"""Specialist agents as data: the KITTY eight by default, their prompts, tiers and limits.

:data:`DEFAULT_AGENTS` is the registry the planner and the graph use; :class:`AgentSpec`
describes one agent; :func:`validate_agents` checks a registry against a fleet.
:func:`fallback_steps` gives the keyword plan used when the planner cannot be reached.
"""

from agents.fallback import FallbackStep, fallback_steps
from agents.registry import DEFAULT_AGENT, DEFAULT_AGENTS, AgentSpec, validate_agents

__all__ = [
    "DEFAULT_AGENT",
    "DEFAULT_AGENTS",
    "AgentSpec",
    "FallbackStep",
    "fallback_steps",
    "validate_agents",
]
