"""What-if: one scenario on the SIMULATED fleet under two layouts, side by side.

Each layout is served by :class:`ops.simfleet.SimFleet` (the calibrated timing model of
``ops/simfleet``: slots, batched decode slowing with concurrent sequences, shared
prefill, llama.cpp-like queueing) on free ports, and the scenario's pinned plan runs
through the product (:func:`graph.astream_goal`) exactly as the simulated benchmark suite
runs it (:mod:`kitty.bench._simulated`). No model runs; every figure is in SIMULATED seconds.

A layout is a :class:`FleetConfig`. Ollama endpoints are simulated as llama.cpp ones
(the simulator speaks llama.cpp's API), like the ``m3-ultra-sim`` profile does. An added
replica gets the simulation parameters of the endpoint it copies (``NAME-2`` -> ``NAME``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from endpoints.config import EndpointConfig, FleetConfig, TierConfig
from graph import RunResult
from kitty.bench._simulated import SCENARIOS, Scenario, sim_task, time_given_plan
from kitty.errors import UserError, format_validation_error

DEFAULT_TIME_SCALE = 0.25
#: Makespan ratios closer to 1 than this are within run-to-run noise.
NOISE = 0.05


class _ScenarioTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    agent: str = Field(min_length=1)
    description: str = Field(min_length=1)
    context_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=120, gt=0)
    dependencies: list[str] = Field(default_factory=list)


class _ScenarioFile(BaseModel):
    """A scenario file: ``goal``, ``tasks`` and the synthesis length."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    goal: str = Field(min_length=1)
    synthesis_tokens: int = Field(default=250, gt=0)
    tasks: list[_ScenarioTask] = Field(min_length=1)


def scenario_names() -> list[str]:
    """Names of the built-in scenarios."""
    return [s.name for s in SCENARIOS]


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or one read from a JSON file.

    The file holds ``{"goal": ..., "synthesis_tokens": 250, "tasks": [{"id", "agent",
    "description", "context_tokens", "completion_tokens", "dependencies"}]}``; each task
    generates exactly ``completion_tokens`` tokens after ``context_tokens`` of context.

    Raises:
        UserError: Unknown name, unreadable file or invalid content (file, key, reason).
    """
    for scenario in SCENARIOS:
        if scenario.name == name_or_path:
            return scenario
    path = Path(name_or_path)
    if path.suffix != ".json" and not path.exists():
        raise UserError(
            f"unknown scenario {name_or_path!r}; use one of {', '.join(scenario_names())} "
            "or a path to a scenario .json file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read scenario file {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"scenario file {path} is not valid JSON: {exc}") from None
    try:
        parsed = _ScenarioFile.model_validate(data)
    except ValidationError as exc:
        problems = format_validation_error(exc.errors())
        raise UserError(f"invalid scenario file {path}: {problems}") from None
    tasks = [
        sim_task(
            t.id, t.agent, t.description, t.context_tokens, t.completion_tokens, t.dependencies
        )
        for t in parsed.tasks
    ]
    return Scenario(parsed.name or path.stem, parsed.goal, tasks, parsed.synthesis_tokens, "")


@dataclass
class EndpointFigures:
    """One endpoint's share of a simulated run (simulated seconds).

    Attributes:
        endpoint: Endpoint name.
        slots: Its slots in this layout.
        tasks: Tasks it served.
        busy_s: Slot-seconds of model calls.
        utilisation: ``busy_s / (slots x task phase)``.
        queue_wait_s: Seconds tasks waited for one of its slots, summed.
        max_queue_wait_s: The longest single wait.
    """

    endpoint: str
    slots: int
    tasks: int = 0
    busy_s: float = 0.0
    utilisation: float = 0.0
    queue_wait_s: float = 0.0
    max_queue_wait_s: float = 0.0


@dataclass
class LayoutRun:
    """A scenario run on one layout (SIMULATED seconds).

    Attributes:
        layout: ``current`` or ``changed``.
        makespan_s: Plan ready -> answer (tasks + synthesis).
        task_phase_s: The tasks' part of it.
        synthesis_s: The synthesis after it (reasoning tier).
        ok: Every task completed.
        endpoints: Per-endpoint figures, fleet order.
        error: Why the run failed, if it did.
    """

    layout: str
    makespan_s: float = 0.0
    task_phase_s: float = 0.0
    synthesis_s: float = 0.0
    ok: bool = False
    endpoints: list[EndpointFigures] = field(default_factory=list)
    error: str | None = None


@dataclass
class WhatIf:
    """The scenario under the current and the changed layout."""

    scenario: str
    time_scale: float
    changes: list[str]
    current: LayoutRun
    changed: LayoutRun

    @property
    def speedup(self) -> float:
        """Current makespan / changed makespan (>1: the change helps)."""
        return self.current.makespan_s / self.changed.makespan_s if self.changed.makespan_s else 0.0

    @property
    def verdict(self) -> str:
        """``helps``, ``hurts`` or ``no real difference`` (within :data:`NOISE`)."""
        if self.speedup > 1 + NOISE:
            return "helps"
        if self.speedup and self.speedup < 1 - NOISE:
            return "hurts"
        return "no real difference"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready comparison."""
        from dataclasses import asdict

        return {
            "simulated": True,
            "scenario": self.scenario,
            "time_scale": self.time_scale,
            "changes": self.changes,
            "current": asdict(self.current),
            "changed": asdict(self.changed),
            "speedup": round(self.speedup, 3),
            "verdict": self.verdict,
        }


