"""``GET /metrics``: the orchestration layer's figures in Prometheus text format.

:class:`ServiceMetrics` is a :class:`~kitty.service._runs.RunObserver`: every run of the
service (plain, streamed, resumed, OpenAI-compatible) passes its events through it, and
it counts runs, tasks, slot waits, tokens, fallbacks and tool calls into a
prometheus-client registry of its own (one per app, nothing in module globals). What is
live rather than counted (slots in use and queued per endpoint, benched endpoints) is
read from the fleet's runtime when Prometheus scrapes.

Labels are bounded: agent, endpoint and tool names (from the fleet file and the agents'
allowlists), outcomes and admission reasons. Goal text, run ids and thread ids are never
labels.

Several workers (``--workers N``) are separate processes: prometheus-client's
multiprocess mode writes each worker's values to files in ``$PROMETHEUS_MULTIPROC_DIR``
and a scrape, whichever worker answers it, sums them (:func:`multiprocess_directory`
makes that directory for one service start).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response, Security
from fastapi.security import HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from agents import DEFAULT_AGENTS
from endpoints import FleetConfig, get_runtime
from graph import RunFinished, TaskFallback, TaskFinished, TaskToolCall
from kitty.service._runs import RunOutcome, RunSpec

logger = logging.getLogger("kitty.service")

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN_TOOL = "unknown"
"""The ``tool`` label of a call whose name no allowlist has (a model invented it)."""

RUN_OUTCOMES = ("completed", "interrupted", "failed", "cancelled")
TASK_OUTCOMES = ("completed", "failed", "skipped")
TOOL_OUTCOMES = ("ok", "failed", "refused")
REJECTION_REASONS = ("run_limit", "thread_running", "store_unreachable")
"""Why admission refused a run: 429 (too many runs), 409 (thread running), 503 (store down)."""

# Runs on a local fleet take seconds to tens of minutes.
RUN_BUCKETS_S = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
# A slot wait is nothing on an idle fleet and minutes behind a long queue.
WAIT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
# Makespan / critical path: 1.0 is the best any scheduler can do with unlimited slots.
RATIO_BUCKETS = (1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 4.0, 6.0)

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db")

_bearer = HTTPBearer(
    auto_error=False,
    description="The service's KITTY_API_TOKEN (only when the service was started with one).",
)


@dataclass(frozen=True)
class EndpointGauges:
    """What one endpoint looks like at scrape time.

    Attributes:
        endpoint: Endpoint name.
        capacity: Its slots.
        in_use: Slots held: by every process sharing the Redis slot store, or by this
            process with the local store (then the only one using the fleet's caps).
        queued: Tasks waiting for one of its slots, counted the same way.
        benched: The endpoint is cooling down after repeated failures.
    """

    endpoint: str
    capacity: int
    in_use: int
    queued: int
    benched: bool


async def fleet_gauges(config: FleetConfig) -> list[EndpointGauges]:
    """The fleet's slots and cooldowns now, one entry per distinct server.

    With the Redis slot store the counts are fresh fleet-wide figures (the leases and
    waiters of every process), as ``GET /api/endpoints`` shows them; while the store is
    unreachable, the last ones this process saw; with the local store, this process's.
    """
    runtime = get_runtime(config)
    shared = await runtime.lease_counts()
    now = time.monotonic()
    gauges = []
    for handle in runtime.all_handles():
        stats = handle.limiter.stats()
        in_use, queued = shared.get(handle.name, (stats.leases, stats.store_queued))
        gauges.append(
            EndpointGauges(
                endpoint=handle.name,
                capacity=stats.capacity,
                in_use=stats.in_use if in_use is None else in_use,
                queued=stats.queued if queued is None else queued,
                benched=handle.health.cooling_down(now),
            )
        )
    return gauges


class _FleetCollector:
    """Yields a scrape's :class:`EndpointGauges` as gauge families."""

    def __init__(self, gauges: list[EndpointGauges]) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            "capacity": GaugeMetricFamily(
                "kitty_endpoint_slots", "Slots of the endpoint.", labels=["endpoint"]
            ),
            "in_use": GaugeMetricFamily(
                "kitty_endpoint_slots_in_use",
                "Slots held now (fleet-wide with the Redis slot store).",
                labels=["endpoint"],
            ),
            "queued": GaugeMetricFamily(
                "kitty_endpoint_slots_queued",
                "Tasks waiting for a slot now (fleet-wide with the Redis slot store).",
                labels=["endpoint"],
            ),
            "benched": GaugeMetricFamily(
                "kitty_endpoint_benched",
                "1 while the endpoint cools down after repeated failures, else 0.",
                labels=["endpoint"],
            ),
        }
        for gauge in self.gauges:
            labels = [gauge.endpoint]
            families["capacity"].add_metric(labels, gauge.capacity)
            families["in_use"].add_metric(labels, gauge.in_use)
            families["queued"].add_metric(labels, gauge.queued)
            families["benched"].add_metric(labels, 1.0 if gauge.benched else 0.0)
        yield from families.values()


