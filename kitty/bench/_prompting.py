"""The prompt every scheduler sends for a task: the product's own, rebuilt without it.

The baselines must send byte-for-byte what the product sends, so that only scheduling
differs. This mirrors :func:`graph.execution._agent_node.run_task`: the agent's system prompt, then
``TASK_USER`` with the results of the task's dependencies (bench outputs are short, so
the product's trimming to the context window never applies).
"""

from __future__ import annotations

from dataclasses import dataclass

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from agents.registry import DEFAULT_AGENTS
from endpoints.config import EndpointConfig, FleetConfig
from graph import Task, prompts


@dataclass(frozen=True)
class DepOutput:
    """What a finished dependency hands to its dependents."""

    agent: str
    text: str


def task_messages(task: Task, goal: str, deps: dict[str, DepOutput]) -> list[dict[str, str]]:
    """OpenAI-style chat messages for a task (same text as the product's)."""
    spec = DEFAULT_AGENTS[task.agent]
    block = ""
    if task.dependencies:
        block = prompts.DEPENDENCY_HEADER + "".join(
            prompts.DEPENDENCY_OK.format(task_id=d, agent=deps[d].agent, output=deps[d].text)
            for d in task.dependencies
        )
    user = prompts.TASK_USER.format(
        goal=goal, task_id=task.id, description=task.description, dependencies=block
    )
    return [
        # pinned tasks are offered no tools (tool_choice "none"): the product says so
        {"role": "system", "content": prompts.agent_system(spec.system_prompt, [])},
        {"role": "user", "content": user},
    ]


def as_langchain(messages: list[dict[str, str]]) -> list[BaseMessage]:
    """The same messages as LangChain message objects."""
    kinds = {"system": SystemMessage, "user": HumanMessage}
    return [kinds[m["role"]](m["content"]) for m in messages]


def endpoint_for(task: Task, fleet: FleetConfig) -> EndpointConfig:
    """The first endpoint of the task's agent's primary tier (where the product sends it)."""
    spec = DEFAULT_AGENTS[task.agent]
    return fleet.tier(spec.primary_tier).endpoints[0]


def request_body(task: Task, messages: list[dict[str, str]], endpoint: EndpointConfig) -> dict:
    """The ``/v1/chat/completions`` body for a pinned task (the product's parameters)."""
    spec = DEFAULT_AGENTS[task.agent]
    return {
        "model": endpoint.model,
        "messages": messages,
        "temperature": spec.temperature,
        "max_tokens": task.max_tokens or spec.max_tokens,
        "stream": False,
        **task.extra,
    }
