"""Interactive plan approval for ``kitty-orch run --approve-plan`` and ``kitty-orch resume``.

The run stops after planning; this shows the plan and asks: ``y`` runs it, ``n`` rejects
it (the run ends, the answer says so), ``e`` edits it: give the path of a JSON plan file,
or press Enter to edit the plan as JSON in ``$VISUAL`` / ``$EDITOR``. An edited plan is
checked strictly before the run goes on; a bad one is explained and asked for again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.prompt import Prompt
from rich.table import Table

from graph import Plan, PlanApproval, PlanError, parse_decision

CHOICES = ("y", "n", "e")


def plan_table(plan: Plan) -> Table:
    """The plan as a table: id, agent, dependencies, description."""
    table = Table(title="plan", title_justify="left", header_style="bold", expand=True)
    table.add_column("task", no_wrap=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("needs")
    table.add_column("description", ratio=1)
    for task in plan.tasks:
        table.add_row(
            task.id, task.agent, ", ".join(task.dependencies) or "-", escape(task.description)
        )
    return table


def _editable(plan: Plan) -> str:
    tasks = [task.model_dump(exclude_defaults=True) for task in plan.tasks]
    for task in tasks:
        task.setdefault("dependencies", [])
    return json.dumps({"tasks": tasks}, indent=2) + "\n"


def _read_edit(answer: str, plan: Plan) -> Any:
    """The edited plan as data: from a JSON file path, or from ``$EDITOR``."""
    if answer:
        path = Path(answer).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PlanError(f"cannot read {path}: {exc.strerror or exc}") from None
    else:
        edited = click.edit(_editable(plan), extension=".json")
        if edited is None:
            raise PlanError("the editor closed without saving; the plan was not changed")
        text = edited
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(
            f"the edited plan is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def ask_plan_decision(approval: PlanApproval, console: Console) -> dict[str, Any]:
    """Show the plan and ask until the answer is a valid decision.

    Returns:
        ``{"action": "approve"}``, ``{"action": "reject", "reason": ...}`` or
        ``{"action": "edit", "plan": {...}}`` (already checked).
    """
    console.print(plan_table(approval.plan))
    if approval.error:
        console.print(f"[bold red]previous answer not accepted:[/] {escape(approval.error)}")
    while True:
        choice = Prompt.ask(
            "Run this plan? [bold]y[/]es / [bold]n[/]o (reject) / [bold]e[/]dit",
            choices=list(CHOICES),
            default="y",
            console=console,
        )
        if choice == "y":
            return {"action": "approve"}
        if choice == "n":
            reason = Prompt.ask("Reason (optional)", default="", console=console)
            return {"action": "reject", "reason": reason.strip() or None}
        source = Prompt.ask(
            "Path of a JSON plan file (Enter: edit this plan in $EDITOR)",
            default="",
            show_default=False,
            console=console,
        ).strip()
        try:
            data = _read_edit(source, approval.plan)
            decision = {"action": "edit", "plan": data}
            _, edited = parse_decision(decision)
        except PlanError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}")
            continue
        assert edited is not None
        console.print(plan_table(edited))
        return decision


def plan_prompt(
    console: Console,
    *,
    pause: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    on_edit: Callable[[Plan], None] | None = None,
) -> Callable[[PlanApproval], dict[str, Any]]:
    """An ``on_plan`` callback for :func:`graph.astream_goal` that asks on the terminal.

    Args:
        console: Where to show the plan and ask.
        pause: Context manager that hides a live display while asking.
        on_edit: Called with the edited plan (e.g. to redraw a live view).
    """

    def ask(approval: PlanApproval) -> dict[str, Any]:
        with (pause or contextlib.nullcontext)():
            decision = ask_plan_decision(approval, console)
        if on_edit is not None and decision["action"] == "edit":
            _, edited = parse_decision(decision)
            assert edited is not None
            on_edit(edited)
        return decision

    return ask


@contextlib.contextmanager
def paused(live: Any | None) -> Iterator[None]:
    """Stop a Rich ``Live`` display while the user answers, then restart it."""
    if live is None:
        yield
        return
    live.stop()
    try:
        yield
    finally:
        live.start()
