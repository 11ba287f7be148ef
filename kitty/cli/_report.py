"""What a run prints when it ends: the answer and metrics, or what finished before Ctrl-C.

``kitty-orch run`` and ``kitty-orch resume`` both end here. ``--json`` prints only the
:class:`~graph.schemas.RunResult` (a partial one after Ctrl-C) on stdout.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from graph import CHECKPOINTS_ENV_VAR, RunResult, describe_location
from kitty.cli._console import console, err_console
from kitty.cli._render import RunScreen


def metrics_table(result: RunResult) -> Table:
    """The run's figures as a two-column table."""
    m = result.metrics
    table = Table(title="metrics", title_justify="left", show_header=False, box=None)
    table.add_column("metric", style="bold")
    table.add_column("value")
    ratio = (
        f" ({m.execution_s / m.critical_path_s:.2f}x the critical path)"
        if m.critical_path_s
        else ""
    )
    rows = [
        ("wall time", f"{m.wall_s:.1f} s"),
        ("planner", f"{m.planner_s:.1f} s ({result.plan.source} plan)"),
        ("tasks makespan", f"{m.execution_s:.1f} s{ratio}"),
        ("critical path", f"{m.critical_path_s:.1f} s (longest dependency chain of task times)"),
        ("synthesis / summary", f"{m.synthesis_s:.1f} s / {m.summary_s:.1f} s"),
        ("peak concurrency", f"{m.peak_concurrency} tasks at once"),
        ("tokens in / out", f"{m.prompt_tokens} / {m.completion_tokens}"),
        (
            "cached prompt tokens",
            f"{m.cached_prompt_tokens} ({m.cached_prompt_share:.0%} of tokens in, from the "
            "servers' prompt caches)",
        ),
        (
            "tasks",
            f"{m.tasks_completed} completed, {m.tasks_failed} failed, {m.tasks_skipped} skipped"
            f" of {m.tasks_total}",
        ),
        ("fallbacks", str(m.fallbacks)),
        ("warnings", str(len(result.warnings))),
    ]
    if m.tool_calls:
        rows.insert(
            -2,
            (
                "tool calls",
                f"{m.tool_calls} ({m.tool_calls_refused} refused, {m.tool_calls_failed} failed), "
                f"{m.tool_s:.1f} s off the model slots",
            ),
        )
    for name, value in rows:
        table.add_row(name, value)
    return table


def print_result(out: Console, result: RunResult) -> None:
    """Answer (Markdown), voice summary, metrics and warnings."""
    out.print(Panel(Markdown(result.answer or "_(no answer)_"), title="answer", title_align="left"))
    if result.voice_summary:
        out.print(Panel(Text(result.voice_summary), title="voice summary", title_align="left"))
    out.print(metrics_table(result))
    for warning in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}")


def resume_hint(thread_id: str, checkpoint: str | None) -> str:
    """The command that continues a thread."""
    where = ""
    if checkpoint and checkpoint != os.environ.get(CHECKPOINTS_ENV_VAR):
        where = f" --checkpoint {describe_location(checkpoint)}"
    return f"kitty-orch resume {thread_id}{where}"


def save_timeline(result: RunResult, path: Path) -> bool:
    """Write the run's Gantt timeline PNG; a path that cannot be written is reported.

    Returns:
        Whether the file was written.
    """
    from graph.charts import plot_timeline

    try:
        plot_timeline(result, path)
    except OSError as exc:
        err_console.print(
            f"[bold red]error:[/] cannot write timeline {escape(str(path))}: "
            f"{escape(exc.strerror or str(exc))}; choose a writable path"
        )
        return False
    return True


def report_result(
    screen: RunScreen, result: RunResult, *, as_json: bool, timeline: Path | None
) -> None:
    """Print a finished run: its JSON, or (the final view and) answer, summary and metrics."""
    saved = timeline is not None and save_timeline(result, timeline)
    if as_json:
        typer.echo(result.model_dump_json())
        return
    if not console.is_terminal:
        console.print(screen)
    print_result(console, result)
    if saved:
        console.print(f"[green]timeline saved:[/] {escape(str(timeline))}")


def report_cancelled(
    screen: RunScreen, *, as_json: bool, timeline: Path | None, hint: str | None
) -> None:
    """Print a run cancelled by Ctrl-C: what finished, its metrics, how to continue."""
    view = screen.view
    view.mark_cancelled()
    partial = view.partial_result()
    if partial is not None and timeline is not None:
        save_timeline(partial, timeline)
    if as_json:
        if partial is not None:
            typer.echo(partial.model_dump_json())
        err_console.print("[red]cancelled (Ctrl-C)[/]")
    else:
        if not console.is_terminal:
            console.print(screen)
        done = [task for task in view.tasks.values() if task.state == "completed"]
        console.print(
            f"[bold red]cancelled[/] after {view.elapsed_s():.1f} s: "
            f"{len(done)} of {len(view.tasks)} tasks completed; in-flight requests were cancelled"
        )
        if partial is not None:
            console.print(metrics_table(partial))
    if hint is not None:
        err_console.print(f"continue it with: {escape(hint)}")
