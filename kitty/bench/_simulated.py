"""Suite 5: the original design's two scenarios on a SIMULATED M3 Ultra fleet (``ops.simfleet``).

Everything here is **SIMULATED**: :class:`ops.simfleet.SimFleet` serves the
``m3-ultra-sim`` profile with a calibrated timing model (slots, per-sequence decode
speed falling with concurrent sequences, shared prefill, llama.cpp-like queueing), no
model runs. The servers start on free ports in this process and run ``time_scale``
times faster than the hardware would; reported times are scaled back to simulated
seconds.

Each scenario is a pinned plan (prompt sizes set by a task's context text, completions
pinned with ``ignore_eos``) followed by the synthesis on the reasoning tier, run three
ways: sequential (one call at a time), superstep waves, and the product. The planner
call is left out of all three (the simulator answers a constrained planner with a
one-task plan); it would add the same seconds to each.

The suite also runs the scheduling suite's five DAGs with all four schedulers on the
simulated fleet (:func:`kitty.bench._scheduling.compare`), where parallel slots pay off as they
do on real hardware.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from endpoints.config import EndpointConfig, FleetConfig, load_fleet
from graph import (
    Context,
    Plan,
    PlanReady,
    RunFinished,
    RunResult,
    Task,
    TaskResult,
    astream_goal,
)
from graph.synthesis import synthesis_messages
from kitty.bench._bare import new_client, run_sequential
from kitty.bench._env import BenchEnv, plot
from kitty.bench._product import run_product, spans_of
from kitty.bench._records import VariantRun, best
from kitty.bench._scheduling import TOKEN_SCALE, compare, suite_dags
from kitty.bench._simserve import SIM_PROFILE, sim_fleet
from kitty.bench._waves import run_waves
from kitty.bench._workload import pinned

TIME_SCALE = {"full": 0.05, "quick": 0.02, "smoke": 0.005}
SCHEDULING_TIME_SCALE = {"full": 0.25, "quick": 0.1, "smoke": 0.01}
VARIANTS = ["sequential", "waves", "product"]

_CONTEXT_SENTENCE = (
    "Source excerpt: outdoor parts see UV, heat cycling and moisture, so the material, "
    "wall thickness, infill and print orientation all change how long a part lasts. "
)


def context_text(tokens: int) -> str:
    """About ``tokens`` prompt tokens of retrieved-context text (4 characters a token)."""
    if tokens <= 0:
        return ""
    text = (_CONTEXT_SENTENCE * (tokens * 4 // len(_CONTEXT_SENTENCE) + 1))[: tokens * 4]
    return f"\nContext ({tokens} tokens):\n{text}"


def sim_task(
    task_id: str,
    agent: str,
    what: str,
    context: int,
    completion: int,
    deps: list[str] | None = None,
) -> Task:
    """A pinned task whose prompt carries ``context`` tokens of retrieved text."""
    return pinned(task_id, agent, completion, deps, what + context_text(context))


@dataclass(frozen=True)
class Scenario:
    """One of the seed's scenarios with stated token counts."""

    name: str
    goal: str
    tasks: list[Task]
    synthesis_tokens: int
    seed_claim: str


SCENARIOS = [
    Scenario(
        "research_3",
        "Compare PETG and ASA for outdoor 3D-printed parts and recommend one",
        [
            sim_task("task_1", "researcher", "Research PETG outdoor durability", 400, 120),
            sim_task("task_2", "researcher", "Research ASA outdoor durability", 400, 120),
            sim_task("task_3", "analyst", "Compare filament cost per kg", 200, 80),
        ],
        250,
        "~45 s -> ~15 s (3x)",
    ),
    Scenario(
        "cad_fabrication_5",
        "Design a wall-mounted holder for 1 kg filament spools and plan its print",
        [
            sim_task("task_1", "researcher", "Find reference spool-holder designs", 400, 120),
            sim_task("task_2", "vision_analyst", "Analyze the wall photo", 300, 100),
            sim_task(
                "task_3", "cad_designer", "Specify the CAD model", 100, 200, ["task_1", "task_2"]
            ),
            sim_task("task_4", "coder", "Write the CadQuery code", 100, 250, ["task_1"]),
            sim_task(
                "task_5",
                "fabricator",
                "Choose printer, material, settings",
                100,
                120,
                ["task_3", "task_4"],
            ),
        ],
        300,
        "~90 s -> ~25 s (3.6x)",
    ),
]


