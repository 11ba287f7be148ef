"""A plan as a picture: a layered DAG, columns by dependency depth, boxes by agent."""

from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from graph.charts._style import agent_colours, save_figure
from graph.schemas import Plan


def plan_depths(plan: Plan) -> dict[str, int]:
    """Dependency depth of each task: 0 for roots, else 1 + the deepest dependency."""
    depth: dict[str, int] = {}
    for task in plan.tasks:  # plans are kept in topological order
        depth[task.id] = 1 + max((depth.get(d, 0) for d in task.dependencies), default=-1)
    return depth


def plot_plan(
    plan: Plan,
    path: str | os.PathLike[str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Draw a plan as a DAG: columns by dependency depth, boxes coloured by agent.

    Args:
        plan: The plan.
        path: Write the picture here.
        title: Figure title.

    Returns:
        The figure.
    """
    depth = plan_depths(plan)
    layers: dict[int, list[str]] = {}
    for task in plan.tasks:
        layers.setdefault(depth[task.id], []).append(task.id)
    width = max(layers) + 1
    height = max(len(ids) for ids in layers.values())
    fig = Figure(figsize=(2.6 + 2.6 * width, 0.9 + 1.0 * height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_axis_off()
    colours = agent_colours(t.agent for t in plan.tasks)
    pos: dict[str, tuple[float, float]] = {}
    for level, ids in layers.items():
        for i, task_id in enumerate(ids):
            pos[task_id] = (level * 2.6, (len(ids) - 1) / 2 - i)
    box_w, box_h = 1.9, 0.62
    for task in plan.tasks:
        x, y = pos[task.id]
        for dep in task.dependencies:
            dx, dy = pos[dep]
            ax.annotate(
                "",
                xy=(x - box_w / 2, y),
                xytext=(dx + box_w / 2, dy),
                arrowprops={"arrowstyle": "-|>", "color": "#666666", "shrinkA": 0, "shrinkB": 0},
            )
        ax.add_patch(
            FancyBboxPatch(
                (x - box_w / 2, y - box_h / 2),
                box_w,
                box_h,
                boxstyle="round,pad=0.02,rounding_size=0.12",
                facecolor=colours.get(task.agent, "#7f7f7f"),
                edgecolor="white",
                gid=f"node:{task.id}",
            )
        )
        ax.text(x, y + 0.1, task.id, ha="center", va="center", color="white", fontweight="bold")
        ax.text(x, y - 0.14, task.agent, ha="center", va="center", color="white", fontsize=8)
    ax.set_xlim(-box_w / 2 - 0.2, (width - 1) * 2.6 + box_w / 2 + 0.2)
    ax.set_ylim(-height / 2 - 0.1, height / 2 + 0.1)
    ax.set_aspect("equal")
    fig.suptitle(title or f"plan: {len(plan.tasks)} tasks, {width} levels", fontsize=11)
    save_figure(fig, path)
    return fig


__all__ = ["plan_depths", "plot_plan"]
