"""Pictures of a run: a Gantt timeline per endpoint slot.

The plan DAG is drawn by :mod:`graph.charts._plan_chart`.

Everything renders on matplotlib's Agg canvas (a :class:`~matplotlib.figure.Figure`
created directly, never through ``pyplot``), so it works on servers, in CI and in
notebooks without touching the global backend.

Example:
    >>> from graph import run_goal
    >>> from graph.charts._timeline import plot_timeline
    >>> result = run_goal("Design a wall hook for a 2 kg bag")
    >>> plot_timeline(result, "timeline.png")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from graph.charts._plan_chart import plan_depths, plot_plan
from graph.charts._style import Rgba, agent_colours, save_figure
from graph.schemas import RunResult, TaskResult

NOT_RUN_LANE = "not run"
FAILED_COLOUR = "#d62728"
WAIT_COLOUR = "#c8c8c8"
BAR_HEIGHT = 0.56
WAIT_HEIGHT = 0.14
WAIT_LABEL = "slot wait (ends where its\ntask's bar starts)"
TOOL_COLOUR = "#fff2b3"
TOOL_HEIGHT = 0.55
TOOL_LABEL = "tool running\n(model slot free)"
WAIT_MIN_S = 0.005  # shorter slot waits are not drawn


@dataclass(frozen=True)
class Lane:
    """One row of the timeline: an endpoint slot (or the lane of tasks that never ran)."""

    endpoint: str | None
    slot: int | None

    @property
    def label(self) -> str:
        """The row's y-axis label."""
        if self.endpoint is None:
            return NOT_RUN_LANE
        return f"{self.endpoint} #{self.slot if self.slot is not None else '?'}"


def timeline_lanes(result: RunResult) -> list[Lane]:
    """The lanes of a run, top to bottom: endpoints in order of first use, slots ascending.

    Tasks that never held a slot (skipped, or failed before a slot was free) share a
    final ``not run`` lane.
    """
    ran = [r for r in result.tasks if r.endpoint is not None and r.started_at is not None]
    first_use: dict[str, float] = {}
    for task in ran:
        assert task.endpoint is not None and task.started_at is not None
        first_use[task.endpoint] = min(
            first_use.get(task.endpoint, task.started_at), task.started_at
        )
    lanes = sorted(
        {Lane(r.endpoint, r.slot) for r in ran},
        key=lambda lane: (first_use[lane.endpoint or ""], lane.endpoint or "", lane.slot or 0),
    )
    if any(_lane_of(r) is None for r in result.tasks):
        lanes.append(Lane(None, None))
    return lanes


def _lane_of(task: TaskResult) -> Lane | None:
    if task.endpoint is None or task.started_at is None:
        return None
    return Lane(task.endpoint, task.slot)


def _origin(result: RunResult) -> float | None:
    times = [
        t for r in result.tasks for t in (r.ready_at, r.started_at, r.finished_at) if t is not None
    ]
    return min(times) if times else None


def _end(result: RunResult, origin: float) -> float:
    times = [t for r in result.tasks for t in (r.finished_at, r.started_at) if t is not None]
    return max(times, default=origin) - origin


def _label_fits(ax: Axes, width_s: float, text: str, fontsize: float) -> bool:
    """Whether ``text`` fits inside a bar ``width_s`` seconds wide (estimated, in pixels)."""
    fig = ax.get_figure(root=True)
    assert fig is not None
    x0, x1 = ax.get_xlim()
    axes_px = ax.get_position().width * fig.get_figwidth() * fig.dpi
    bar_px = width_s / max(x1 - x0, 1e-9) * axes_px
    text_px = len(text) * fontsize * 0.62 * fig.dpi / 72
    return bar_px > text_px + 6


