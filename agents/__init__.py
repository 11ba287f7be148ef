"""Specialist agents (the KITTY eight by default) and their prompts."""

from agents.registry import DEFAULT_AGENTS, AgentSpec, validate_agents

__all__ = ["DEFAULT_AGENTS", "AgentSpec", "validate_agents"]
