"""Planner latency with and without llama.cpp's prompt cache (part of ``bench planner``).

Every planner prompt starts with the same long prefix (instructions, the agents and
their tools) and ends with the goal, so a server that keeps a slot's KV cache
(``cache_prompt``, llama.cpp's default) prefills only the goal after its first call.
The same goals are planned twice on the same fleet, one planner call per server at a
time: first as the product sends them, then with ``cache_prompt: false`` in every
request (a model factory that adds it), so each call prefills its whole prompt. Both
passes send a fixed ``seed``, so a goal gets the same plan (same completion length) in
both and the latency difference is the prefill the cache saves; goals whose completion
lengths still differ are left out of the paired ratio.
"""

from __future__ import annotations

import statistics
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel

from endpoints.clients import ChatModelFactory
from endpoints.config import EndpointConfig

NO_CACHE = {"cache_prompt": False}
SEEDED = {"seed": 7}


def with_extra(factory: ChatModelFactory, extra: dict[str, Any]) -> ChatModelFactory:
    """A chat-model factory that adds ``extra`` engine parameters to every request."""

    def build(endpoint: EndpointConfig, **settings: Any) -> BaseChatModel:
        settings["extra"] = {**(settings.get("extra") or {}), **extra}
        return factory(endpoint, **settings)

    return build


def without_prompt_cache(factory: ChatModelFactory) -> ChatModelFactory:
    """A chat-model factory whose requests ask llama.cpp not to reuse cached prompts."""
    return with_extra(factory, NO_CACHE)


def latency(records: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and median seconds per planned goal, and completion tokens per goal."""
    planned = [r for r in records if r.get("ok")]
    seconds = [float(r["seconds"]) for r in planned]
    tokens = [int(r.get("completion_tokens") or 0) for r in planned]
    if not seconds:
        return {"goals": 0, "mean_s": 0.0, "median_s": 0.0, "mean_completion_tokens": 0.0}
    return {
        "goals": len(seconds),
        "mean_s": round(statistics.fmean(seconds), 3),
        "median_s": round(statistics.median(seconds), 3),
        "mean_completion_tokens": round(statistics.fmean(tokens), 1),
    }


def compare_latency(cached: list[dict[str, Any]], uncached: list[dict[str, Any]]) -> dict[str, Any]:
    """Both passes' latency figures and the uncached / cached ratios.

    ``paired_ratio`` compares only goals planned with the same completion length in both
    passes (records in the same goal order): total uncached / total cached seconds.
    """
    with_cache, without = latency(cached), latency(uncached)
    pairs = [
        (c["seconds"], u["seconds"])
        for c, u in zip(cached, uncached, strict=True)
        if c.get("ok") and u.get("ok") and c.get("completion_tokens") == u.get("completion_tokens")
    ]
    cached_total = sum(c for c, _ in pairs)
    return {
        "cached": with_cache,
        "uncached": without,
        "paired_goals": len(pairs),
        "paired_ratio": round(sum(u for _, u in pairs) / cached_total, 3) if cached_total else 0.0,
        "uncached_over_cached_mean": round(without["mean_s"] / with_cache["mean_s"], 3)
        if with_cache["mean_s"]
        else 0.0,
        "uncached_over_cached_median": round(without["median_s"] / with_cache["median_s"], 3)
        if with_cache["median_s"]
        else 0.0,
    }


def render_cache(cache: dict[str, Any]) -> list[str]:
    """Markdown lines for the planner suite's prompt-cache comparison."""
    rows = [
        "| planner requests | goals | mean latency | median latency | mean completion tokens |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in [
        ("cached", "default (prompt cache on)"),
        ("uncached", "cache_prompt: false"),
    ]:
        s = cache[key]
        rows.append(
            f"| {label} | {s['goals']} | {s['mean_s']:.2f} s | {s['median_s']:.2f} s | "
            f"{s['mean_completion_tokens']} |"
        )
    return [
        *rows,
        "",
        f"Without the prompt cache a planner call takes **{cache.get('paired_ratio', 0)}x** as "
        f"long on the {cache.get('paired_goals', 0)} goals planned with the same completion "
        f"length in both passes (all goals: mean {cache['uncached_over_cached_mean']}x, "
        f"median {cache['uncached_over_cached_median']}x); same seeded goals, same fleet, one "
        "call per server at a time, cached pass first.",
    ]
