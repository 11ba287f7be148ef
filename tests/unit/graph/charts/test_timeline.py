"""Timeline and plan pictures from synthetic runs (no model servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from graph.charts._timeline import (
    NOT_RUN_LANE,
    WAIT_LABEL,
    compare_timelines,
    plan_depths,
    plot_plan,
    plot_timeline,
    timeline_lanes,
)
from graph.metrics import compute_metrics
from graph.schemas import Plan, RunResult, Task, TaskResult, TaskStatus

T0 = 1_700_000_000.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(
    task_id: str,
    agent: str,
    endpoint: str | None,
    slot: int | None,
    ready: float | None,
    start: float | None,
    end: float,
    status: TaskStatus = "completed",
) -> TaskResult:
    return TaskResult(
        task_id=task_id,
        status=status,
        agent=agent,
        endpoint=endpoint,
        slot=slot,
        ready_at=None if ready is None else T0 + ready,
        started_at=None if start is None else T0 + start,
        finished_at=T0 + end,
        latency_s=0.0 if start is None else end - start,
        queued_s=0.0 if start is None or ready is None else start - ready,
        error=None if status == "completed" else "boom",
    )


def make_run(*, with_failures: bool = True) -> RunResult:
    """A fan-out/join run on two endpoints, one queue wait, one failure, one skip."""
    tasks = [
        Task(id="task_1", agent="researcher", description="gather"),
        Task(id="task_2", agent="reasoner", description="a", dependencies=["task_1"]),
        Task(id="task_3", agent="reasoner", description="b", dependencies=["task_1"]),
        Task(id="task_4", agent="reasoner", description="c", dependencies=["task_1"]),
        Task(id="task_5", agent="coder", description="code"),
        Task(
            id="task_6", agent="fabricator", description="join", dependencies=["task_2", "task_3"]
        ),
    ]
    task_4_status: TaskStatus = "failed" if with_failures else "completed"
    results = [
        _result("task_1", "researcher", "tools", 0, 0.0, 0.0, 2.0),
        _result("task_2", "reasoner", "reasoning", 0, 2.0, 2.0, 5.0),
        _result("task_3", "reasoner", "reasoning", 1, 2.0, 2.1, 5.5),
        # waits for a slot on 'reasoning' until task_2 is done
        _result("task_4", "reasoner", "reasoning", 0, 2.0, 5.0, 7.0, status=task_4_status),
        _result("task_5", "coder", "tools", 1, 0.0, 0.0, 3.0),
    ]
    if with_failures:
        results.append(_result("task_6", "fabricator", None, None, 5.5, None, 5.6, "skipped"))
    else:
        results.append(_result("task_6", "fabricator", "tools", 0, 5.5, 5.5, 8.0))
    plan = Plan(tasks=tasks, source="given")
    by_id = {r.task_id: r for r in results}
    return RunResult(
        goal="Compare three hook materials",
        answer="ok",
        plan=plan,
        tasks=results,
        metrics=compute_metrics(plan, by_id, {}, {}, 9.0),
        run_id="r1",
    )


def _bars(fig: Figure, prefix: str) -> list[str]:
    gids = (p.get_gid() or "" for ax in fig.axes for p in ax.patches)
    return sorted(gid[len(prefix) :] for gid in gids if gid.startswith(prefix))


def test_plot_timeline_writes_png_with_one_lane_per_slot_and_one_bar_per_task(
    tmp_path: Path,
) -> None:
    run = make_run()
    path = tmp_path / "out" / "timeline.png"
    fig = plot_timeline(run, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    pairs = {(r.endpoint, r.slot) for r in run.tasks if r.started_at is not None}
    assert len(labels) == len(pairs) + 1  # + the lane of tasks that never ran
    assert labels[:2] == ["tools #0", "tools #1"]  # endpoints in order of first use
    assert set(labels[2:4]) == {"reasoning #0", "reasoning #1"}
    assert labels[-1] == NOT_RUN_LANE
    # one bar per task that ran; the skipped one is a marker, not a bar
    assert _bars(fig, "task:") == ["task_1", "task_2", "task_3", "task_4", "task_5"]
    assert _bars(fig, "wait:") == ["task_3", "task_4"]
    failed = next(p for p in ax.patches if p.get_gid() == "task:task_4")
    assert failed.get_edgecolor()[:3] == pytest.approx((0.839, 0.153, 0.157), abs=0.01)
    legend_box = ax.get_legend()
    assert legend_box is not None
    legend = [t.get_text() for t in legend_box.get_texts()]
    assert {"researcher", "reasoner", "coder", WAIT_LABEL} <= set(legend)


def test_lanes_without_failures_have_no_not_run_lane() -> None:
    run = make_run(with_failures=False)
    lanes = timeline_lanes(run)
    assert [lane.label for lane in lanes][-1] != NOT_RUN_LANE
    assert len(lanes) == 4


def test_dependency_arrows_can_be_turned_off() -> None:
    run = make_run()
    with_deps = plot_timeline(run).axes[0]
    without = plot_timeline(run, show_deps=False).axes[0]
    arrows = [t for t in with_deps.texts if getattr(t, "arrow_patch", None) is not None]
    assert arrows
    assert not [t for t in without.texts if getattr(t, "arrow_patch", None) is not None]


def test_compare_timelines_shares_the_x_scale(tmp_path: Path) -> None:
    fast, slow = make_run(with_failures=False), make_run()
    path = tmp_path / "compare.png"
    fig = compare_timelines({"parallel": fast, "sequential": slow}, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert len(fig.axes) == 2
    assert fig.axes[0].get_xlim() == fig.axes[1].get_xlim()
    assert _bars(fig, "task:").count("task_1") == 2


def test_compare_timelines_needs_a_run() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        compare_timelines({})


def test_plot_plan_lays_tasks_out_by_depth(tmp_path: Path) -> None:
    plan = make_run().plan
    assert plan_depths(plan) == {
        "task_1": 0,
        "task_2": 1,
        "task_3": 1,
        "task_4": 1,
        "task_5": 0,
        "task_6": 2,
    }
    path = tmp_path / "plan.png"
    fig = plot_plan(plan, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert _bars(fig, "node:") == [t.id for t in plan.tasks]


def test_tool_time_is_drawn_inside_its_task_bar(tmp_path: Path) -> None:
    from graph.charts._timeline import TOOL_LABEL
    from graph.schemas import ToolCallRecord

    run = make_run(with_failures=False)
    task_1 = run.tasks[0]
    task_1.tool_calls = [
        ToolCallRecord(name="web_search", ok=True, started_at=T0 + 0.5, latency_s=1.0),
        ToolCallRecord(name="fetch_webpage", refused=True, started_at=T0 + 1.6),  # no time
    ]
    fig = plot_timeline(run, tmp_path / "tools.png")
    assert _bars(fig, "tool:") == ["task_1:0"]
    tool = next(p for ax in fig.axes for p in ax.patches if p.get_gid() == "tool:task_1:0")
    assert isinstance(tool, Rectangle)  # barh draws rectangles
    assert tool.get_x() == pytest.approx(0.5) and tool.get_width() == pytest.approx(1.0)
    legend_box = fig.axes[0].get_legend()
    assert legend_box is not None
    legend = [t.get_text() for t in legend_box.get_texts()]
    assert TOOL_LABEL in legend
