"""The list-scheduling lower bound of a DAG on a fleet, in seconds.

No scheduler that respects the slot caps finishes a DAG faster than

    max(critical path, max over endpoints of the work sent there / its best throughput)

where a task takes at least ``prompt / prefill rate + completion / one sequence's decode
rate`` (a sequence never decodes faster than alone), and an endpoint's tasks take at
least their completion tokens over the best aggregate decode rate its slots reach (and
their prompt tokens over its prefill rate). Token counts come from the workload (pinned
completions) and the prompt sizes the servers reported for one run of it; rates come
from the simulator's timing model or are measured on the real fleet
(:func:`measure_rates`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from endpoints.config import EndpointConfig, FleetConfig
from graph import Task
from graph.dag import topological_order
from kitty.bench._prompting import endpoint_for

RATE_PROBE_TOKENS = 64
_RATE_PROBE_PROMPT = "Count upwards from one, one number a line."


@dataclass(frozen=True)
class EndpointRates:
    """How fast one endpoint can go, in tokens per second.

    Attributes:
        decode_1: Decode rate of one sequence alone (no sequence gets more).
        decode_max: Best aggregate decode rate over all its slots together.
        prefill: Prompt tokens per second; ``None`` leaves prefill out of the bound
            (a real server's prompt cache makes the processed share unknowable).
    """

    decode_1: float
    decode_max: float
    prefill: float | None = None

    def task_floor_s(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Seconds one task takes at the least on this endpoint."""
        prefill_s = prompt_tokens / self.prefill if self.prefill else 0.0
        return prefill_s + completion_tokens / self.decode_1


def sim_rates(endpoint: str, slots: int) -> EndpointRates:
    """The SIMULATED endpoint's rates, from the simulator's own timing model."""
    from ops.simfleet import SIM_ENDPOINT_PARAMS, SimEndpointSpec

    spec = SimEndpointSpec(name=endpoint, slots=slots, **SIM_ENDPOINT_PARAMS.get(endpoint, {}))
    best = max(spec.aggregate_decode_tok_s(k) for k in range(1, slots + 1))
    return EndpointRates(spec.per_sequence_tok_s(1), best, spec.prefill_tok_s)


def lower_bound(
    tasks: list[Task],
    endpoint_of: Mapping[str, str],
    prompt_tokens: Mapping[str, int],
    rates: Mapping[str, EndpointRates],
) -> dict[str, Any]:
    """The list-scheduling lower bound of ``tasks``.

    Args:
        tasks: The DAG (pinned: ``max_tokens`` is each task's completion).
        endpoint_of: Task id -> endpoint name it runs on.
        prompt_tokens: Task id -> prompt tokens (missing: 0).
        rates: Endpoint name -> its rates.

    Returns:
        ``bound_s``, ``critical_path_s``, ``work_s`` (endpoint -> seconds) and ``binding``
        (``critical path`` or the endpoint whose work decides).
    """
    floor = {
        t.id: rates[endpoint_of[t.id]].task_floor_s(prompt_tokens.get(t.id, 0), t.max_tokens or 0)
        for t in tasks
    }
    finish: dict[str, float] = {}
    for task in topological_order(tasks):
        start = max((finish[d] for d in task.dependencies if d in finish), default=0.0)
        finish[task.id] = start + floor[task.id]
    critical = max(finish.values(), default=0.0)
    work: dict[str, float] = {}
    for name, rate in rates.items():
        mine = [t for t in tasks if endpoint_of[t.id] == name]
        if not mine:
            continue
        decode_s = sum(t.max_tokens or 0 for t in mine) / rate.decode_max
        prefill_s = (
            sum(prompt_tokens.get(t.id, 0) for t in mine) / rate.prefill if rate.prefill else 0.0
        )
        work[name] = max(decode_s, prefill_s)
    heaviest = max(work, key=lambda name: work[name], default=None)
    bound = max(critical, work[heaviest] if heaviest else 0.0)
    binding = "critical path" if heaviest is None or critical >= work[heaviest] else heaviest
    return {
        "bound_s": round(bound, 3),
        "critical_path_s": round(critical, 3),
        "work_s": {name: round(seconds, 3) for name, seconds in work.items()},
        "binding": binding,
    }


def used_endpoints(tasks: list[Task], fleet: FleetConfig) -> dict[str, EndpointConfig]:
    """Endpoint name -> config, for the endpoints the tasks' agents run on."""
    return {e.name: e for e in (endpoint_for(t, fleet) for t in tasks)}


async def _probe(client: httpx.AsyncClient, endpoint: EndpointConfig, tokens: int) -> float:
    """Decode tokens/s of one pinned request, from llama.cpp's own ``timings``."""
    body = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": _RATE_PROBE_PROMPT}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "seed": 7,
    }
    response = await client.post(f"{endpoint.base_url}/v1/chat/completions", json=body)
    response.raise_for_status()
    timings = response.json().get("timings") or {}
    rate = float(timings.get("predicted_per_second") or 0.0)
    if rate <= 0:
        raise ValueError(f"{endpoint.name} reported no decode timings")
    return rate


async def measure_rates(
    endpoints: Mapping[str, EndpointConfig],
    slots: Mapping[str, int],
    client: httpx.AsyncClient,
    tokens: int = RATE_PROBE_TOKENS,
) -> dict[str, EndpointRates]:
    """Measure each endpoint's decode rate alone and with every slot busy.

    The per-sequence rates are llama.cpp's ``timings.predicted_per_second`` (decode
    only, no prefill, no HTTP); the aggregate is their sum over ``slots`` concurrent
    requests. The best of the two is the endpoint's throughput; prefill is left out.

    Args:
        endpoints: Endpoint name -> config, for the endpoints to measure.
        slots: Endpoint name -> its slots (that many requests run together).
        client: HTTP client.
        tokens: Pinned completion tokens per probe request.

    Raises:
        httpx.HTTPError: A probe request failed.
        ValueError: A server reported no decode timings.
    """
    rates: dict[str, EndpointRates] = {}
    for name, endpoint in endpoints.items():
        await _probe(client, endpoint, tokens)  # warm: prompt cached, pages touched
        alone = max([await _probe(client, endpoint, tokens) for _ in range(2)])
        together = await asyncio.gather(
            *(_probe(client, endpoint, tokens) for _ in range(slots.get(name, 1)))
        )
        rates[name] = EndpointRates(alone, max(alone, sum(together)))
    return rates


def rates_json(rates: Mapping[str, EndpointRates]) -> dict[str, dict[str, float | None]]:
    """Rates as JSON-ready dicts (rounded)."""
    return {
        name: {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(r).items()}
        for name, r in rates.items()
    }
