"""Framework-free schedulers: sequential, and the eager oracle.

Both talk to llama.cpp with bare ``httpx`` POSTs to ``/v1/chat/completions``, no
LangChain, no LangGraph. The oracle is the yardstick: every task starts the instant its
dependencies finish, gated only by one ``asyncio.Semaphore`` per endpoint sized to the
server's slots. No scheduler that respects the slot caps can do meaningfully better.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from endpoints.clients.probes import probe_all
from endpoints.config import EndpointConfig, FleetConfig
from graph import Task
from graph.dag import topological_order
from kitty.bench._prompting import DepOutput, endpoint_for, request_body, task_messages
from kitty.bench._records import TaskSpan, VariantRun

REQUEST_TIMEOUT_S = 300.0


async def server_slots(fleet: FleetConfig) -> dict[str, int]:
    """Endpoint name -> slots the server reports (``/props``), else the configured ones."""
    endpoints = fleet.all_endpoints()
    statuses = await probe_all(endpoints)
    return {e.name: s.total_slots or e.slots or 1 for e, s in zip(endpoints, statuses, strict=True)}


def new_client() -> httpx.AsyncClient:
    """A client with room for every slot of a fleet at once."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    return httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S)


async def _post(
    client: httpx.AsyncClient,
    task: Task,
    goal: str,
    deps: dict[str, DepOutput],
    endpoint: EndpointConfig,
) -> tuple[DepOutput, TaskSpan]:
    body = request_body(task, task_messages(task, goal, deps), endpoint)
    started = time.time()
    response = await client.post(f"{endpoint.base_url}/v1/chat/completions", json=body)
    finished = time.time()
    response.raise_for_status()
    data = response.json()
    usage = data.get("usage") or {}
    text = data["choices"][0]["message"].get("content") or ""
    span = TaskSpan(
        task_id=task.id,
        endpoint=endpoint.name,
        started_at=started,
        finished_at=finished,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
    return DepOutput(task.agent, text), span


async def run_sequential(
    tasks: list[Task], goal: str, fleet: FleetConfig, client: httpx.AsyncClient
) -> VariantRun:
    """One task at a time, in topological order."""
    outputs: dict[str, DepOutput] = {}
    spans: list[TaskSpan] = []
    began = time.perf_counter()
    try:
        for task in topological_order(tasks):
            deps = {d: outputs[d] for d in task.dependencies}
            outputs[task.id], span = await _post(
                client, task, goal, deps, endpoint_for(task, fleet)
            )
            spans.append(span)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return VariantRun("sequential", time.perf_counter() - began, spans, repr(exc))
    texts = {k: v.text for k, v in outputs.items()}
    return VariantRun("sequential", time.perf_counter() - began, spans, outputs=texts)


async def run_oracle(
    tasks: list[Task],
    goal: str,
    fleet: FleetConfig,
    client: httpx.AsyncClient,
    slots: dict[str, int],
) -> VariantRun:
    """Every task starts the instant its dependencies finish (per-endpoint semaphores).

    Args:
        tasks: The DAG.
        goal: Goal text for the prompts.
        fleet: Where the agents' tiers live.
        client: HTTP client.
        slots: Endpoint name -> slot cap (see :func:`server_slots`).
    """
    semaphores = {name: asyncio.Semaphore(n) for name, n in slots.items()}
    done: dict[str, asyncio.Future[DepOutput]] = {}
    loop = asyncio.get_running_loop()
    for task in tasks:
        done[task.id] = loop.create_future()
    spans: list[TaskSpan] = []

    async def one(task: Task) -> None:
        deps = {d: await done[d] for d in task.dependencies}
        endpoint = endpoint_for(task, fleet)
        async with semaphores[endpoint.name]:
            output, span = await _post(client, task, goal, deps, endpoint)
        spans.append(span)
        done[task.id].set_result(output)

    began = time.perf_counter()
    error: str | None = None
    try:
        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(one(task))
    except* (httpx.HTTPError, KeyError, ValueError) as failures:
        error = repr(failures.exceptions[0])
    wall = time.perf_counter() - began
    texts = {k: f.result().text for k, f in done.items() if f.done() and not f.cancelled()}
    return VariantRun("oracle", wall, spans, error, texts)
