"""Suite 3: planner validity on varied goals with the fleet's own (embedded) model.

Every goal goes through :func:`graph.planning._planner.make_plan`, all at once. For each plan:

- *schema-valid*: the planner's final raw output validates against the JSON schema it
  was constrained to (llama.cpp grammar), checked with ``jsonschema``;
- *no repair*: the product kept the raw plan as it was (no repair warning);
- *acyclic*: its raw dependency graph has no cycle (before the product's repairs; a
  task depending on itself counts as a cycle, and is also reported separately);
- tasks, parallelism (tasks / critical-path length of the repaired plan) and the repair
  warnings the product applied;
- planner latency with and without llama.cpp's prompt cache (:mod:`kitty.bench._planner_cache`):
  the same goals planned again with ``cache_prompt: false``.

The planner's tier is widened to every server of the fleet (same model everywhere) so
the goals spread over all cores; routing picks the least loaded server, and one goal
per server is planned at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import jsonschema

from endpoints.config import FleetConfig, TierConfig
from endpoints.fleet import FleetRuntime
from graph import Context, PlanError
from graph.dag import critical_path_length
from graph.planning import make_plan, plan_json_schema
from kitty.bench._env import BenchEnv
from kitty.bench._planner_cache import SEEDED, compare_latency, with_extra, without_prompt_cache

GOALS = [
    "Design a wall hook for a 2 kg bag and plan its print",
    "Research the best filament for outdoor planters and write a buying guide",
    "Write a Python script that renames photos by the date they were taken",
    "Compare heat pumps and gas boilers for a small flat",
    "Look at this photo of a failed print and say what went wrong",
    "Make a parametric phone stand and choose a filament for it",
    "Explain how vaccines train the immune system",
    "Implement a rate limiter in TypeScript with unit tests",
    "Inspect a CAD screenshot for walls that are too thin to print",
    "Plan a week of vegetarian dinners with a shopping list",
    "Summarize the pros and cons of solid-state batteries",
    "Design a cable organizer for a desk and estimate its print time",
    "Write an OpenSCAD module for a hex-grid drawer insert",
    "Analyze monthly electricity costs and suggest savings",
    "Research the history of the printing press and summarize it",
    "Create a CadQuery model of a gear with 24 teeth",
    "Find out why my PETG prints are stringing and fix the slicer settings",
    "Draft a project plan for a home weather station with a Raspberry Pi",
    "Compare three 3D printers under 500 euros for a school",
    "Write unit tests for a date-parsing function in Python",
    "Estimate the cost of printing 50 keychains in PLA",
    "Explain the difference between TCP and UDP with examples",
    "Design a bracket to hold a 40 mm fan and pick print orientation",
    "Review a photo of a first layer and recommend bed leveling steps",
    "Write a bash script that backs up a folder every night",
    "Research noise-reduction options for a printer enclosure",
    "Summarize recent advances in small language models",
    "Plan the fabrication of a replacement knob for a washing machine",
    "Create a checklist for onboarding a new developer",
    "Analyze print failure rates from a queue log and recommend changes",
    "Design a parametric box with a sliding lid and write its code",
    "Compare SQLite and PostgreSQL for a small web app",
]

SIZES = {"full": (30, 6), "quick": (8, 4), "smoke": (1, 2)}


class _RetryCounter(logging.Handler):
    """Counts the planner's "unusable output, asking again" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("planner output unusable"):
            self.count += 1


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Violations of ``schema`` (JSON Schema 2020-12, as the planner sends it); empty: valid."""
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
        for e in validator.iter_errors(value)
    ]


def has_cycle(raw_tasks: list[Any], *, self_loops: bool = True) -> bool:
    """True when the raw tasks' dependencies (known ids only) form a cycle.

    Args:
        raw_tasks: Tasks as the planner wrote them.
        self_loops: Count a task depending on itself as a cycle.
    """
    graph: dict[str, list[str]] = {}
    for item in raw_tasks:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            deps = [d for d in item.get("dependencies") or [] if isinstance(d, str)]
            graph.setdefault(item["id"], []).extend(
                d for d in deps if self_loops or d != item["id"]
            )
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        state[node] = 1
        for dep in graph.get(node, []):
            if dep in graph and (state.get(dep) == 1 or (dep not in state and visit(dep))):
                return True
        state[node] = 2
        return False

    return any(node not in state and visit(node) for node in graph)


def raw_issues(raw_tasks: list[Any]) -> dict[str, int]:
    """Counts of what the product had to repair in the planner's raw tasks."""
    items = [t for t in raw_tasks if isinstance(t, dict)]
    ids = [t.get("id") for t in items]
    known = set(ids)
    deps = [(t.get("id"), d) for t in items for d in t.get("dependencies") or []]
    return {
        "duplicate_ids": len(ids) - len(known),
        "self_dependencies": sum(1 for tid, d in deps if d == tid),
        "unknown_dependencies": sum(1 for _, d in deps if d not in known),
    }


def spread_planner(fleet: FleetConfig) -> FleetConfig:
    """The fleet with every llama.cpp server as a replica of the planner's tier."""
    servers = [e for e in fleet.all_endpoints() if e.kind == "llamacpp"]
    tiers = dict(fleet.tiers)
    tiers[Context().planner_tiers[0]] = TierConfig(description="planner (bench)", endpoints=servers)
    return fleet.model_copy(update={"tiers": tiers, "source": ""})