def _draw_run(
    ax: Axes,
    result: RunResult,
    colours: Mapping[str, Rgba],
    *,
    origin: float,
    x_max: float,
    show_deps: bool,
) -> None:
    """Draw one run's lanes, bars, waits, labels and arrows on ``ax``."""
    lanes = timeline_lanes(result)
    row = {lane: i for i, lane in enumerate(lanes)}
    ax.set_xlim(0, x_max * 1.02 if x_max > 0 else 1.0)
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    ax.set_yticks(range(len(lanes)), [lane.label for lane in lanes])
    ax.tick_params(axis="y", length=0)
    ax.grid(axis="x", color="#e6e6e6", linewidth=0.8)
    ax.set_axisbelow(True)
    for i in range(1, len(lanes)):
        ax.axhline(i - 0.5, color="#eeeeee", linewidth=0.8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    places: dict[str, tuple[float, float, float]] = {}  # task id -> (start, end, y)
    for task in result.tasks:
        lane = _lane_of(task)
        y = row[lane if lane is not None else Lane(None, None)]
        failed = task.status != "completed"
        if lane is None:
            at = (task.finished_at or task.ready_at or origin) - origin
            ax.plot(
                at, y, marker="X", markersize=10, color=FAILED_COLOUR, gid=f"notrun:{task.task_id}"
            )
            ax.annotate(
                f"{task.task_id} ({task.status})",
                (at, y),
                xytext=(8, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color=FAILED_COLOUR,
            )
            places[task.task_id] = (at, at, y)
            continue
        assert task.started_at is not None
        start = task.started_at - origin
        end = (task.finished_at or task.started_at) - origin
        if _waited(task):
            assert task.ready_at is not None
            ready = task.ready_at - origin
            # A thin strip under the lane's bars: the slot is still held by the task
            # before this one, so the wait must not cover that task's bar.
            ax.barh(
                y + BAR_HEIGHT / 2 + WAIT_HEIGHT / 2 + 0.02,
                start - ready,
                left=ready,
                height=WAIT_HEIGHT,
                color=WAIT_COLOUR,
                edgecolor="#8c8c8c",
                hatch="////",
                linewidth=0.6,
                gid=f"wait:{task.task_id}",
            )
        ax.barh(
            y,
            max(end - start, 1e-3),
            left=start,
            height=BAR_HEIGHT,
            color=colours.get(task.agent, "#7f7f7f"),
            edgecolor=FAILED_COLOUR if failed else "white",
            linewidth=2.2 if failed else 0.8,
            gid=f"task:{task.task_id}",
        )
        for number, call in enumerate(c for c in task.tool_calls if c.latency_s > 0):
            # Tool time inside the task's span: its model slot is free meanwhile.
            ax.barh(
                y,
                call.latency_s,
                left=call.started_at - origin,
                height=BAR_HEIGHT * TOOL_HEIGHT,
                color=TOOL_COLOUR,
                edgecolor="#555555",
                hatch="..",
                linewidth=0.6,
                gid=f"tool:{task.task_id}:{number}",
            )
        label = task.task_id + (" ✗" if failed else "")
        if _label_fits(ax, end - start, label, 8.5):
            ax.text(
                (start + end) / 2,
                y,
                label,
                ha="center",
                va="center",
                fontsize=8.5,
                color="white",
                fontweight="bold",
            )
        else:
            ax.text(
                start,
                y - BAR_HEIGHT / 2 - 0.03,
                label,
                ha="left",
                va="bottom",
                fontsize=7.5,
                color="#333333",
            )
        places[task.task_id] = (start, end, y)

    if not show_deps:
        return
    result_of = {r.task_id: r for r in result.tasks}
    for planned in result.plan.tasks:
        if planned.id not in places:
            continue
        target_x, _, bar_y = places[planned.id]
        target_y = bar_y
        this = result_of.get(planned.id)
        if this is not None and this.ready_at is not None and this.started_at is not None:
            target_x = this.ready_at - origin
            if _waited(this):  # land on the task's own wait strip, not on the slot's holder
                target_y = bar_y + BAR_HEIGHT / 2 + WAIT_HEIGHT / 2 + 0.02
        for dep in planned.dependencies:
            if dep not in places:
                continue
            _, dep_end, dep_y = places[dep]
            if dep_y == target_y and target_x - dep_end < 0.02 * x_max:
                continue  # back to back in one lane: the adjacency already shows it
            ax.annotate(
                "",
                xy=(target_x, target_y),
                xytext=(dep_end, dep_y),
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "#555555",
                    "alpha": 0.55,
                    "linewidth": 1.0,
                    "shrinkA": 0,
                    "shrinkB": 2,
                    "connectionstyle": "arc3,rad=0.15" if dep_y != target_y else "arc3,rad=-0.25",
                },
            )


def _waited(task: TaskResult) -> bool:
    return (
        task.ready_at is not None
        and task.started_at is not None
        and task.started_at - task.ready_at > WAIT_MIN_S
    )


def _legend_handles(
    runs: Iterable[RunResult], colours: Mapping[str, Rgba], *, show_deps: bool
) -> list[Patch | Line2D]:
    """Legend entries for what the pictures show: agents, waits, failures, arrows."""
    tasks = [t for run in runs for t in run.tasks]
    handles: list[Patch | Line2D] = [
        Patch(facecolor=colours.get(a, "#7f7f7f"), label=a)
        for a in dict.fromkeys(t.agent for t in tasks)
    ]
    if any(_waited(t) for t in tasks):
        handles.append(
            Patch(facecolor=WAIT_COLOUR, edgecolor="#8c8c8c", hatch="////", label=WAIT_LABEL)
        )
    if any(c.latency_s > 0 for t in tasks for c in t.tool_calls):
        handles.append(
            Patch(facecolor=TOOL_COLOUR, edgecolor="#555555", hatch="..", label=TOOL_LABEL)
        )
    if any(t.status != "completed" for t in tasks):
        handles.append(
            Patch(facecolor="white", edgecolor=FAILED_COLOUR, linewidth=2, label="failed / not run")
        )
    if show_deps:
        handles.append(Line2D([], [], color="#555555", alpha=0.7, marker=">", label="dependency"))
    return handles


def _summary(result: RunResult) -> str:
    m = result.metrics
    parts = [
        f"tasks {m.execution_s:.1f} s (critical path {m.critical_path_s:.1f} s)",
        f"peak {m.peak_concurrency} at once",
        f"{m.tasks_completed}/{m.tasks_total} completed",
    ]
    if m.tasks_failed or m.tasks_skipped:
        parts.append(f"{m.tasks_failed} failed, {m.tasks_skipped} skipped")
    return " · ".join(parts)


def _shorten(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plot_timeline(
    result: RunResult,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    show_deps: bool = True,
) -> Figure:
    """Draw a run as a Gantt chart: one lane per endpoint slot, one bar per task.

    Bars span ``started_at`` → ``finished_at`` and are coloured by agent; the hatched
    grey strip before a bar is the time the task waited for a slot after its
    dependencies were met (``ready_at`` → ``started_at``). Failed tasks have a red
    outline; tasks that never ran are red crosses in a ``not run`` lane. The x axis is
    seconds from the first task becoming ready.

    Args:
        result: A finished run.
        path: Write a PNG (or any format matplotlib knows from the suffix) here.
        title: Figure title (default: the goal).
        show_deps: Draw an arrow from each dependency's end to the task's ready time.

    Returns:
        The figure (Agg canvas; display it in Jupyter with ``IPython.display``).
    """
    lanes = timeline_lanes(result)
    fig = Figure(figsize=(11, 1.6 + 0.42 * max(len(lanes), 1)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = agent_colours(r.agent for r in result.tasks)
    origin = _origin(result)
    if origin is None:
        ax.text(0.5, 0.5, "no task ran", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        _draw_run(
            ax, result, colours, origin=origin, x_max=_end(result, origin), show_deps=show_deps
        )
        ax.set_xlabel("seconds since the first task was ready")
        ax.set_title(_summary(result), fontsize=9, color="#444444", loc="left")
        ax.legend(
            handles=_legend_handles([result], colours, show_deps=show_deps),
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
        )
    fig.suptitle(title or _shorten(result.goal) or "run timeline", fontsize=11, x=0.01, ha="left")
    save_figure(fig, path)
    return fig


def compare_timelines(
    results: Mapping[str, RunResult],
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
    show_deps: bool = True,
) -> Figure:
    """Stack several runs' timelines on one shared x scale (e.g. sequential vs parallel).

    Args:
        results: Label -> run, drawn top to bottom.
        path: Write the picture here.
        title: Figure title.
        show_deps: Draw dependency arrows.

    Returns:
        The figure.

    Raises:
        ValueError: ``results`` is empty.
    """
    if not results:
        raise ValueError("compare_timelines needs at least one run")
    items = list(results.items())
    heights = [max(len(timeline_lanes(r)), 1) + 1.2 for _, r in items]
    fig = Figure(figsize=(11, 1.0 + 0.42 * sum(heights)), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(items), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0]
    agents = [t.agent for _, r in items for t in r.tasks]
    colours = agent_colours(agents)
    x_max = 0.0
    origins: list[float | None] = []
    for _, result in items:
        origin = _origin(result)
        origins.append(origin)
        if origin is not None:
            x_max = max(x_max, _end(result, origin))
    for ax, (label, result), origin in zip(axes, items, origins, strict=True):
        if origin is None:
            ax.text(0.5, 0.5, f"{label}: no task ran", ha="center", va="center")
            ax.set_yticks([])
            continue
        _draw_run(ax, result, colours, origin=origin, x_max=x_max, show_deps=show_deps)
        ax.set_title(f"{label} — {_summary(result)}", fontsize=9.5, loc="left", color="#222222")
    axes[-1].set_xlabel("seconds since the run's first task was ready (same scale for all)")
    axes[0].legend(
        handles=_legend_handles([r for _, r in items], colours, show_deps=show_deps),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title or "timelines compared", fontsize=11, x=0.01, ha="left")
    save_figure(fig, path)
    return fig


__all__ = [
    "Lane",
    "agent_colours",
    "compare_timelines",
    "plan_depths",
    "plot_plan",
    "plot_timeline",
    "timeline_lanes",
]
