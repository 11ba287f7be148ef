"""The OpenAI-compatible door, live: the official ``openai`` client against ``kitty-orch serve``.

The service runs on the embedded fleet (real llama.cpp, SmolLM2) with a token, one run
at a time (so a held run makes the next request a 429) and small answer caps; every run
asks for one task (``max_tasks`` in ``metadata``) under a 10 s task-phase deadline, so
each takes seconds.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import (
    ChatCompletionContentPartImageParam,
    ChatCompletionContentPartParam,
    ChatCompletionUserMessageParam,
)
from PIL import Image

from endpoints.config import FleetConfig
from tests.helpers import free_port, kitty_command, stop_process, wait_until_serving

pytestmark = pytest.mark.integration

TOKEN = "openai-door-token"
MODEL = "kitty-orchestrator"
ONE_TASK = {"max_tasks": "1"}  # OpenAI's metadata values are strings
SHORT_GOAL = "Name one sorting algorithm."
LONG_GOAL = "Write a very long, detailed essay on the history of sorting algorithms."


@dataclass
class LiveService:
    base_url: str
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"


@pytest.fixture(scope="module")
def service(
    embedded_fleet: FleetConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    """``kitty-orch serve`` on a free loopback port: a token, one run at a time, small caps."""
    port = free_port()
    log = tmp_path_factory.mktemp("openai-door") / "serve.log"
    env = {**os.environ, "KITTY_API_TOKEN": TOKEN, "KITTY_FLEET": "embedded"}
    command = kitty_command(
        "serve",
        "--port",
        str(port),
        "--max-concurrent-runs",
        "1",
        "--set",
        "synthesis_max_tokens=16",
        "--set",
        "planner_max_tokens=256",
        # SmolLM2 may ramble to an agent's 512-token cap (half a minute on a busy CPU):
        # a task still running then fails with a deadline error and the run goes on.
        "--set",
        "run_deadline_s=10",
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    live = LiveService(f"http://127.0.0.1:{port}", log, process)
    try:
        wait_until_serving(f"{live.base_url}/healthz", process, log, name="service")
        yield live
    finally:
        stop_process(process, timeout_s=15)


def sync_client(service: LiveService, key: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.v1, api_key=key, max_retries=0, timeout=300)


def async_client(service: LiveService) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=service.v1, api_key=TOKEN, max_retries=0, timeout=300)


def slots_held(service: LiveService) -> int:
    """Slots held plus tasks queued, over the service's limiters (``GET /api/endpoints``)."""
    response = httpx.get(
        f"{service.base_url}/api/endpoints",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    response.raise_for_status()
    limiters = [e["limiter"] for e in response.json()["endpoints"] if e["limiter"]]
    return sum(item["in_use"] + item["queued"] for item in limiters)


async def until_true(check: Any, what: str, service: LiveService, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout_s:g} s:\n{service.log.read_text()[-3000:]}")
        await asyncio.sleep(0.1)


def extra(model: Any, name: str) -> Any:
    """A field OpenAI's types do not declare (``reasoning_content``, ``x_kitty``)."""
    return (getattr(model, "model_extra", None) or {}).get(name)


def png_part() -> ChatCompletionContentPartImageParam:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(out, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    return {"type": "image_url", "image_url": {"url": url}}


def test_models_and_a_completion_with_usage_and_the_thread_header(service: LiveService) -> None:
    client = sync_client(service)

    models = [model.id for model in client.models.list()]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": SHORT_GOAL}],
        metadata=ONE_TASK,
        max_tokens=16,
    )
    completion = raw.parse()

    assert models == [MODEL]
    assert completion.object == "chat.completion" and completion.model == MODEL
    choice = completion.choices[0]
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    assert "Plan" in extra(choice.message, "reasoning_content")
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    x_kitty = extra(completion, "x_kitty")
    assert raw.headers["x-kitty-thread-id"] == x_kitty["thread_id"]
    assert raw.headers["x-kitty-run-id"] == x_kitty["run_id"]
    assert x_kitty["answer"] == choice.message.content


async def test_a_streamed_run_sends_progress_the_answer_and_usage(service: LiveService) -> None:
    client = async_client(service)
    reasoning: list[str] = []
    content: list[str] = []
    last: Any = None

    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "I am sorting a list of 10 numbers."},
            {"role": "assistant", "content": "Insertion sort suits a list that short."},
            {"role": "user", "content": SHORT_GOAL},
        ],
        metadata=ONE_TASK,
        max_tokens=16,
        stream=True,
    )
    async for chunk in stream:
        last = chunk
        for choice in chunk.choices:
            if piece := extra(choice.delta, "reasoning_content"):
                assert not content, "progress after the answer started"
                reasoning.append(piece)
            if choice.delta.content:
                content.append(choice.delta.content)

    progress = "".join(reasoning)
    assert "Plan in " in progress and "- task_1 " in progress
    assert "task_1 " in progress and "started on " in progress and " #" in progress  # slot
    assert "completed in " in progress or "failed: " in progress  # within the run deadline
    assert len(content) > 1  # token by token, not one block
    assert last.choices[0].finish_reason in ("stop", "length")
    assert last.usage is not None and last.usage.total_tokens > 0
    x_kitty = extra(last, "x_kitty")
    assert "".join(content) == x_kitty["answer"]
    assert x_kitty["thread_id"] and x_kitty["run_id"]


