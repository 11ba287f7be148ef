"""Shared pieces of the graph nodes: settings, fleet setup, progress events."""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys

from langgraph.config import get_stream_writer
from langgraph.runtime import Runtime

from agents.registry import DEFAULT_AGENTS, validate_agents
from endpoints.calls import CallLimits, CallOutcome
from endpoints.config import FleetConfig
from endpoints.fleet import FleetRuntime, get_runtime
from endpoints.slots import SlotOrder
from graph.context import Context
from graph.events import (
    _Event,
)

logger = logging.getLogger("kitty.graph")


def emit(event: _Event) -> None:
    """Send a progress event on LangGraph's ``custom`` stream (no-op outside a run)."""
    try:
        writer = get_stream_writer()
    except RuntimeError:
        return
    writer(event.model_dump(mode="json"))


def context_of(runtime: Runtime[Context] | None) -> Context:
    """The run's settings (a dict from Studio or the SDK is turned into a Context)."""
    context = getattr(runtime, "context", None)
    if isinstance(context, Context):
        return context
    if isinstance(context, dict):
        return Context(**context)
    return Context()


async def prepare_fleet(context: Context) -> FleetRuntime:
    """Load the fleet, start the embedded one if needed, size limiters from the servers."""
    from ops.embedded import ensure_embedded_fleet

    fleet_runtime = get_runtime(context.fleet)
    validate_agents(DEFAULT_AGENTS, fleet_runtime.fleet)
    if fleet_runtime.fleet.embedded:
        await asyncio.to_thread(ensure_embedded_fleet, fleet_runtime.fleet)
    clients = client_modules(fleet_runtime.fleet)
    if not clients <= sys.modules.keys():
        await asyncio.to_thread(lambda: [importlib.import_module(m) for m in clients])
    await fleet_runtime.discover()
    return fleet_runtime


def client_modules(fleet: FleetConfig) -> set[str]:
    """Chat client packages the fleet's endpoints need.

    Importing ``langchain_openai`` takes ~2 s; done lazily inside the first agent task it
    would hold the event loop, so every task dispatched beside it would start that late.
    """
    kinds = {e.kind for e in fleet.all_endpoints()}
    return {
        m
        for kind, m in (("llamacpp", "langchain_openai"), ("ollama", "langchain_ollama"))
        if kind in kinds
    }


def usable_tiers(fleet_runtime: FleetRuntime, tiers: list[str]) -> list[str]:
    """The tiers of a chain that the fleet has (its first tier if none)."""
    known = [t for t in dict.fromkeys(tiers) if t in fleet_runtime.fleet.tiers]
    return known or [next(iter(fleet_runtime.fleet.tiers))]


def call_limits(context: Context) -> CallLimits:
    """The run's limits for one model call: slot wait, request time, busy retries."""
    return CallLimits(
        slot_timeout_s=context.slot_timeout_s,
        call_timeout_s=context.task_timeout_s,
        busy_retries=context.busy_retries,
    )


def slot_order_of_run() -> SlotOrder:
    """The current graph run's ``slot_order`` setting (``priority`` outside a run)."""
    from langgraph.runtime import get_runtime as get_graph_runtime

    try:
        context = get_graph_runtime().context
    except (RuntimeError, KeyError, AttributeError):
        return "priority"
    order = context.get("slot_order") if isinstance(context, dict) else None
    order = getattr(context, "slot_order", order)
    return "fifo" if order == "fifo" else "priority"


def add_usage(usage: dict[str, int], outcome: CallOutcome) -> dict[str, int]:
    """Token usage plus one call's tokens."""
    return {
        "prompt_tokens": usage.get("prompt_tokens", 0) + outcome.prompt_tokens,
        "completion_tokens": usage.get("completion_tokens", 0) + outcome.completion_tokens,
        "cached_prompt_tokens": usage.get("cached_prompt_tokens", 0) + outcome.cached_prompt_tokens,
    }
