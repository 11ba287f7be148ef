"""Run-time settings of the graph (LangGraph ``context_schema``; editable in Studio)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from endpoints.config import DEFAULT_FLEET, FLEET_ENV_VAR


def _default_fleet() -> str:
    return os.environ.get(FLEET_ENV_VAR) or DEFAULT_FLEET


@dataclass(kw_only=True)
class Context:
    """Settings for one run.

    Attributes:
        fleet: Fleet profile name or path to a fleet .toml (default ``$KITTY_FLEET`` or
            ``embedded``). The embedded fleet is started in-process when nothing serves it.
        max_tasks: Most tasks the planner may create.
        voice: Write a 2-3 sentence voice summary after the answer.
        thinking: Reasoning effort of the synthesizer (``low``/``medium``/``high``);
            ``None`` uses the endpoint's setting.
        skip_failed_dependents: Skip tasks whose dependency failed instead of running
            them with a note that their input failed.
        task_timeout_s: Seconds one model call may take before it counts as an endpoint
            failure (``None``: the endpoint's ``timeout_s``).
        slot_timeout_s: Seconds a task may wait for a free slot before it fails.
        run_deadline_s: Seconds the whole task phase may take; unfinished tasks then fail
            with a deadline error and the synthesizer works with what finished.
        planner_max_tokens: Completion cap of the planner call.
        synthesis_max_tokens: Completion cap of the synthesizer.
        summary_max_tokens: Completion cap of the voice summary.
        busy_retries: Retries on a "server busy" answer (Ollama 503) before falling back.
        approve_plan: Stop after planning until the plan is approved, edited or rejected
            (``interrupt()``; needs a checkpointer, see :mod:`graph.approval`).
    """

    fleet: str = field(default_factory=_default_fleet)
    max_tasks: int = 6
    voice: bool = True
    thinking: Literal["low", "medium", "high"] | None = None
    skip_failed_dependents: bool = False
    task_timeout_s: float | None = None
    slot_timeout_s: float = 600.0
    run_deadline_s: float | None = None
    planner_max_tokens: int = 1024
    synthesis_max_tokens: int = 768
    summary_max_tokens: int = 160
    busy_retries: int = 3
    approve_plan: bool = False