async def _synthesize(
    scenario: Scenario, outputs: dict[str, str], fleet_path: str, client: httpx.AsyncClient
) -> None:
    """The product's synthesis request, sent bare (for the sequential and waves runs)."""
    fleet = load_fleet(fleet_path)
    tier = next(t for t in Context().synthesis_tiers if t in fleet.tiers)
    endpoint: EndpointConfig = fleet.tier(tier).endpoints[0]
    context = Context(fleet=fleet_path, synthesis_max_tokens=scenario.synthesis_tokens)
    results = {
        t.id: TaskResult(task_id=t.id, status="completed", agent=t.agent, output=outputs[t.id])
        for t in scenario.tasks
    }
    state: Any = {"goal": scenario.goal, "plan": Plan(tasks=scenario.tasks), "results": results}
    messages, _ = await synthesis_messages(state, context, endpoint)
    roles = {"system": "system", "human": "user"}
    body: dict[str, Any] = {
        "model": endpoint.model,
        "messages": [{"role": roles[m.type], "content": m.content} for m in messages],
        "temperature": 0.5,
        "max_tokens": scenario.synthesis_tokens,
    }
    if endpoint.thinking:
        body["reasoning_effort"] = endpoint.thinking
    response = await client.post(f"{endpoint.base_url}/v1/chat/completions", json=body)
    response.raise_for_status()


async def _run(
    variant: str, scenario: Scenario, fleet_path: str, env: BenchEnv
) -> tuple[VariantRun, RunResult | None]:
    """Tasks + synthesis with one scheduler (again after a failure); real seconds."""
    run, result = await _run_once(variant, scenario, fleet_path)
    if not run.ok:
        env.log(f"  {scenario.name} {variant}: {run.error or 'a task failed'}; running it again")
        run, result = await _run_once(variant, scenario, fleet_path)
    return run, result


async def _run_once(
    variant: str, scenario: Scenario, fleet_path: str
) -> tuple[VariantRun, RunResult | None]:
    if variant == "product":
        return await _run_product(scenario, fleet_path)
    began = time.perf_counter()
    async with new_client() as client:
        if variant == "sequential":
            run = await run_sequential(
                scenario.tasks, scenario.goal, load_fleet(fleet_path), client
            )
        else:
            run = await run_waves(scenario.tasks, scenario.goal, fleet_path)
        if run.ok:
            try:
                await _synthesize(scenario, run.outputs, fleet_path, client)
            except httpx.HTTPError as exc:
                run.error = f"synthesis failed: {exc!r}"
    run.wall_s = time.perf_counter() - began
    return run, None


async def _run_product(scenario: Scenario, fleet_path: str) -> tuple[VariantRun, RunResult | None]:
    """The product from plan ready to run finished (tasks + synthesis)."""
    timed = await time_given_plan(scenario, fleet_path)
    if timed is None:
        return VariantRun("product", 0.0, [], "the run did not finish"), None
    seconds, result = timed
    return VariantRun("product", seconds, spans_of(result)), result


async def time_given_plan(
    scenario: Scenario, fleet: str | FleetConfig
) -> tuple[float, RunResult] | None:
    """Run the scenario's own plan through the product (tasks and synthesis, no voice).

    Args:
        scenario: The goal, its plan and the synthesis budget.
        fleet: The fleet file (or config) the product runs on.

    Returns:
        Real seconds from plan ready to run finished, and the run's result; None when the
        run did not finish.
    """
    plan = Plan(tasks=[t.model_copy(deep=True) for t in scenario.tasks], source="given")
    ready = finished = None
    result: RunResult | None = None
    async for event in astream_goal(
        scenario.goal,
        plan=plan,
        fleet=fleet,
        voice=False,
        synthesis_max_tokens=scenario.synthesis_tokens,
    ):
        if isinstance(event, PlanReady):
            ready = time.perf_counter()
        elif isinstance(event, RunFinished):
            finished, result = time.perf_counter(), event.result
    if ready is None or finished is None or result is None:
        return None
    return finished - ready, result