async def _one(goal: str, context: Context, runtime: FleetRuntime) -> dict[str, Any]:
    schema = plan_json_schema(list_agents(), context.max_tasks)
    began = time.perf_counter()
    record: dict[str, Any] = {"goal": goal}
    try:
        plan, outcome = await make_plan(goal, context, runtime)
    except PlanError as exc:
        record.update(ok=False, error=str(exc), seconds=round(time.perf_counter() - began, 2))
        return record
    raw: Any = None
    if outcome is not None and outcome.ok:
        try:
            raw = json.loads(outcome.text)
        except ValueError:
            raw = None
    raw_tasks = raw.get("tasks") if isinstance(raw, dict) else None
    parsed: list[Any] | None = raw_tasks if isinstance(raw_tasks, list) else None
    record.update(
        ok=True,
        source=plan.source,
        schema_valid=raw is not None and not schema_errors(raw, schema),
        acyclic=parsed is not None and not has_cycle(parsed),
        acyclic_ignoring_self=parsed is not None and not has_cycle(parsed, self_loops=False),
        issues=raw_issues(parsed) if parsed is not None else {},
        tasks=len(plan.tasks),
        critical_path=critical_path_length(plan.tasks),
        repairs=len(plan.warnings),
        warnings=plan.warnings,
        completion_tokens=outcome.completion_tokens if outcome else 0,
        seconds=round(time.perf_counter() - began, 2),
    )
    record["parallelism"] = round(record["tasks"] / max(record["critical_path"], 1), 3)
    return record


def list_agents() -> list[str]:
    """The agent names the planner may use."""
    from agents.registry import DEFAULT_AGENTS

    return list(DEFAULT_AGENTS)


def _pct(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


async def plan_all(
    goals: list[str], context: Context, runtime: FleetRuntime
) -> tuple[list[dict[str, Any]], float]:
    """Plan every goal, one planner call per server at a time; (records, wall seconds).

    On a small machine more sequences per server only slow each other down, and
    validity does not depend on it.
    """
    gate = asyncio.Semaphore(len(runtime.all_handles()))

    async def gated(goal: str) -> dict[str, Any]:
        async with gate:
            return await _one(goal, context, runtime)

    began = time.perf_counter()
    records = await asyncio.gather(*(gated(g) for g in goals))
    return list(records), time.perf_counter() - began


async def run_planner(env: BenchEnv) -> dict[str, Any]:
    """Run the suite; returns JSON-ready results."""
    env.ensure_fleet()
    count, max_tasks = SIZES[env.size]
    goals = GOALS[:count]
    runtime = FleetRuntime(spread_planner(env.config))
    # seeded: the cache-off pass below then gets the same plans (see kitty.bench._planner_cache)
    runtime.model_factory = with_extra(runtime.model_factory, SEEDED)
    await runtime.discover()
    context = Context(fleet=env.fleet, max_tasks=max_tasks)
    counter = _RetryCounter()
    logger = logging.getLogger("kitty.graph")
    logger.addHandler(counter)
    try:
        records, wall = await plan_all(goals, context, runtime)
        retries = counter.count
        # the same goals again, every request with cache_prompt false
        uncached_runtime = FleetRuntime(spread_planner(env.config))
        uncached_runtime.model_factory = without_prompt_cache(runtime.model_factory)
        await uncached_runtime.discover()
        uncached, _ = await plan_all(goals, context, uncached_runtime)
        cache = compare_latency(records, uncached)
        cache["uncached_no_repair_pct"] = _pct(
            sum(1 for r in uncached if r["ok"] and r["source"] == "planner" and not r["repairs"]),
            len(uncached),
        )
    finally:
        logger.removeHandler(counter)
    planned = [r for r in records if r["ok"]]
    from_model = [r for r in planned if r["source"] == "planner"]
    n = len(records)

    def mean(key: str) -> float:
        return round(sum(r[key] for r in planned) / len(planned), 2) if planned else 0.0

    summary = {
        "goals": n,
        "max_tasks": max_tasks,
        "planned": len(planned),
        "planner_errors": n - len(planned),
        "keyword_fallbacks": len(planned) - len(from_model),
        "schema_valid_pct": _pct(sum(1 for r in planned if r["schema_valid"]), n),
        "acyclic_pct": _pct(sum(1 for r in planned if r["acyclic"]), n),
        "acyclic_ignoring_self_pct": _pct(sum(1 for r in planned if r["acyclic_ignoring_self"]), n),
        "issues": {
            key: sum(r["issues"].get(key, 0) for r in planned)
            for key in ("duplicate_ids", "self_dependencies", "unknown_dependencies")
        },
        "mean_tasks": mean("tasks"),
        "mean_critical_path": mean("critical_path"),
        "mean_parallelism": mean("parallelism"),
        "repairs_total": sum(r["repairs"] for r in planned),
        "plans_repaired": sum(1 for r in planned if r["repairs"]),
        "no_repair_pct": _pct(sum(1 for r in from_model if not r["repairs"]), n),
        "retries": retries,
        "wall_s": round(wall, 2),
    }
    env.log(
        f"  {n} goals: {summary['schema_valid_pct']}% schema-valid, "
        f"{summary['acyclic_pct']}% acyclic, {summary['mean_tasks']} tasks/plan, "
        f"parallelism {summary['mean_parallelism']}, {summary['repairs_total']} repairs, "
        f"{summary['no_repair_pct']}% needed none, "
        f"{retries} retries ({wall:.0f}s)"
    )
    env.log(
        f"  planner latency: mean {cache['cached']['mean_s']:.2f}s cached, "
        f"{cache['uncached']['mean_s']:.2f}s with cache_prompt false "
        f"({cache['uncached_over_cached_mean']}x; paired {cache['paired_ratio']}x on "
        f"{cache['paired_goals']} goals)"
    )
    return {"summary": summary, "plans": records, "prompt_cache": cache}