def service_tools(context_overrides: Mapping[str, Any]) -> tuple[str, ...]:
    """Every tool name or pattern (``fabrication.*``) an agent of the service may call.

    The default agents' allowlists plus what the service's ``--set agent_tools=...``
    adds: the only names a tool call can carry without being refused, so the only
    ``tool`` label values besides :data:`UNKNOWN_TOOL`.
    """
    names = {name for agent in DEFAULT_AGENTS.values() for name in agent.tool_allowlist}
    extra = context_overrides.get("agent_tools")
    if isinstance(extra, Mapping):
        names.update(str(n) for allowlist in extra.values() for n in allowlist)
    return tuple(sorted(names))


class ServiceMetrics:
    """The service's Prometheus metrics: a run observer plus a scrape.

    Args:
        config: The service's fleet (its endpoints' slots and cooldowns are read at scrape
            time).
        tools: The tool names and patterns the agents' allowlists offer; a call of any
            other name is counted as ``tool="unknown"``.
        multiprocess_dir: ``$PROMETHEUS_MULTIPROC_DIR`` when the service runs several
            workers: a scrape then sums the files of every worker there. ``None``: this
            process's values only (also when prometheus-client was imported before the
            variable was set: its values are then in memory, not in files).
    """

    def __init__(
        self,
        config: FleetConfig,
        *,
        tools: Iterable[str] = (),
        multiprocess_dir: str | None = None,
    ) -> None:
        self.config = config
        self.tools = tuple(tools)
        if multiprocess_dir and not _writes_files():
            logger.warning(
                "%s is set, but only after prometheus_client was imported, so this process "
                "keeps its metrics in memory; set it before the service starts",
                MULTIPROC_ENV,
            )
            multiprocess_dir = None
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self._started: dict[int, tuple[float, float]] = {}
        self._define(self.registry)

    def _define(self, registry: CollectorRegistry) -> None:
        self.runs = Counter(
            "kitty_runs", "Runs that ended, by outcome.", ["outcome"], registry=registry
        )
        self.runs_in_flight = Gauge(
            "kitty_runs_in_flight",
            "Runs under way now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.run_duration = Histogram(
            "kitty_run_duration_seconds",
            "Seconds from a run's admission to its end, by outcome.",
            ["outcome"],
            buckets=RUN_BUCKETS_S,
            registry=registry,
        )
        self.tasks = Counter(
            "kitty_tasks",
            "Tasks that ended, by agent and outcome.",
            ["agent", "outcome"],
            registry=registry,
        )
        self.slot_wait = Histogram(
            "kitty_slot_wait_seconds",
            "Seconds a task waited for a free slot, by the endpoint that served it.",
            ["endpoint"],
            buckets=WAIT_BUCKETS_S,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "kitty_prompt_tokens",
            "Prompt tokens of task calls, by the endpoint that served the task.",
            ["endpoint"],
            registry=registry,
        )
        self.completion_tokens = Counter(
            "kitty_completion_tokens",
            "Completion tokens of task calls, by the endpoint that served the task.",
            ["endpoint"],
            registry=registry,
        )
        self.cached_prompt_tokens = Counter(
            "kitty_cached_prompt_tokens",
            "Prompt tokens served from the server's prompt cache, by endpoint.",
            ["endpoint"],
            registry=registry,
        )
        self.orchestration_prompt_tokens = Counter(
            "kitty_orchestration_prompt_tokens",
            "Prompt tokens of the planner, synthesizer and summarizer calls.",
            registry=registry,
        )
        self.orchestration_completion_tokens = Counter(
            "kitty_orchestration_completion_tokens",
            "Completion tokens of the planner, synthesizer and summarizer calls.",
            registry=registry,
        )
        self.orchestration_cached_prompt_tokens = Counter(
            "kitty_orchestration_cached_prompt_tokens",
            "Cached prompt tokens of the planner, synthesizer and summarizer calls.",
            registry=registry,
        )
        self.fallbacks = Counter(
            "kitty_fallbacks",
            "A task's endpoint failed and the next one in its chain was tried.",
            ["from_endpoint", "to_endpoint"],
            registry=registry,
        )
        self.tool_calls = Counter(
            "kitty_tool_calls",
            "Tool calls the models asked for, by tool and outcome.",
            ["tool", "outcome"],
            registry=registry,
        )
        self.replans = Counter(
            "kitty_replans", "Replans of a run after its tasks (the joiner).", registry=registry
        )
        self.rejections = Counter(
            "kitty_admission_rejections",
            "Runs refused at admission: run_limit (429), thread_running (409), "
            "store_unreachable (503).",
            ["reason"],
            registry=registry,
        )
        self.makespan_ratio = Histogram(
            "kitty_run_makespan_critical_path_ratio",
            "A completed run's task makespan over its critical path (1.0: the best any "
            "scheduler reaches with unlimited slots).",
            buckets=RATIO_BUCKETS,
            registry=registry,
        )
        for outcome in RUN_OUTCOMES:  # present at 0, so rate() sees the first run
            self.runs.labels(outcome=outcome)
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason=reason)

    # ------------------------------------------------------------------ RunObserver

    def run_started(self, spec: RunSpec) -> None:
        """A run was admitted: one more in flight, its clock starts."""
        self._started[id(spec)] = (time.monotonic(), time.time())
        self.runs_in_flight.inc()

    def run_event(self, spec: RunSpec, event: Any) -> None:
        """Count what one progress event says (tasks, fallbacks, tool calls, the result)."""
        if isinstance(event, TaskFinished):
            self._task_finished(spec, event)
        elif isinstance(event, TaskFallback):
            self.fallbacks.labels(
                from_endpoint=event.failed_endpoint, to_endpoint=event.next_endpoint
            ).inc()
        elif isinstance(event, TaskToolCall) and event.phase == "finished":
            outcome = "refused" if event.refused else "ok" if event.ok else "failed"
            self.tool_calls.labels(tool=self.tool_label(event.tool), outcome=outcome).inc()
        elif isinstance(event, RunFinished):
            self._run_finished(event)

    def run_ended(self, spec: RunSpec, outcome: RunOutcome) -> None:
        """The run ended: counted by outcome, its duration observed."""
        started = self._started.pop(id(spec), None)
        self.runs.labels(outcome=outcome).inc()
        self.runs_in_flight.dec()
        if started is not None:
            self.run_duration.labels(outcome=outcome).observe(time.monotonic() - started[0])

    def _task_finished(self, spec: RunSpec, event: TaskFinished) -> None:
        result = event.result
        started = self._started.get(id(spec))
        if (
            started is not None
            and result.finished_at is not None
            and result.finished_at < started[1]
        ):
            return  # finished before an interruption, replayed by the resume: counted then
        self.tasks.labels(agent=result.agent, outcome=result.status).inc()
        if result.endpoint is None or result.status == "skipped":
            return
        endpoint = result.endpoint
        self.slot_wait.labels(endpoint=endpoint).observe(result.queued_s)
        self.prompt_tokens.labels(endpoint=endpoint).inc(result.prompt_tokens)
        self.completion_tokens.labels(endpoint=endpoint).inc(result.completion_tokens)
        self.cached_prompt_tokens.labels(endpoint=endpoint).inc(result.cached_prompt_tokens)

    def _run_finished(self, event: RunFinished) -> None:
        result = event.result
        metrics = result.metrics
        # The run's totals minus its tasks': the planner, synthesizer and summarizer calls.
        tasks = result.tasks
        self.orchestration_prompt_tokens.inc(
            max(metrics.prompt_tokens - sum(t.prompt_tokens for t in tasks), 0)
        )
        self.orchestration_completion_tokens.inc(
            max(metrics.completion_tokens - sum(t.completion_tokens for t in tasks), 0)
        )
        self.orchestration_cached_prompt_tokens.inc(
            max(metrics.cached_prompt_tokens - sum(t.cached_prompt_tokens for t in tasks), 0)
        )
        if metrics.critical_path_s > 0 and metrics.execution_s > 0:
            self.makespan_ratio.observe(metrics.execution_s / metrics.critical_path_s)

    def tool_label(self, name: str) -> str:
        """``name`` when an allowlist offers it, else :data:`UNKNOWN_TOOL` (bounded labels)."""
        if any(fnmatch.fnmatchcase(name, allowed) for allowed in self.tools):
            return name
        return UNKNOWN_TOOL

    # ------------------------------------------------------------------ admission

    def admission_rejected(self, reason: str) -> None:
        """Admission refused a run (``RunAdmission``'s ``on_reject``)."""
        self.rejections.labels(reason=reason).inc()

    # ------------------------------------------------------------------ scrape

    async def scrape(self) -> bytes:
        """The metrics in Prometheus text format, with the fleet's live gauges."""
        return self.render(await fleet_gauges(self.config))

    def render(self, gauges: list[EndpointGauges]) -> bytes:
        """The counted metrics (of every worker in multiprocess mode) plus ``gauges``."""
        scrape = CollectorRegistry()
        if self.multiprocess_dir:
            forget_dead_workers(self.multiprocess_dir)
            MultiProcessCollector(scrape, path=self.multiprocess_dir)
        else:
            source: Collector = self.registry
            scrape.register(source)
        scrape.register(_FleetCollector(gauges))
        return generate_latest(scrape)


