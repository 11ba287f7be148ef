"""The query routes: an image is fetched and decoded only for a run that was admitted."""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import pytest
from PIL import Image

import kitty.service._routes
from kitty.service import ServiceSettings, create_app
from tests.conftest import FakeFleet
from tests.fake_chat import Reply
from tests.helpers import asgi_client, until

PLAN = {"tasks": [{"id": "a", "agent": "coder", "description": "Hold the place."}]}


def png_data_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_a_refused_run_never_loads_its_images(
    fake_fleet: FakeFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security review finding 6: images were fetched and decoded before admission, so
    requests refused with 429 still cost a fetch and a decode each."""
    loaded: list[int] = []
    real = kitty.service._routes.load_request_images

    async def counted(images: list[str], *args: Any) -> Any:
        loaded.append(len(images))
        return await real(images, *args)

    monkeypatch.setattr(kitty.service._routes, "load_request_images", counted)
    fake_fleet.chat.script(Reply("slow", delay_s=30), phase="task")
    app = create_app(
        ServiceSettings(
            fleet=fake_fleet.path, start_embedded=False, api_token=None, max_concurrent_runs=1
        )
    )
    body = {"query": "Look", "max_tasks": 1, "voice_mode": False, "plan": PLAN}
    async with asgi_client(app, timeout_s=60) as http:
        holding = asyncio.create_task(http.post("/api/query/parallel", json=body))
        await until(lambda: len(fake_fleet.chat.calls) == 1)
        refused = [
            await http.post(path, json=body | {"images": [png_data_url()]})
            for path in ("/api/query/parallel", "/api/query/parallel/stream")
        ]
        holding.cancel()
    assert [r.status_code for r in refused] == [429, 429]
    assert loaded == [0]  # only the admitted run (no images) reached the loader


async def test_the_service_pixel_limit_applies_to_request_images(fake_fleet: FakeFleet) -> None:
    app = create_app(
        ServiceSettings(
            fleet=fake_fleet.path,
            start_embedded=False,
            api_token=None,
            context_overrides={"image_max_pixels": 4096},  # 64 x 64
        )
    )
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100), "red").save(buffer, format="PNG")
    image = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    body = {"query": "Look", "max_tasks": 1, "voice_mode": False, "plan": PLAN, "images": [image]}
    async with asgi_client(app) as http:
        answer = await http.post("/api/query/parallel", json=body)
    assert answer.status_code == 413, answer.text
    assert "image_max_pixels" in answer.json()["error"]
