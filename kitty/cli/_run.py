"""``kitty-orch run "GOAL"``: run a goal on the fleet with a live view of the schedule.

The live view follows the run's progress events (:func:`graph.astream_goal`): the
plan, each task's state (waiting on its dependencies, queued for a slot, running on an
endpoint slot, done, failed, fell back), time and tokens per task, and one bar per
endpoint showing its slots in use. At the end it prints the answer, the voice summary
and the run's metrics. ``--json`` prints only the :class:`~graph.schemas.RunResult`.

Ctrl-C cancels the run: in-flight model requests are cancelled (their slots are freed
by the limiter), what finished so far is printed, and the exit code is 130. Problems a
user can fix (fleet file, plan file, settings) print one red line and exit with code 2.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Annotated

import typer

from endpoints import DEFAULT_FLEET, FLEET_ENV_VAR, load_fleet
from endpoints.calls import process_tracing
from graph import MAX_TASKS, MEMORY, Context
from kitty.cli._app import CHECKPOINT_HELP, FLEET_HELP, app
from kitty.cli._driver import RunOutput, drive
from kitty.cli._errors import shows_errors
from kitty.cli._inputs import check_thinking, load_image_files, load_plan_file, parse_settings
from kitty.cli._report import resume_hint
from kitty.cli._view import RunView
from kitty.errors import PlanError
from kitty.telemetry import tracing_session


@app.command("run")
@shows_errors
def run_command(
    goal: Annotated[
        str | None,
        typer.Argument(
            help="What to do, in plain words (optional with --plan when the file has a goal)."
        ),
    ] = None,
    fleet: Annotated[str | None, typer.Option("--fleet", "-f", help=FLEET_HELP)] = None,
    max_tasks: Annotated[
        int, typer.Option("--max-tasks", help=f"Most tasks the planner may create (1-{MAX_TASKS}).")
    ] = 6,
    voice: Annotated[
        bool, typer.Option("--voice/--no-voice", help="Write a 2-3 sentence voice summary.")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the RunResult as JSON (no live view).")
    ] = False,
    timeline: Annotated[
        Path | None,
        typer.Option(
            "--timeline", metavar="PATH.png", help="Save a Gantt timeline of the run to this PNG."
        ),
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            metavar="PLAN.json",
            help='Run this plan (JSON {"tasks": [{"id", "agent", "description", '
            '"dependencies", "max_tokens", "extra"}]}) instead of asking the planner.',
        ),
    ] = None,
    thinking: Annotated[
        str | None,
        typer.Option(
            "--thinking",
            metavar="LEVEL",
            help="Reasoning effort of the synthesizer: low, medium, high.",
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="Further run setting NAME=VALUE (repeatable): task_timeout_s, "
            "synthesis_max_tokens, summary_max_tokens, run_deadline_s, ...",
        ),
    ] = None,
    thread_id: Annotated[
        str | None,
        typer.Option(
            "--thread-id",
            help="Checkpoint thread (default: a new one, printed). A thread with unfinished "
            "work is continued instead of starting GOAL.",
        ),
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", metavar="PATH|URL", help=CHECKPOINT_HELP)
    ] = None,
    approve_plan: Annotated[
        bool,
        typer.Option(
            "--approve-plan", help="Show the plan and ask to run, edit or reject it first."
        ),
    ] = False,
    images: Annotated[
        list[str] | None,
        typer.Option(
            "--image",
            metavar="PATH|URL",
            help="An image for the goal (repeatable): a photo, screenshot or drawing file, "
            "or an http(s) URL. Checked by content, cleaned of EXIF/GPS, downscaled; only "
            "tasks that look at images get it, and only on an endpoint that can see.",
        ),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            "--otlp-endpoint",
            metavar="URL",
            help="Send OpenTelemetry traces of the run (GenAI spans: run, tasks, model and "
            "tool calls) to this collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318 "
            "(spans go to its /v1/traces). Default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or "
            "$OTEL_EXPORTER_OTLP_ENDPOINT; neither set: no tracing.",
        ),
    ] = None,
) -> None:
    """Run a goal on the fleet: plan, run the tasks in parallel, synthesize an answer."""
    fleet_name = fleet or os.environ.get(FLEET_ENV_VAR) or DEFAULT_FLEET
    plan, file_goal = load_plan_file(plan_file) if plan_file is not None else (None, None)
    goal = goal if goal is not None else file_goal
    if goal is None:
        raise PlanError('give a goal: kitty-orch run "GOAL" (or a --plan file with a goal)')
    context = _context(
        fleet=fleet_name,
        max_tasks=max_tasks,
        voice=voice,
        thinking=check_thinking(thinking),
        approve_plan=approve_plan,
        settings=settings or [],
    )
    config = load_fleet(fleet_name)
    # Checked before the fleet starts: a bad file is one red line, not a failed run.
    records = load_image_files(images or [], context, config)
    view = RunView(goal=goal)
    if plan is not None:
        view.set_plan(plan)
    thread_id = thread_id or uuid.uuid4().hex
    # Spans are exported while the run goes on, and flushed before the command exits.
    with tracing_session(process_tracing(), os.environ, otlp_endpoint):
        drive(
            goal,
            view,
            fleet=config,
            checkpoint=checkpoint,
            output=RunOutput(
                as_json=as_json,
                timeline=timeline,
                notice=f"thread {thread_id}",
                resume_hint=resume_hint(thread_id, checkpoint) if checkpoint != MEMORY else None,
            ),
            stream_options={
                "plan": plan,
                "context": context,
                "thread_id": thread_id,
                "images": records,
            },
        )


def _context(
    *,
    fleet: str,
    max_tasks: int,
    voice: bool,
    thinking: str | None,
    approve_plan: bool,
    settings: list[str],
) -> Context:
    """The run's settings from the options.

    Raises:
        SettingsError: A ``--set`` item or ``--max-tasks`` is not usable.
    """
    from graph import make_context

    return make_context(
        fleet=fleet,
        max_tasks=max_tasks,
        voice=voice,
        thinking=thinking,
        approve_plan=approve_plan,
        **parse_settings(settings),
    )
