"""Benchmark results as JSON, markdown tables and the docs site's benchmarks page.

``results.json`` keeps one entry per suite; running a single suite replaces only its
entry, so the markdown always shows the latest figures of every suite run so far. When the
results folder is a folder of a MkDocs ``docs/`` directory (the default ``docs/bench``),
the site's ``docs/benchmarks.md`` is rewritten from the same figures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kitty.bench._contention import render_contention
from kitty.bench._fairness import render_fairness
from kitty.bench._planner_cache import render_cache
from kitty.bench._tools import render_tools

JSON_NAME = "results.json"
MARKDOWN_NAME = "results.md"
DOCS_PAGE_NAME = "benchmarks.md"
VARIANTS = ["sequential", "waves", "product", "oracle"]


def load(out: Path) -> dict[str, Any]:
    """Results saved in ``out`` before (empty when none or unreadable)."""
    path = out / JSON_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"suites": {}}
    return data if isinstance(data.get("suites"), dict) else {"suites": {}}


def docs_page_for(out: Path) -> Path | None:
    """The site page a results folder feeds, or ``None`` when it feeds none.

    Results written to a folder of a MkDocs project's ``docs/`` directory (``docs/bench``
    beside ``mkdocs.yml``) refresh that site's ``docs/benchmarks.md``; results written
    anywhere else (``--out /tmp/b``, a test's temporary folder) leave every page alone.
    """
    docs = out.resolve().parent
    if docs.name == "docs" and (docs.parent / "mkdocs.yml").is_file():
        return docs / DOCS_PAGE_NAME
    return None


def save(out: Path, suites: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """Merge new suite results into ``out``'s JSON, rewrite the markdown; return the merge.

    Also rewrites the docs site's benchmarks page when ``out`` feeds one
    (:func:`docs_page_for`).
    """
    out.mkdir(parents=True, exist_ok=True)
    data = load(out)
    data["suites"].update(suites)
    data["machine"] = machine
    (out / JSON_NAME).write_text(json.dumps(data, indent=2, default=str) + "\n")
    (out / MARKDOWN_NAME).write_text(render(data))
    page = docs_page_for(out)
    if page is not None:
        page.write_text(render_page(data))
    return data


def _meta(suite: dict[str, Any]) -> str:
    meta = suite.get("meta", {})
    return (
        f"_{meta.get('date', '?')}, size `{meta.get('size', '?')}`, fleet "
        f"`{meta.get('fleet', '?')}`, {meta.get('seconds', 0):.0f} s_"
    )


def _scheduling(
    suite: dict[str, Any], time_kind: str = "Task-phase wall time", *, timelines: bool = True
) -> list[str]:
    lines = [
        f"{time_kind}, best of {suite['reps']} (token scale {suite['token_scale']}); in "
        "brackets: ratio to the eager oracle.",
        "",
        "| DAG | shape | tasks | tokens | " + " | ".join(VARIANTS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(VARIANTS),
    ]
    for row in suite["dags"]:
        cells = []
        for v in VARIANTS:
            best = row["best"][v]
            mark = "" if best["ok"] else " FAILED"
            seconds = best.get("seconds", best["wall_s"])
            cells.append(f"{seconds:.2f} s ({row['ratio_to_oracle'][v]:.2f}x){mark}")
        lines.append(
            f"| {row['name']} | {row['shape']} | {row['tasks']} | {row['completion_tokens']} | "
            + " | ".join(cells)
            + " |"
        )
    gm = suite["geomean_ratio_to_oracle"]
    gm_span = suite["geomean_span_ratio_to_oracle"]
    lines.append(
        "| **geomean ratio** | | | | " + " | ".join(f"**{gm[v]:.3f}x**" for v in VARIANTS) + " |"
    )
    lines.append(
        "| geomean ratio, first call start -> last call end | | | | "
        + " | ".join(f"{gm_span[v]:.3f}x" for v in VARIANTS)
        + " |"
    )
    verdict = "met" if suite["target_met"] else "NOT met"
    lines += [
        "",
        f"Target product <= {suite['target_product_ratio']}x oracle (geomean): **{verdict}**; "
        f"product beats waves: **{'yes' if suite['product_beats_waves'] else 'no'}**.",
    ]
    links = [f"[{r['name']}]({r['timeline']})" for r in suite["dags"] if r.get("timeline")]
    if timelines and links:
        lines += ["", "Product timelines: " + ", ".join(links) + "."]
    return lines


def _overhead(suite: dict[str, Any]) -> list[str]:
    lines = [
        "| endpoints | tasks | tokens/task | product | oracle | overhead per task |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in [
        ("embedded", "embedded llama.cpp (noisy)"),
        ("simulated", "zero-latency SIMULATED"),
    ]:
        row = suite.get(key)
        if not row:
            continue
        lines.append(
            f"| {label} | {row['tasks']} | {suite['max_tokens']} | "
            f"{row['product']['wall_s']:.3f} s | {row['oracle']['wall_s']:.3f} s | "
            f"**{row['ms_per_task']:+.2f} ms** |"
        )
    verdict = "met" if suite["target_met"] else "NOT met"
    lines += [
        "",
        f"Target <= {suite['target_ms_per_task']} ms per task, judged on the "
        f"{suite['judged_on']} figure: **{verdict}**.",
    ]
    return lines


def _planner(suite: dict[str, Any]) -> list[str]:
    s = suite["summary"]
    issues = s.get("issues", {})
    return [
        "| goals | schema-valid | acyclic (no self-loops) | mean tasks | mean critical path "
        "| mean parallelism | repairs (plans repaired) | retries | errors / keyword fallbacks "
        "| wall |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {s['goals']} (max_tasks {s['max_tasks']}) | {s['schema_valid_pct']}% | "
        f"{s['acyclic_pct']}% ({s.get('acyclic_ignoring_self_pct', '?')}%) | "
        f"{s['mean_tasks']} | {s['mean_critical_path']} | "
        f"{s['mean_parallelism']} | {s['repairs_total']} ({s['plans_repaired']}) | "
        f"{s['retries']} | {s['planner_errors']} / {s['keyword_fallbacks']} | {s['wall_s']} s |",
        "",
        f"Raw planner output, before repair: {issues.get('duplicate_ids', 0)} duplicate ids, "
        f"{issues.get('self_dependencies', 0)} self-dependencies, "
        f"{issues.get('unknown_dependencies', 0)} unknown dependencies. Acyclic in brackets: "
        "ignoring self-dependencies. Parallelism = tasks / critical-path length (repaired plan).",
        f"Raw outputs that needed no repair: **{s.get('no_repair_pct', '?')}%**.",
        *(["", *render_cache(suite["prompt_cache"])] if suite.get("prompt_cache") else []),
    ]


def _scale_processes(suite: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | goals completed | wall | goals/min | peak busy / slots (/slots) "
        "| peak requests_deferred (/metrics) | cap held |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for row in suite["variants"]:
        busy = ", ".join(f"{n} {row['peak_busy'].get(n, 0)}/{s}" for n, s in suite["slots"].items())
        deferred = ", ".join(f"{n} {v}" for n, v in row["peak_deferred"].items())
        lines.append(
            f"| {row['variant']} | {row['completed']}/{row['goals']} | {row['wall_s']} s | "
            f"{row['goals_per_min']} | {busy} | {deferred} | "
            f"{'yes' if row['cap_held'] else 'NO'} |"
        )
    return [
        *lines,
        "",
        f"Goals per minute, {suite['processes']} processes through Redis vs one process: "
        f"**{suite['redis_vs_one_process']}x**. Servers polled every 100 ms; a cap held "
        "means no request ever waited inside llama.cpp for a slot.",
        *_lease_overhead(suite.get("lease_overhead")),
    ]


def _lease_overhead(overhead: dict[str, Any] | None) -> list[str]:
    if not overhead or overhead.get("redis_us") is None:
        return []
    return [
        "",
        f"One uncontended slot acquire + release: local store {overhead['local_us']} us, "
        f"Redis {overhead['redis_us']} us ({overhead['redis_vs_local']}x).",
    ]


def _scale(suite: dict[str, Any]) -> list[str]:
    if "variants" in suite:
        return _scale_processes(suite)
    busy = ", ".join(
        f"{name} {suite['max_busy_slots'][name]}/{slots}" for name, slots in suite["slots"].items()
    )
    where = "servers in this process" if suite["fleet_in_process"] else "servers elsewhere"
    return [
        "| goals completed | goals wall | max busy / slots (from /slots) | never exceeded "
        "| peak RSS | DAG completed | DAG wall |",
        "|---:|---:|---|---|---:|---:|---:|",
        f"| {suite['goals_completed']}/{suite['goals']} | {suite['goals_wall_s']} s | {busy} | "
        f"{'yes' if suite['slots_never_exceeded'] else 'NO'} | {suite['peak_rss_mb']} MB "
        f"({where}) | {suite['dag_completed']}/{suite['dag_tasks']} | {suite['dag_wall_s']} s |",
        "",
        f"{suite['slot_samples']} samples of every server's /slots "
        f"({suite['failed_polls']} failed polls).",
    ]


def _simulated(suite: dict[str, Any], *, timelines: bool = True) -> list[str]:
    if suite.get("skipped"):
        return [f"Skipped: {suite['skipped']}"]
    lines = [
        "**SIMULATED** (calibrated simulator, not real hardware). Times in simulated "
        f"seconds (measured wall time x {suite['time_scale']}).",
        "",
        "| scenario | tasks | sequential | waves | product | speed-up (seq/product) "
        "| original design's claim |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in suite["scenarios"]:
        sim = row["simulated_s"]
        lines.append(
            f"| {row['name']} | {row['tasks']} | {sim['sequential']:.1f} s | {sim['waves']:.1f} s"
            f" | {sim['product']:.1f} s | {row['speedup']:.2f}x | {row['seed_claim']} |"
        )
    for row in suite["scenarios"]:
        lines += ["", f"{row['name']} token counts (prompt -> completion):", ""]
        lines += [f"- {t}" for t in row["token_table"]]
    scheduling = suite.get("scheduling")
    if scheduling:
        lines += [
            "",
            "### Scheduling suite on the SIMULATED fleet",
            "",
            f"The same five DAGs on `{suite['profile']}` at time scale "
            f"{scheduling['time_scale']}; seconds are simulated seconds.",
            "",
        ]
        lines += _scheduling(scheduling, "Task-phase time (SIMULATED seconds)", timelines=timelines)
    return lines


def _service(suite: dict[str, Any]) -> list[str]:
    return [
        f"The same pinned run ({suite['tasks']} tasks x {suite['tokens_per_task']} tokens, "
        f"voice off) {suite['rounds']} times each, alternating rounds: `graph.arun_goal` "
        "vs `POST /api/query/parallel` to the service (in-process uvicorn, loopback, "
        "bearer token); medians.",
        "",
        "| rounds | direct `arun_goal` | HTTP request | HTTP / direct "
        "| HTTP minus the run's own wall_s (min, max) |",
        "|---:|---:|---:|---:|---:|",
        f"| {suite['rounds']} | {suite['median_direct_ms']:.0f} ms | "
        f"{suite['median_http_ms']:.0f} ms | **{suite['ratio_http_to_direct']:.3f}x** | "
        f"**{suite['median_http_minus_wall_ms']:.1f} ms** ({suite['min_http_minus_wall_ms']:.1f}, "
        f"{suite['max_http_minus_wall_ms']:.1f}) |",
        "",
        "HTTP minus wall_s is what a request costs around its run: client, socket, uvicorn, "
        "middleware, validation and serialization. The direct call's own time outside "
        f"wall_s, for comparison: {suite['median_direct_minus_wall_ms']:.1f} ms "
        f"(median of the rounds' HTTP/direct ratios: {suite['median_round_ratio']:.3f}x).",
    ]


Renderer = Callable[[dict[str, Any]], list[str]]

SECTIONS: list[tuple[str, str, Renderer]] = [
    ("scheduling", "Scheduling: sequential vs waves vs product vs eager oracle", _scheduling),
    ("overhead", "Overhead per task", _overhead),
    ("planner", "Planner validity", _planner),
    ("scale", "Scale", _scale),
    ("sim", "Simulated fleet (SIMULATED)", _simulated),
    ("service", "HTTP service vs direct API", _service),
    ("tools", "Tool calls: validity and slot release", render_tools),
    ("contention", "Contention: chains behind fan-outs on scarce slots", render_contention),
    ("fairness", "Fairness: one big goal and five small ones together", render_fairness),
]

# The site page leaves out the timeline PNG links: they live in the results folder, which
# is not part of the site.
PAGE_RENDERERS: dict[str, Renderer] = {
    "scheduling": lambda suite: _scheduling(suite, timelines=False),
    "sim": lambda suite: _simulated(suite, timelines=False),
}


def _sections(data: dict[str, Any], renderers: dict[str, Renderer] | None = None) -> list[str]:
    lines: list[str] = []
    for key, title, render_suite in SECTIONS:
        suite = data["suites"].get(key)
        if not suite:
            continue
        lines += ["", f"## {title}", "", _meta(suite), ""]
        if suite.get("error"):
            lines.append(f"FAILED: {suite['error']}")
        else:
            lines += (renderers or {}).get(key, render_suite)(suite)
    return lines


def render(data: dict[str, Any]) -> str:
    """Markdown tables of every suite in ``data`` (``results.md``)."""
    machine = data.get("machine", {})
    lines = [
        "# kitty-orchestrator benchmark results",
        "",
        f"Machine: {machine.get('cpus', '?')} CPUs, {machine.get('memory_gb', '?')} GB, "
        f"{machine.get('platform', '?')}, Python {machine.get('python', '?')}.",
        "Generated by `kitty-orch bench`; the docs site's Benchmarks pages say what the "
        "figures mean and how they are measured.",
    ]
    return "\n".join(lines + _sections(data)) + "\n"


def _machine_spec(machine: dict[str, Any]) -> str:
    memory = machine.get("memory_gb")
    memory_text = f"{round(memory)} GB" if isinstance(memory, int | float) else "? GB"
    return (
        f"{machine.get('cpus', '?')} CPU cores, {memory_text} of memory, "
        f"Python {machine.get('python', '?')}"
    )


def render_page(data: dict[str, Any]) -> str:
    """The docs site's benchmarks page (``docs/benchmarks.md``) for the figures in ``data``."""
    machine = data.get("machine", {})
    missing = [key for key, _, _ in SECTIONS if not data["suites"].get(key)]
    lines = [
        "# Benchmarks",
        "",
        '!!! note "Generated page"',
        "    `kitty-orch bench` writes this page from the results it measured; do not edit it",
        "    by hand. Each section shows when and at which size its suite ran, and [how they are",
        "    measured](benchmark-method.md) explains each suite and how to read its figures.",
        "",
        f"Measured on a machine with {_machine_spec(machine)}.",
    ]
    if missing:
        lines += [
            "",
            f"Suites not in these results yet: {', '.join(missing)} "
            f"(`kitty-orch bench {missing[0]}` measures one).",
        ]
    return "\n".join(lines + _sections(data, PAGE_RENDERERS)) + "\n"
