"""Suite 1: scheduling. Five DAG shapes, four schedulers, ratios to the eager oracle.

For each DAG, in the same session and interleaved (the order rotates every repetition,
so background load hits every variant alike), best of N of:

- ``sequential``: one task at a time, bare HTTP;
- ``waves``: the naive LangGraph superstep fan-out (:mod:`kitty.bench._waves`);
- ``product``: the product's graph (:mod:`kitty.bench._product`);
- ``oracle``: eager bare-asyncio scheduling with the same slot caps (:mod:`kitty.bench._bare`).
"""

from __future__ import annotations

from typing import Any

from graph import RunResult
from kitty.bench._bare import new_client, run_oracle, run_sequential, server_slots
from kitty.bench._env import BenchEnv, plot
from kitty.bench._product import run_product
from kitty.bench._records import VariantRun, best, geomean
from kitty.bench._waves import run_waves
from kitty.bench._workload import Dag, pinned, scheduling_dags

VARIANTS = ["sequential", "waves", "product", "oracle"]
TARGET_PRODUCT_RATIO = 1.05
#: Run settings of each product variant (``product_fifo``: strict arrival order of slots).
PRODUCT_SETTINGS: dict[str, dict[str, Any]] = {
    "product": {},
    "product_fifo": {"slot_order": "fifo"},
}
TOKEN_SCALE = {"full": 1.0, "quick": 0.25, "smoke": 0.125}
SMOKE_DAGS = 1


async def _warm_up(env: BenchEnv, slots: dict[str, int], variants: list[str]) -> None:
    """One tiny DAG through each variant: imports, graph compiles, connections, caches.

    The product's variants share one graph, so it is warmed once.
    """
    dag = Dag(
        "warm_up",
        "",
        "warm up",
        [
            pinned("a", "researcher", 2),
            pinned("b", "coder", 2),
            pinned("c", "vision_analyst", 2),
            pinned("d", "reasoner", 2, ["a", "b", "c"]),
            pinned("e", "summarizer", 2),
        ],
    )
    kinds = dict.fromkeys("product" if v in PRODUCT_SETTINGS else v for v in variants)
    for variant in kinds:
        await _run_once(variant, dag, env, slots)


async def run_variant(
    variant: str, dag: Dag, env: BenchEnv, slots: dict[str, int]
) -> tuple[VariantRun, RunResult | None]:
    """Run one DAG with one scheduler (once more after a failure, e.g. a dropped keep-alive).

    Returns:
        The run and, for the product, its ``RunResult``.
    """
    run, result = await _run_once(variant, dag, env, slots)
    if not run.ok:
        env.log(f"  {dag.name} {variant}: {run.error or 'a task failed'}; running it again")
        run, result = await _run_once(variant, dag, env, slots)
    return run, result


async def _run_once(
    variant: str, dag: Dag, env: BenchEnv, slots: dict[str, int]
) -> tuple[VariantRun, RunResult | None]:
    if variant in PRODUCT_SETTINGS:
        return await run_product(dag.tasks, dag.goal, env.fleet, **PRODUCT_SETTINGS[variant])
    if variant == "waves":
        return await run_waves(dag.tasks, dag.goal, env.fleet), None
    async with new_client() as client:
        if variant == "sequential":
            return await run_sequential(dag.tasks, dag.goal, env.config, client), None
        return await run_oracle(dag.tasks, dag.goal, env.config, client, slots), None


def suite_dags(size: str) -> list[Dag]:
    """The DAGs for a run size (token counts scaled down for quick and smoke runs)."""
    dags = scheduling_dags(TOKEN_SCALE[size])
    return dags[:SMOKE_DAGS] if size == "smoke" else dags