async def test_a_client_that_leaves_mid_stream_frees_the_runs_slots(
    service: LiveService,
) -> None:
    client = async_client(service)
    assert slots_held(service) == 0

    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": LONG_GOAL}],
        metadata=ONE_TASK,
        stream=True,
    )
    await until_true(lambda: slots_held(service) > 0, "the run never took a slot", service)
    await stream.close()  # the client leaves

    await until_true(lambda: slots_held(service) == 0, "the slots were not freed", service)
    await until_true(
        lambda: "stream closed before the run ended; run cancelled" in service.log.read_text(),
        "the run was not cancelled",
        service,
    )
    assert [model.id async for model in client.models.list()] == [MODEL]  # still serving


async def test_a_second_run_while_one_holds_the_only_place_is_a_429(
    service: LiveService,
) -> None:
    client = async_client(service)
    held = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": LONG_GOAL}],
        metadata=ONE_TASK,
        stream=True,
    )
    try:
        await anext(aiter(held))  # admitted: the role chunk came
        with pytest.raises(openai.RateLimitError) as refused:
            sync_client(service).chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": SHORT_GOAL}]
            )
    finally:
        await held.close()

    assert refused.value.status_code == 429
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert "--max-concurrent-runs" in refused.value.message
    await until_true(lambda: slots_held(service) == 0, "the held run kept its slots", service)


def test_errors_arrive_as_the_clients_own_exceptions(service: LiveService) -> None:
    client = sync_client(service)
    user: ChatCompletionUserMessageParam = {"role": "user", "content": SHORT_GOAL}
    parts: list[ChatCompletionContentPartParam] = [{"type": "text", "text": "Compare"}]
    many_images: ChatCompletionUserMessageParam = {
        "role": "user",
        "content": parts + [png_part()] * 5,
    }

    with pytest.raises(openai.AuthenticationError):
        sync_client(service, key="wrong-key").models.list()
    with pytest.raises(openai.UnprocessableEntityError) as too_long:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "12345 " * 1300}]
        )
    with pytest.raises(openai.UnprocessableEntityError) as images:
        client.chat.completions.create(model=MODEL, messages=[many_images])
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(
            model=MODEL, messages=[user], extra_body={"frobnicate": True}
        )
    with pytest.raises(openai.NotFoundError) as no_model:
        client.chat.completions.create(model="gpt-4o", messages=[user])

    assert too_long.value.code == "context_length_exceeded"
    assert "smallest slot context" in too_long.value.message
    assert images.value.code == "invalid_image" and "5 images" in images.value.message
    assert unknown.value.param == "frobnicate" and "'frobnicate'" in unknown.value.message
    assert no_model.value.code == "model_not_found"