def _writes_files() -> bool:
    """True when prometheus-client keeps values in files (multiprocess mode)."""
    return bool(getattr(prometheus_values.ValueClass, "_multiprocess", False))


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that are gone (a killed worker uvicorn replaced).

    Its counters stay (what it counted happened); its ``livesum`` gauges, such as runs
    in flight, would otherwise count forever.
    """
    for path in Path(directory).glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.fullmatch(path.name)
        if match is None:
            continue
        pid = int(match.group(1))
        if not _alive(pid):
            mark_process_dead(pid, directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: not ours to judge
    return True


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """``$PROMETHEUS_MULTIPROC_DIR`` for one service start with several workers.

    The operator's directory when the variable is set (kept afterwards; it should be
    emptied between starts, see prometheus-client's docs); otherwise a fresh temporary
    directory, removed when the service stops. Set in this process's environment, so the
    workers it starts inherit it before they import prometheus-client.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        yield given
        return
    directory = tempfile.mkdtemp(prefix="kitty-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


def metrics_routes(metrics: ServiceMetrics) -> APIRouter:
    """``GET /metrics``: Prometheus text format (behind the bearer token like the rest)."""
    router = APIRouter(tags=["service"])

    @router.get(
        METRICS_PATH,
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition format.",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            },
            401: {"description": "Missing or wrong bearer token."},
        },
        dependencies=[Security(_bearer)],
        summary="Prometheus metrics of the service and its fleet",
    )
    async def prometheus_metrics() -> Response:
        """Runs, tasks, slot waits, tokens, fallbacks, tool calls, admission and the fleet.

        Counters cover every worker of the service; slots in use and queued are
        fleet-wide with the Redis slot store. See the docs' metrics guide for the list.
        """
        return Response(await metrics.scrape(), media_type=CONTENT_TYPE_LATEST)

    return router
