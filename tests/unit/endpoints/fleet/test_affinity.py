"""Prefix-cache affinity: the limiter prefers a slot that served the same prefix, and the
request names it with ``id_slot`` on llama.cpp only, never on Ollama or a capped server.

A fake llama.cpp (``/props`` and a streamed ``/v1/chat/completions``) records the request
bodies; a fake Ollama records its own. The cached prompt tokens the fake reports land on
the call record and the outcome.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from endpoints.calls import CallLimits, ModelRequest, ModelSettings, call_tiers
from endpoints.clients import constrain_to_json_schema
from endpoints.fleet import get_runtime
from endpoints.fleet._affinity import pin_slot, prefix_key
from endpoints.slots import RedisSlotStore, SlotLimiter
from endpoints.slots._store import LocalSlots
from ops.simfleet._background import BackgroundServers
from tests.fakes.ollama_server import FakeOllama
from tests.helpers import endpoint_spec, write_fleet

CACHED = 7


class FakeLlamaCpp:
    """Just enough llama.cpp: ``/props`` ``total_slots`` and a streamed chat answer."""

    def __init__(self, total_slots: int) -> None:
        self.total_slots = total_slots
        self.bodies: list[dict[str, Any]] = []
        self.app = FastAPI()
        self.app.get("/props")(self._props)
        self.app.post("/v1/chat/completions")(self._chat)

    async def _props(self) -> dict[str, Any]:
        return {"total_slots": self.total_slots}

    async def _chat(self, request: Request) -> StreamingResponse:
        self.bodies.append(await request.json())

        def chunk(**fields: Any) -> str:
            payload = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
            return f"data: {json.dumps(payload | fields)}\n\n"

        async def stream() -> AsyncIterator[str]:
            delta = {"role": "assistant", "content": "ok"}
            yield chunk(choices=[{"index": 0, "delta": delta, "finish_reason": None}])
            yield chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
            usage = {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "total_tokens": 11,
                "prompt_tokens_details": {"cached_tokens": CACHED},
            }
            yield chunk(choices=[], usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeLlamaCpp, FakeLlamaCpp, FakeOllama]]:
    """A llama.cpp with 2 slots, one with 4 slots (our fleet caps it at 2), an Ollama."""
    matching, capped = FakeLlamaCpp(2), FakeLlamaCpp(4)
    background = BackgroundServers(
        [(matching.app, "127.0.0.1", 0), (capped.app, "127.0.0.1", 0)], name="fake-llamacpp"
    )
    ports = background.start()
    matching.port, capped.port = ports  # type: ignore[attr-defined]
    with FakeOllama(model="qwen3:8b") as ollama:
        yield matching, capped, ollama
    background.stop()


@pytest.fixture
def fleet(
    tmp_path: Path,
    servers: tuple[FakeLlamaCpp, FakeLlamaCpp, FakeOllama],
    fresh_fleet_state: None,
) -> Iterator[Path]:
    matching, capped, ollama = servers
    for server in (matching, capped):
        server.bodies.clear()
    ollama.reset()
    tiers = {
        "tools": [endpoint_spec("llama", matching.port, slots=2)],  # type: ignore[attr-defined]
        "coder": [endpoint_spec("capped", capped.port, slots=2)],  # type: ignore[attr-defined]
        "summary": [endpoint_spec("ollama", ollama.port, kind="ollama", model="qwen3:8b")],
    }
    yield write_fleet(tmp_path / "fleet.toml", tiers)


async def ask(fleet: Path, tier: str, system: str) -> Any:
    runtime = get_runtime(str(fleet))
    request = ModelRequest(
        tiers=[tier],
        model=ModelSettings(temperature=0.0, max_tokens=4),
        limits=CallLimits(slot_timeout_s=5),
    )
    return await call_tiers(runtime, request, [SystemMessage(system), HumanMessage("a task")])


# --------------------------------------------------------------------------- slot choice


async def test_a_free_slot_that_last_served_the_key_is_chosen() -> None:
    slots = LocalSlots("ep", 3)
    first_a = await slots.acquire(prefer="a")
    first_b = await slots.acquire(prefer="b")
    assert (first_a, first_b) == (0, 1)  # unused slots before used ones, lowest first
    slots.release(first_a)
    slots.release(first_b)
    assert await slots.acquire(prefer="b") == 1  # not the lowest free slot: b's own
    assert await slots.acquire(prefer="c") == 2  # a slot no prefix used yet
    assert slots.last_served(1) == "b"


async def test_without_a_match_the_least_recently_used_free_slot_is_chosen() -> None:
    slots = LocalSlots("ep", 2)
    for key in ("a", "b", "a"):
        slots.release(await slots.acquire(prefer=key))
    assert await slots.acquire(prefer="new") == 1  # b was served longest ago


async def test_without_a_key_the_lowest_free_slot_is_chosen() -> None:
    slots = LocalSlots("ep", 3)
    held = [await slots.acquire(prefer=k) for k in ("a", "b")]
    slots.release(held[0])
    assert await slots.acquire() == 0


def test_only_in_process_numbering_names_server_slots() -> None:
    assert SlotLimiter("ep", 2).numbers_are_server_slots
    shared = RedisSlotStore("redis://127.0.0.1:1/0")  # never connected: nothing to close
    assert not SlotLimiter("ep", 2, store=shared, key="http://x:1").numbers_are_server_slots


def test_the_prefix_key_is_the_system_prompt() -> None:
    one = prefix_key([SystemMessage("You research."), HumanMessage("task 1")])
    assert one == prefix_key([SystemMessage("You research."), HumanMessage("task 2")])
    assert one != prefix_key([SystemMessage("You code."), HumanMessage("task 1")])
    assert prefix_key([HumanMessage("no system prompt")]) is None


# --------------------------------------------------------------------------- request body


def _body_of(model: Any) -> dict[str, Any]:
    """The ``extra_body`` a runnable sends, as LangChain merges it into the request."""
    while True:
        kwargs = getattr(model, "kwargs", {})
        if "extra_body" in kwargs:
            return dict(kwargs["extra_body"])
        if hasattr(model, "bound"):
            model = model.bound
        elif hasattr(model, "first"):
            model = model.first
        else:
            return dict(model.extra_body or {})


def test_pin_slot_reaches_the_chat_model_through_bindings_and_sequences() -> None:
    model = ChatOpenAI(base_url="http://127.0.0.1:1/v1", api_key="x", extra_body={"top_k": 5})
    assert _body_of(pin_slot(model, 1)) == {"top_k": 5, "id_slot": 1}
    assert model.extra_body == {"top_k": 5}  # the shared model is not changed
    bound = model.bind(extra_body={"response_format": {"type": "json_object"}})
    assert _body_of(pin_slot(bound, 0))["id_slot"] == 0
    assert "response_format" in _body_of(pin_slot(bound, 0))
    structured = constrain_to_json_schema(model, _llama_endpoint(), {"type": "object"}, name="x")
    assert _body_of(pin_slot(structured, 3))["id_slot"] == 3
    assert pin_slot("not a model", 1) == "not a model"


def _llama_endpoint() -> Any:
    from endpoints.config import EndpointConfig

    return EndpointConfig(name="e", kind="llamacpp", base_url="http://127.0.0.1:1", model="m")


async def test_llamacpp_requests_name_the_slot_that_holds_their_prefix(
    fleet: Path, servers: tuple[FakeLlamaCpp, FakeLlamaCpp, FakeOllama]
) -> None:
    matching = servers[0]
    outcomes = [await ask(fleet, "tools", system) for system in ("agent A", "agent B", "agent B")]
    assert all(o.ok for o in outcomes)
    # B's second task goes back to B's slot, though slot 0 is free and lower.
    assert [b.get("id_slot") for b in matching.bodies] == [0, 1, 1]
    assert [o.slot for o in outcomes] == [0, 1, 1]


async def test_cached_prompt_tokens_are_recorded_per_call(fleet: Path) -> None:
    outcome = await ask(fleet, "tools", "agent A")
    assert outcome.cached_prompt_tokens == CACHED
    assert [c.cached_prompt_tokens for c in outcome.calls] == [CACHED]


async def test_no_id_slot_when_the_limiter_is_smaller_than_the_server(
    fleet: Path, servers: tuple[FakeLlamaCpp, FakeLlamaCpp, FakeOllama]
) -> None:
    capped = servers[1]
    assert (await ask(fleet, "coder", "agent A")).ok
    assert capped.bodies and all("id_slot" not in body for body in capped.bodies)


async def test_no_id_slot_for_ollama(
    fleet: Path, servers: tuple[FakeLlamaCpp, FakeLlamaCpp, FakeOllama]
) -> None:
    ollama = servers[2]
    assert (await ask(fleet, "summary", "agent A")).ok
    (body,) = ollama.chat_requests
    assert "id_slot" not in json.dumps(body)


# --------------------------------------------------------------------------- reporting


def test_cached_tokens_reach_the_task_result_the_run_metrics_and_the_cli() -> None:
    from rich.console import Console

    from graph.metrics import compute_metrics
    from graph.schemas import ModelCall, Plan, RunResult, Task, TaskResult
    from kitty.cli._report import metrics_table

    calls = [
        ModelCall(endpoint="e", started_at=0.0, cached_prompt_tokens=30),
        ModelCall(endpoint="e", started_at=1.0, cached_prompt_tokens=10),
    ]
    result = TaskResult(
        task_id="a", status="completed", agent="researcher", calls=calls, prompt_tokens=80
    )
    assert result.cached_prompt_tokens == 40
    assert TaskResult.model_validate(result.model_dump()).cached_prompt_tokens == 40
    plan = Plan(tasks=[Task(id="a", agent="researcher", description="d")])
    usage = {"prompt_tokens": 20, "completion_tokens": 5}
    metrics = compute_metrics(plan, {"a": result}, {}, usage, wall_s=1.0)
    assert (metrics.cached_prompt_tokens, metrics.cached_prompt_share) == (40, 0.4)
    run = RunResult(goal="g", answer="x", plan=plan, tasks=[result], metrics=metrics, run_id="r")
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(metrics_table(run))
    text = console.export_text()
    assert "cached prompt tokens" in text and "40 (40% of tokens in" in text


def test_an_agents_system_prompt_is_byte_stable_whatever_the_tool_order() -> None:
    from agents.registry import DEFAULT_AGENTS
    from graph import prompts

    spec = DEFAULT_AGENTS["researcher"]
    one = prompts.agent_system(spec.system_prompt, ["web_search", "fetch_webpage"])
    other = prompts.agent_system(spec.system_prompt, ["fetch_webpage", "web_search"])
    assert one == other
    assert prefix_key([SystemMessage(one)]) == prefix_key([SystemMessage(other)])
