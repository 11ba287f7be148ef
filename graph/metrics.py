"""Run metrics computed from task results and phase timings."""

from __future__ import annotations

from graph.schemas import EndpointUsage, Plan, RunMetrics, TaskResult


def critical_path_s(plan: Plan, results: dict[str, TaskResult]) -> float:
    """Longest dependency chain, summing each task's measured model latency.

    With unlimited slots and no scheduling overhead, no run of this plan could finish
    its tasks faster than this.
    """
    finish: dict[str, float] = {}
    for task in plan.tasks:  # plans are kept in topological order
        result = results.get(task.id)
        own = result.latency_s if result else 0.0
        finish[task.id] = own + max((finish.get(d, 0.0) for d in task.dependencies), default=0.0)
    return max(finish.values(), default=0.0)


def peak_concurrency(results: list[TaskResult]) -> int:
    """Most tasks whose model calls overlapped in time."""
    edges: list[tuple[float, int]] = []
    for result in results:
        if result.started_at is not None and result.finished_at is not None:
            edges.append((result.started_at, 1))
            edges.append((result.finished_at, -1))
    edges.sort(key=lambda e: (e[0], e[1]))  # an end and a start at the same instant don't overlap
    peak = running = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def active_s(results: list[TaskResult]) -> float:
    """Seconds during which some task was preparing, queued or running.

    The union of the spans ``ready_at`` (or ``started_at``) -> ``finished_at`` of the tasks
    that reached a slot. Unlike first start -> last finish it leaves out time in which no
    task was under way, such as the downtime between a crash and the resume.
    """
    spans = sorted(
        (min(r.ready_at or r.started_at, r.started_at), r.finished_at)
        for r in results
        if r.started_at is not None and r.finished_at is not None
    )
    total = 0.0
    current_start: float | None = None
    current_end = 0.0
    for start, end in spans:
        if current_start is None or start > current_end:
            if current_start is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_start is not None:
        total += current_end - current_start
    return total


def endpoint_usage(results: list[TaskResult]) -> dict[str, EndpointUsage]:
    """Per-endpoint figures: busy seconds from each request, tasks and tokens by server.

    A failed attempt is charged to the endpoint that failed, not to the one that served
    the task in the end. Results without request records (saved by an older version)
    charge their whole latency to their endpoint.
    """
    endpoints: dict[str, EndpointUsage] = {}
    for result in results:
        if result.calls:
            for call in result.calls:
                endpoints.setdefault(call.endpoint, EndpointUsage()).busy_s += call.latency_s
        elif result.endpoint is not None and result.started_at is not None:
            endpoints.setdefault(result.endpoint, EndpointUsage()).busy_s += result.latency_s
        if result.endpoint is None or result.started_at is None:
            continue
        entry = endpoints.setdefault(result.endpoint, EndpointUsage())
        entry.tasks += 1
        entry.prompt_tokens += result.prompt_tokens
        entry.completion_tokens += result.completion_tokens
    return endpoints


def compute_metrics(
    plan: Plan,
    results: dict[str, TaskResult],
    timings: dict[str, float],
    usage: dict[str, int],
    wall_s: float,
) -> RunMetrics:
    """Summarize a run.

    Args:
        plan: The plan that ran.
        results: Task results by id.
        timings: Phase timings (``planner_s``, ``synthesis_s``, ``summary_s``).
        usage: Planner + synthesis + summary token usage (``prompt_tokens``,
            ``completion_tokens`` and, where reported, ``cached_prompt_tokens``).
        wall_s: Wall time of the whole run.
    """
    ordered = [results[t.id] for t in plan.tasks if t.id in results]
    prompt_tokens = usage.get("prompt_tokens", 0) + sum(r.prompt_tokens for r in ordered)
    cached = usage.get("cached_prompt_tokens", 0) + sum(r.cached_prompt_tokens for r in ordered)
    return RunMetrics(
        wall_s=wall_s,
        planner_s=timings.get("planner_s", 0.0),
        execution_s=active_s(ordered),
        synthesis_s=timings.get("synthesis_s", 0.0),
        summary_s=timings.get("summary_s", 0.0),
        critical_path_s=critical_path_s(plan, results),
        prompt_tokens=prompt_tokens,
        cached_prompt_tokens=cached,
        cached_prompt_share=cached / prompt_tokens if prompt_tokens else 0.0,
        completion_tokens=usage.get("completion_tokens", 0)
        + sum(r.completion_tokens for r in ordered),
        tasks_total=len(plan.tasks),
        tasks_completed=sum(r.status == "completed" for r in ordered),
        tasks_failed=sum(r.status == "failed" for r in ordered),
        tasks_skipped=sum(r.status == "skipped" for r in ordered),
        fallbacks=sum(r.fallback_used for r in ordered),
        peak_concurrency=peak_concurrency(ordered),
        tool_calls=sum(len(r.tool_calls) for r in ordered),
        tool_calls_refused=sum(c.refused for r in ordered for c in r.tool_calls),
        tool_calls_failed=sum(not c.ok and not c.refused for r in ordered for c in r.tool_calls),
        tool_s=sum(c.latency_s for r in ordered for c in r.tool_calls),
        endpoints=endpoint_usage(ordered),
    )