async def run_simulated(env: BenchEnv) -> dict[str, Any]:
    """Run the suite; returns JSON-ready results (times in simulated seconds)."""
    try:
        import ops.simfleet  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"ops.simfleet is not available ({exc})"}
    scale = TIME_SCALE[env.size]
    rows: list[dict[str, Any]] = []
    with sim_fleet(scale) as fleet_path:
        # warm-up: imports, graph compiles and connections, outside the timing
        await run_product(SCENARIOS[0].tasks[:1], "warm up", fleet_path, synthesis_max_tokens=1)
        for scenario in SCENARIOS:
            runs: dict[str, list[VariantRun]] = {v: [] for v in VARIANTS}
            results: dict[int, RunResult] = {}
            for rep in range(env.reps):
                order = VARIANTS[rep % 3 :] + VARIANTS[: rep % 3]
                for variant in order:
                    run, result = await _run(variant, scenario, fleet_path, env)
                    if not run.ok:
                        env.log(f"  {scenario.name} {variant}: FAILED {run.error}")
                    runs[variant].append(run)
                    if result is not None:
                        results[id(run)] = result
            best_runs = {v: best(rs) for v, rs in runs.items()}
            simulated = {v: r.wall_s / scale for v, r in best_runs.items()}
            product_run = best_runs["product"]
            product_result = results.get(id(product_run))
            token_table = [
                f"{t.id} {t.agent}: {s.prompt_tokens} -> {s.completion_tokens} tokens"
                for t, s in zip(scenario.tasks, product_run.spans, strict=False)
            ]
            if product_result is not None:
                usage = product_result.metrics
                task_prompt = sum(s.prompt_tokens for s in product_run.spans)
                token_table.append(
                    f"synthesis (reasoning tier): {usage.prompt_tokens - task_prompt} -> "
                    f"{usage.completion_tokens - product_run.completion_tokens} tokens"
                )
            rows.append(
                {
                    "name": scenario.name,
                    "goal": scenario.goal,
                    "tasks": len(scenario.tasks),
                    "simulated_s": {v: round(x, 2) for v, x in simulated.items()},
                    "wall_s": {v: round(r.wall_s, 3) for v, r in best_runs.items()},
                    "ok": {v: r.ok for v, r in best_runs.items()},
                    "speedup": round(simulated["sequential"] / simulated["product"], 2),
                    "waves_over_product": round(simulated["waves"] / simulated["product"], 3),
                    "seed_claim": scenario.seed_claim,
                    "token_table": token_table,
                    "timeline": plot(env, product_result, f"sim-{scenario.name}"),
                }
            )
            env.log(
                f"  SIMULATED {scenario.name}: "
                + "  ".join(f"{v} {simulated[v]:.1f}s" for v in VARIANTS)
                + f"  (seed: {scenario.seed_claim})"
            )
    scheduling = await _scheduling_suite(env)
    return {
        "simulated": True,
        "profile": SIM_PROFILE,
        "time_scale": scale,
        "reps": env.reps,
        "scenarios": rows,
        "scheduling": scheduling,
    }


async def _scheduling_suite(env: BenchEnv) -> dict[str, Any]:
    """The scheduling suite's DAGs and schedulers on the SIMULATED fleet.

    On a small machine the real engine gains little from parallel slots, so the
    schedulers barely differ there; the simulator models a fleet where they do. The time
    scale is kept moderate so that real per-task overhead is not inflated much.
    """
    scale = SCHEDULING_TIME_SCALE[env.size]
    with sim_fleet(scale) as fleet_path:
        # best of 2 at most: the timing model is deterministic, only our own overhead varies
        reps = min(env.reps, 2)
        sub = BenchEnv(fleet=fleet_path, size=env.size, reps=reps, out=env.out, log=env.log)
        result = await compare(
            sub, suite_dags(env.size), seconds_per_wall_s=1 / scale, label="sim-"
        )
    return {**result, "time_scale": scale, "token_scale": TOKEN_SCALE[env.size]}