def _sim_params_name(name: str, known: Mapping[str, Any]) -> str | None:
    """The calibrated endpoint a (replica) name belongs to: exact, else ``NAME-<n>``."""
    if name in known:
        return name
    base, _, suffix = name.rpartition("-")
    return base if suffix.isdigit() and base in known else None


def _simulable(config: FleetConfig) -> FleetConfig:
    """The layout as the simulator serves it: Ollama endpoints as llama.cpp, no tools.

    The simulator speaks llama.cpp's API. Tool sources are left out: simulated filler must
    not reach the user's memory store, MCP servers or the web.
    """
    tiers = {
        name: TierConfig(
            description=tier.description,
            endpoints=[
                e.model_copy(update={"kind": "llamacpp"}) if e.kind == "ollama" else e
                for e in tier.endpoints
            ],
        )
        for name, tier in config.tiers.items()
    }
    memory = config.memory.model_copy(update={"enabled": False})
    return config.model_copy(update={"tiers": tiers, "memory": memory, "mcp": {}})


def _overrides(endpoints: list[EndpointConfig]) -> dict[str, dict[str, Any]]:
    from ops.simfleet import SIM_ENDPOINT_PARAMS

    overrides: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        params: dict[str, Any] = {"port": 0}
        origin = _sim_params_name(endpoint.name, SIM_ENDPOINT_PARAMS)
        if origin is not None and origin != endpoint.name:
            params.update(SIM_ENDPOINT_PARAMS[origin])
        overrides[endpoint.name] = params
    return overrides


def _figures(
    result: RunResult, served: FleetConfig, time_scale: float, task_phase_s: float
) -> list[EndpointFigures]:
    rows = {e.name: EndpointFigures(e.name, e.slots or 1) for e in served.all_endpoints()}
    for task in result.tasks:
        row = rows.get(task.endpoint or "")
        if row is None:
            continue
        wait = task.queued_s / time_scale
        row.tasks += 1
        row.queue_wait_s += wait
        row.max_queue_wait_s = max(row.max_queue_wait_s, wait)
        row.busy_s += (
            sum(c.latency_s for c in task.calls if c.endpoint == row.endpoint) / time_scale
        )
    for row in rows.values():
        row.utilisation = row.busy_s / (row.slots * task_phase_s) if task_phase_s else 0.0
    return list(rows.values())


async def run_layout(
    layout: FleetConfig, scenario: Scenario, *, label: str, time_scale: float
) -> LayoutRun:
    """Serve ``layout`` SIMULATED and run ``scenario`` through the product once."""
    from ops.simfleet import SimFleet

    config = _simulable(layout)
    sim = SimFleet.from_fleet(
        config, time_scale=time_scale, overrides=_overrides(config.all_endpoints())
    )
    run = LayoutRun(label)
    with sim:
        served = sim.fleet
        assert served is not None  # built from a fleet
        timed = await time_given_plan(scenario, served)
    if timed is None:
        run.error = "the run did not finish"
        return run
    seconds, result = timed
    run.makespan_s = seconds / time_scale
    run.task_phase_s = result.metrics.execution_s / time_scale
    run.synthesis_s = result.metrics.synthesis_s / time_scale
    run.ok = all(t.status == "completed" for t in result.tasks)
    if not run.ok:
        failed = [f"{t.task_id}: {t.error}" for t in result.tasks if t.status != "completed"]
        run.error = "; ".join(failed)
    run.endpoints = _figures(result, served, time_scale, run.task_phase_s)
    return run


def what_if(
    current: FleetConfig,
    changed: FleetConfig,
    scenario: Scenario,
    *,
    changes: list[str],
    time_scale: float = DEFAULT_TIME_SCALE,
    repeats: int = 2,
) -> WhatIf:
    """Run ``scenario`` on both layouts, one after the other, SIMULATED.

    Args:
        current: The fleet as its file describes it.
        changed: The changed layout.
        scenario: The workload.
        changes: The changes, as the user gave them (for the report).
        time_scale: Wall seconds per simulated second (smaller: faster, but our own
            per-call overhead then weighs more in simulated seconds).
        repeats: Runs per layout; the fastest counts.
    """

    async def runs() -> tuple[LayoutRun, LayoutRun]:
        found: dict[str, list[LayoutRun]] = {"current": [], "changed": []}
        layouts = {"current": current, "changed": changed}
        # A B B A...: a slow spell of this machine hits both layouts alike.
        order = [("current", "changed"), ("changed", "current")]
        for rep in range(repeats):
            for label in order[rep % 2]:
                run = await run_layout(layouts[label], scenario, label=label, time_scale=time_scale)
                found[label].append(run)
        return _best(found["current"]), _best(found["changed"])

    before, after = asyncio.run(runs())
    return WhatIf(scenario.name, time_scale, changes, before, after)


def _best(runs: list[LayoutRun]) -> LayoutRun:
    """The fastest successful run: the timing model is deterministic, only our overhead varies."""
    good = [r for r in runs if r.ok] or runs
    return min(good, key=lambda r: r.makespan_s)
