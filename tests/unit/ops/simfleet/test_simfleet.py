"""The SIMULATED llama.cpp fleet: its timing model, request shaping and HTTP surface.

These test the simulator's own model (virtual clock, slots, decode curve), not the product's
speed. HTTP tests run real uvicorn servers on free loopback ports with a small time_scale.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Iterator
from typing import Any, Literal, cast

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from endpoints.clients import make_chat_model
from endpoints.clients.probes import probe_all, probe_endpoint
from endpoints.config import EndpointConfig, load_fleet
from kitty import errors
from ops import simfleet
from ops.simfleet import (
    DEFAULT_DECODE_TOK_S_1,
    SIM_ENDPOINT_PARAMS,
    OfflineRequest,
    SimEndpointSpec,
    SimFleet,
    SimFleetError,
    count_prompt_tokens,
    example_from_schema,
    filler_pieces,
    measure_aggregate_decode,
    plan_completion,
    response_schema,
    simulate_offline,
)

# ---- the timing model (pure, simulated time) ------------------------------------------


def test_public_surface_is_pinned() -> None:
    assert sorted(simfleet.__all__) == [
        "BackgroundServers",
        "DEFAULT_DECODE_TOK_S_1",
        "DEFAULT_SIM_FLEET",
        "OfflineRequest",
        "SIMULATED_LABEL",
        "SIM_ENDPOINT_PARAMS",
        "SimEndpointSpec",
        "SimEngine",
        "SimFleet",
        "SimFleetError",
        "SimSequence",
        "count_prompt_tokens",
        "create_sim_app",
        "example_from_schema",
        "filler_pieces",
        "measure_aggregate_decode",
        "plan_completion",
        "response_schema",
        "simulate_offline",
    ]
    assert all(hasattr(simfleet, name) for name in simfleet.__all__)
    assert simfleet.SimFleetError is errors.SimFleetError


def test_curve_hits_calibration_points_and_saturates() -> None:
    spec = SimEndpointSpec()
    assert spec.relative_throughput(1) == pytest.approx(1.0)
    assert spec.relative_throughput(2) == pytest.approx(1.84)
    assert spec.relative_throughput(3) == pytest.approx((1.84 + 2.75) / 2)
    assert spec.relative_throughput(4) == pytest.approx(2.75)
    beyond = [spec.relative_throughput(n) for n in range(4, 13)]
    assert all(b > a for a, b in itertools.pairwise(beyond))
    assert beyond[-1] < 2.75 + 0.455 * 2  # saturates below r_last + slope * tau
    assert spec.aggregate_decode_tok_s(1) == pytest.approx(DEFAULT_DECODE_TOK_S_1)
    assert spec.per_sequence_tok_s(4) == pytest.approx(97.9 * 2.75 / 4)


def test_curve_validation() -> None:
    with pytest.raises(ValueError, match=r"start at \(1, 1.0\)"):
        SimEndpointSpec(decode_curve=((1, 2.0), (2, 3.0)))
    with pytest.raises(ValueError, match="increase"):
        SimEndpointSpec(decode_curve=((1, 1.0), (4, 2.0), (2, 3.0)))


@pytest.mark.parametrize(("sequences", "relative"), [(1, 1.0), (2, 1.84), (4, 2.75)])
def test_offline_aggregate_matches_curve(sequences: int, relative: float) -> None:
    spec = SimEndpointSpec(slots=4)
    measured = measure_aggregate_decode(spec, sequences, tokens=500)
    assert measured == pytest.approx(97.9 * relative, rel=1e-6)


def test_rates_are_recomputed_when_a_sequence_leaves() -> None:
    spec = SimEndpointSpec(slots=2)
    long, short = simulate_offline(spec, [OfflineRequest(0, 0, 200), OfflineRequest(0, 0, 100)])
    both = 97.9 * 1.84 / 2  # tokens/s each while two decode
    assert short.finished_at == pytest.approx(100 / both)
    assert long.finished_at == pytest.approx(100 / both + 100 / 97.9)


def test_slots_queue_fifo_and_prefill_comes_first() -> None:
    spec = SimEndpointSpec(slots=2, prefill_tok_s=1000)
    runs = simulate_offline(spec, [OfflineRequest(0, 500, 100) for _ in range(5)])
    assert [r.admitted_at for r in runs[:2]] == [0.0, 0.0]
    # two prompts prefill together at 1,000 tok/s shared: 1 s, then decode
    assert runs[0].prefill_done_at == pytest.approx(1.0)
    assert runs[2].admitted_at == pytest.approx(runs[0].finished_at)
    assert runs[4].admitted_at == pytest.approx(runs[2].finished_at)
    starts = [cast(float, r.admitted_at) for r in runs]  # simulate_offline sets every one
    assert starts == sorted(starts)  # FIFO
    assert runs[4].queued_s > runs[2].queued_s > 0


def test_late_arrival_joins_running_batch() -> None:
    spec = SimEndpointSpec(slots=4)
    first, second = simulate_offline(spec, [OfflineRequest(0, 0, 300), OfflineRequest(1.0, 0, 50)])
    assert second.admitted_at == pytest.approx(1.0)
    both = 97.9 * 1.84 / 2
    assert second.finished_at == pytest.approx(1.0 + 50 / both)
    done_alone = 97.9 + 50 / both * both  # tokens of `first` when `second` leaves
    assert first.finished_at == pytest.approx(1.0 + 50 / both + (300 - done_alone) / 97.9)


# ---- request shaping ------------------------------------------------------------------


def test_plan_completion_rules() -> None:
    kw = {"typical": 256, "room": 4000}
    assert plan_completion(max_tokens=64, ignore_eos=True, **kw) == (64, "length")
    assert plan_completion(max_tokens=1000, ignore_eos=False, **kw) == (256, "stop")
    assert plan_completion(max_tokens=10, ignore_eos=False, **kw) == (10, "length")
    assert plan_completion(max_tokens=None, ignore_eos=False, **kw) == (256, "stop")
    assert plan_completion(max_tokens=None, ignore_eos=True, **kw) == (4000, "length")
    assert plan_completion(max_tokens=9000, ignore_eos=True, **kw) == (4000, "length")


def test_prompt_tokens_are_chars_over_four_plus_overhead() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": [{"type": "text", "text": "y" * 41}, {"type": "image_url"}]},
    ]
    assert count_prompt_tokens(messages) == (10 + 4) + (11 + 256 + 4)


def test_filler_is_labelled_and_four_chars_per_token() -> None:
    pieces = filler_pieces(50, seed=3)
    assert len(pieces) == 50
    assert all(len(p) == 4 for p in pieces)
    assert "".join(pieces).startswith("[SIMULATED]:")
    assert filler_pieces(50, seed=3) == pieces
    assert filler_pieces(2) == ["[SIM", "ULAT"]


class _Task(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    agent: Literal["researcher", "coder", "analyst"]
    description: str = Field(min_length=1)
    dependencies: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(default=None, gt=0)


class _Plan(BaseModel):
    tasks: list[_Task] = Field(min_length=1)


def test_example_from_schema_is_valid_for_a_planner_schema() -> None:
    schema = _Plan.model_json_schema()
    value = example_from_schema(schema)
    jsonschema.validate(value, schema)
    plan = _Plan.model_validate(value)
    assert len(plan.tasks) == 1
    assert plan.tasks[0].agent == "researcher"


def test_example_from_schema_handles_common_keywords() -> None:
    schema = {
        "type": "object",
        "required": ["n", "x", "when", "tags", "flag", "opt", "short", "pair"],
        "properties": {
            "n": {"type": "integer", "minimum": 3},
            "x": {"type": "number", "exclusiveMinimum": 0.5},
            "when": {"type": "string", "format": "date-time"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "flag": {"type": "boolean"},
            "opt": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 12}]},
            "short": {"type": "string", "maxLength": 3},
            "pair": {"allOf": [{"properties": {"a": {"const": 1}}, "required": ["a"]}]},
        },
        "additionalProperties": False,
    }
    value = example_from_schema(schema)
    jsonschema.validate(value, schema)
    assert example_from_schema({}) == {"simulated": True}


def test_response_schema_reads_the_forms_llamacpp_reads() -> None:
    nested = {"type": "json_schema", "json_schema": {"name": "p", "schema": {"type": "object"}}}
    assert response_schema({"response_format": nested}) == {"type": "object"}
    flat = {"type": "json_schema", "schema": {"type": "object", "required": ["a"]}}
    assert response_schema({"response_format": flat}) == {}
    assert response_schema({"response_format": {"type": "json_object"}}) == {}
    assert response_schema({"response_format": {"type": "text"}}) is None
    assert response_schema({}) is None


def test_m3_ultra_sim_profile() -> None:
    fleet = load_fleet("m3-ultra-sim")
    shape = {
        tier: (t.endpoints[0].slots, t.endpoints[0].ctx, t.endpoints[0].kind)
        for tier, t in fleet.tiers.items()
    }
    assert shape == {
        "tools": (6, 16384, "llamacpp"),
        "reasoning": (2, 65536, "llamacpp"),
        "vision": (4, 8192, "llamacpp"),
        "coder": (4, 32768, "llamacpp"),
        "summary": (4, 8192, "llamacpp"),
    }
    endpoints = fleet.all_endpoints()
    assert sorted(e.port for e in endpoints) == list(range(38083, 38088))
    assert all(e.host == "127.0.0.1" for e in endpoints)
    assert {e.name for e in endpoints} == set(SIM_ENDPOINT_PARAMS)
    for params in SIM_ENDPOINT_PARAMS.values():
        SimEndpointSpec(**params)  # valid simulation parameters


# ---- HTTP surface ---------------------------------------------------------------------

FAST = SimEndpointSpec(name="fast", model_alias="sim-fast", slots=2, n_ctx=8192, time_scale=0.02)
CURVE = SimEndpointSpec(name="curve", model_alias="sim-curve", slots=4, time_scale=0.05)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimFleet]:
    with SimFleet([FAST, CURVE]) as fleet:
        yield fleet


def _chat_body(max_tokens: int, *, ignore_eos: bool = True, **extra: object) -> dict:
    return {
        "model": "any",
        "messages": [{"role": "user", "content": "Plan a small task."}],
        "max_tokens": max_tokens,
        "ignore_eos": ignore_eos,
        **extra,
    }


async def test_probes_props_models_metrics(sim: SimFleet) -> None:
    url = sim.urls["fast"]
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        props = (await client.get("/props")).json()
        assert props["simulated"] is True
        assert props["total_slots"] == 2
        assert props["default_generation_settings"]["n_ctx"] == 8192
        assert props["model_alias"] == "sim-fast"
        models = (await client.get("/v1/models")).json()
        assert models["data"][0]["id"] == "sim-fast"
        metrics = (await client.get("/metrics")).text
        assert "llamacpp:requests_processing" in metrics
        assert "kitty_sim_simulated 1" in metrics
    status = await probe_endpoint(
        EndpointConfig(name="fast", kind="llamacpp", base_url=url, model="sim-fast")
    )
    assert status.health == "ok"
    assert (status.total_slots, status.n_ctx, status.busy_slots) == (2, 8192, 0)


async def test_n_slots_bound_concurrency_and_queue_fifo(sim: SimFleet) -> None:
    url, slots = sim.urls["fast"], FAST.slots
    seen_busy: list[int] = []
    seen_deferred: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        requests = [
            asyncio.create_task(client.post("/v1/chat/completions", json=_chat_body(300)))
            for _ in range(slots + 3)
        ]
        while not all(task.done() for task in requests):
            listed = (await client.get("/slots")).json()
            assert len(listed) == slots
            seen_busy.append(sum(s["is_processing"] for s in listed))
            metrics = (await client.get("/metrics")).text
            deferred = next(
                line for line in metrics.splitlines() if line.startswith("llamacpp:requests_def")
            )
            seen_deferred.append(int(deferred.split()[-1]))
            await asyncio.sleep(0.005)
        replies = [(await task).json() for task in requests]
    assert max(seen_busy) == slots
    assert max(seen_deferred) >= 1
    queued = sorted(r["timings"]["queued_ms"] for r in replies)
    assert queued[:slots] == [0.0] * slots
    assert all(q > 1000 for q in queued[slots:])  # waited for a slot (~3 s simulated)
    finish = sorted(r["timings"]["sim_finished_s"] for r in replies)
    assert finish[slots] > finish[slots - 1]  # queued ones finish later


async def _concurrent_replies(
    client: httpx.AsyncClient, sequences: int, tokens: int
) -> tuple[list[dict], float]:
    """Send ``sequences`` requests at once; returns the replies and the wall seconds taken."""
    started = time.monotonic()  # the engine's clock is the event loop's: time.monotonic
    replies = await asyncio.gather(
        *(client.post("/v1/chat/completions", json=_chat_body(tokens)) for _ in range(sequences))
    )
    wall = time.monotonic() - started
    bodies = [r.json() for r in replies]
    assert all(b["usage"]["completion_tokens"] == tokens for b in bodies)
    return bodies, wall


def _aggregate_tok_s(arrivals: list[float], finishes: list[float], tokens: int) -> float:
    """Decode tokens/s of a batch: all its tokens over its makespan (simulated seconds)."""
    return len(finishes) * tokens / (max(finishes) - min(arrivals))


async def test_decode_curve_one_vs_four_sequences(sim: SimFleet) -> None:
    # Asserted in simulated time only, which a loaded machine cannot skew: the server's
    # reported times are replayed through the discrete-event model, and the speed-up is read
    # from that model with simultaneous arrivals (how far apart the requests really arrived
    # depends on the load). Wall-clock ratios are a benchmark's job, not a unit test's.
    async with httpx.AsyncClient(base_url=sim.urls["curve"], timeout=30) as client:
        single, wall_1 = await _concurrent_replies(client, 1, 400)
        batch, wall_4 = await _concurrent_replies(client, 4, 400)
    timings = [b["timings"] for b in single + batch]
    replay = simulate_offline(
        CURVE,
        [OfflineRequest(t["sim_arrival_s"], t["prompt_n"], t["predicted_n"]) for t in timings],
    )
    # the server keeps the model's time exactly, whenever the requests arrived
    assert [t["sim_finished_s"] for t in timings] == pytest.approx(
        [seq.finished_at for seq in replay], rel=1e-6
    )
    for bodies, wall in ((single, wall_1), (batch, wall_4)):
        makespan = max(b["timings"]["sim_finished_s"] for b in bodies) - min(
            b["timings"]["sim_arrival_s"] for b in bodies
        )
        # paced in real time: no reply before its simulated finish (load only delays replies)
        assert wall >= makespan * CURVE.time_scale * (1 - 1e-9)
    only = single[0]["timings"]
    assert _aggregate_tok_s([only["sim_arrival_s"]], [only["sim_finished_s"]], 400) == (
        pytest.approx(97.9, rel=0.05)
    )
    prompt = only["prompt_n"]
    alone = simulate_offline(CURVE, [OfflineRequest(0.0, prompt, 400)])
    together = simulate_offline(CURVE, [OfflineRequest(0.0, prompt, 400)] * 4)
    clock_1 = _aggregate_tok_s([0.0], [seq.finished_at or 0.0 for seq in alone], 400)
    clock_4 = _aggregate_tok_s([0.0], [seq.finished_at or 0.0 for seq in together], 400)
    assert clock_1 == pytest.approx(97.9, rel=0.05)
    assert clock_4 / clock_1 == pytest.approx(2.75, rel=0.15)


async def test_usage_equals_max_tokens_with_ignore_eos(sim: SimFleet) -> None:
    async with httpx.AsyncClient(base_url=sim.urls["fast"], timeout=30) as client:
        reply = (await client.post("/v1/chat/completions", json=_chat_body(77))).json()
        assert reply["usage"]["completion_tokens"] == 77
        assert reply["choices"][0]["finish_reason"] == "length"
        content = reply["choices"][0]["message"]["content"]
        assert content.startswith("[SIMULATED]") and len(content) == 77 * 4
        assert reply["timings"]["predicted_n"] == 77
        free = _chat_body(1000, ignore_eos=False)
        reply = (await client.post("/v1/chat/completions", json=free)).json()
        assert reply["usage"]["completion_tokens"] == FAST.typical_completion_tokens
        assert reply["choices"][0]["finish_reason"] == "stop"


async def test_raw_sse_stream_has_openai_chunks_and_usage(sim: SimFleet) -> None:
    body = _chat_body(40, stream=True, stream_options={"include_usage": True})
    events = []
    async with (
        httpx.AsyncClient(base_url=sim.urls["fast"], timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert len(text) == 40 * 4
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 40


async def test_chatopenai_astream_through_product_factory(sim: SimFleet) -> None:
    endpoint = EndpointConfig(
        name="fast", kind="llamacpp", base_url=sim.urls["fast"], model="sim-fast"
    )
    llm = make_chat_model(endpoint, max_tokens=64, extra={"ignore_eos": True})
    merged = None
    async for chunk in llm.astream("Say something."):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    assert str(merged.content).startswith("[SIMULATED]")
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] == 64
    assert merged.usage_metadata["input_tokens"] > 0


async def test_structured_output_json_schema(sim: SimFleet) -> None:
    endpoint = EndpointConfig(
        name="fast", kind="llamacpp", base_url=sim.urls["fast"], model="sim-fast"
    )
    llm = make_chat_model(endpoint, max_tokens=512)
    planner = llm.with_structured_output(_Plan, method="json_schema")
    plan = await planner.ainvoke("Plan: research then code.")
    assert isinstance(plan, _Plan)
    assert plan.tasks[0].agent == "researcher"


async def test_context_overflow_is_refused_like_llamacpp(sim: SimFleet) -> None:
    body = {"messages": [{"role": "user", "content": "x" * 40_000}], "max_tokens": 10}
    async with httpx.AsyncClient(base_url=sim.urls["fast"], timeout=5) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "exceed_context_size_error"


async def _wait_idle(client: httpx.AsyncClient, timeout_s: float = 2.0) -> bool:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if not any(s["is_processing"] for s in (await client.get("/slots")).json()):
            return True
        await asyncio.sleep(0.01)
    return False


async def test_client_gone_frees_the_slot(sim: SimFleet) -> None:
    url = sim.urls["fast"]
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        assert await _wait_idle(client)
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=_chat_body(2000), timeout=0.1)
        assert await _wait_idle(client)
        body = _chat_body(2000, stream=True)
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for _ in response.aiter_lines():
                break
        assert await _wait_idle(client)


async def test_loading_answers_503() -> None:
    spec = SimEndpointSpec(name="loading", loading_s=1e6)
    with SimFleet([spec]) as fleet:
        url = fleet.urls["loading"]
        status = await probe_endpoint(
            EndpointConfig(name="loading", kind="llamacpp", base_url=url, model="m")
        )
        assert status.health == "loading"
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            response = await client.post("/v1/chat/completions", json=_chat_body(5))
        assert response.status_code == 503


def test_taken_port_is_named() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(SimFleetError, match=str(port)):
            SimFleet([SimEndpointSpec(port=port)]).start()


async def test_m3_ultra_sim_fleet_serves_its_profile() -> None:
    started = time.perf_counter()
    # Free ports, not the profile's 38083-38087: those lie in Linux's ephemeral range, where
    # any outgoing connection of the machine may hold one for a moment.
    names = [e.name for e in load_fleet("m3-ultra-sim").all_endpoints()]
    overrides: dict[str, dict[str, Any]] = {name: {"port": 0} for name in names}
    overrides["qwen32b-coder"]["slots"] = 6
    sim = SimFleet.from_fleet("m3-ultra-sim", time_scale=0.01, overrides=overrides).start()
    with sim:
        fleet = sim.fleet
        assert fleet is not None
        assert fleet.tier("coder").endpoints[0].slots == 6  # what-if reflected in the config
        statuses = await probe_all(fleet.all_endpoints())
        assert [s.health for s in statuses] == ["ok"] * 5
        assert {s.name: s.total_slots for s in statuses} == {
            e.name: e.slots for e in fleet.all_endpoints()
        }
        assert (
            sim.specs["athene-q4"].decode_tok_s_1
            == SIM_ENDPOINT_PARAMS["athene-q4"]["decode_tok_s_1"]
        )
    assert time.perf_counter() - started < 5