async def compare(
    env: BenchEnv,
    dags: list[Dag],
    *,
    seconds_per_wall_s: float = 1.0,
    label: str = "",
    variants: list[str] = VARIANTS,
    target: float = TARGET_PRODUCT_RATIO,
    prime: bool = True,
) -> dict[str, Any]:
    """Run every DAG with each scheduler on ``env.fleet``; best of ``env.reps``, interleaved.

    Args:
        env: Fleet, repetitions, output folder.
        dags: The DAGs.
        seconds_per_wall_s: Factor for reported seconds (a simulated fleet's
            ``1 / time_scale``); ratios do not depend on it.
        label: Prefix of the timeline file names.
        variants: Schedulers to compare (``oracle`` and ``product`` among them).
        target: Most the product's geomean ratio to the oracle may be.
        prime: Warm every variant up and fill the prompt caches with each DAG's prompts
            before measuring (off: a smoke run that only checks that everything runs).
    """
    slots = await server_slots(env.config)
    if prime:
        await _warm_up(env, slots, variants)
    rows: list[dict[str, Any]] = []
    for dag in dags:
        runs: dict[str, list[VariantRun]] = {v: [] for v in variants}
        product_results: dict[int, RunResult] = {}
        # unmeasured: fills the servers' prompt caches with this DAG's prompts (outputs
        # are seeded, so every variant then sends the same, equally cached, prompts)
        if prime:
            await run_variant("oracle", dag, env, slots)
        for rep in range(env.reps):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for variant in order:
                run, result = await run_variant(variant, dag, env, slots)
                runs[variant].append(run)
                if result is not None:
                    product_results[id(run)] = result
                if not run.ok:
                    env.log(f"  {dag.name} {variant}: FAILED {run.error or 'a task failed'}")
        best_runs = {v: best(rs) for v, rs in runs.items()}
        oracle_s = best_runs["oracle"].wall_s
        oracle_span = best_runs["oracle"].span_s
        ratios = {v: r.wall_s / oracle_s if oracle_s else 0.0 for v, r in best_runs.items()}
        span_ratios = {
            v: r.span_s / oracle_span if oracle_span else 0.0 for v, r in best_runs.items()
        }
        timeline = plot(env, product_results.get(id(best_runs["product"])), label + dag.name)
        summaries = {v: r.summary() for v, r in best_runs.items()}
        for summary in summaries.values():
            summary["seconds"] = round(summary["wall_s"] * seconds_per_wall_s, 3)
        rows.append(
            {
                "name": dag.name,
                "shape": dag.shape,
                "tasks": len(dag.tasks),
                "completion_tokens": dag.tokens,
                "best": summaries,
                "all_wall_s": {v: [round(r.wall_s, 4) for r in rs] for v, rs in runs.items()},
                "ratio_to_oracle": {v: round(x, 3) for v, x in ratios.items()},
                "span_ratio_to_oracle": {v: round(x, 3) for v, x in span_ratios.items()},
                "best_runs": {v: r.to_json() for v, r in best_runs.items()},
                "timeline": timeline,
            }
        )
        env.log(
            f"  {label}{dag.name:18s} "
            + "  ".join(f"{v} {summaries[v]['seconds']:6.2f}s ({ratios[v]:.2f}x)" for v in variants)
        )
    gm = {v: round(geomean([r["ratio_to_oracle"][v] for r in rows]), 3) for v in variants}
    gm_span = {v: round(geomean([r["span_ratio_to_oracle"][v] for r in rows]), 3) for v in variants}
    return {
        "reps": env.reps,
        "slots": slots,
        "dags": rows,
        "geomean_ratio_to_oracle": gm,
        "geomean_span_ratio_to_oracle": gm_span,
        "target_product_ratio": target,
        "target_met": bool(gm["product"] <= target),
        "product_beats_waves": bool("waves" in gm and gm["product"] < gm["waves"]),
    }


async def run_scheduling(env: BenchEnv) -> dict[str, Any]:
    """Run the suite on the benchmark fleet; returns JSON-ready results."""
    env.ensure_fleet()
    result = await compare(env, suite_dags(env.size))
    return {**result, "token_scale": TOKEN_SCALE[env.size]}
