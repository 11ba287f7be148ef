"""Images on the wire: ``image_url`` parts to a seeing llama.cpp, ``images`` to Ollama, none blind.

The llama.cpp side is a fake llama-server (``tests/fakes/vision_llama.py``) whose ``/props``
reports ``modalities.vision`` as a real one does with or without ``--mmproj``; the Ollama
side is the fake Ollama daemon, whose recorded ``/api/chat`` bodies must carry the images
in the documented ``messages[].images`` field (base64, no ``data:`` prefix). The HTTP
service answers each bad image with a 4xx naming it.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from endpoints.runtime import process_runtime
from graph import arun_goal
from graph.images._loading import ImageLimits, clean_image
from kitty.service import ServiceSettings, create_app
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.vision_llama import FakeVisionLlama, image_parts
from tests.helpers import FAST, TIERS, endpoint_spec, offline_fleet, write_fleet

GOAL = "Is this first layer OK?"


def photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (300, 200), (180, 120, 60)).save(out, format="JPEG")
    return out.getvalue()


pytestmark = pytest.mark.usefixtures("fresh_fleet_state")  # no vision answer left over


def _spec(name: str, server: FakeVisionLlama, **fields: Any) -> dict[str, Any]:
    return endpoint_spec(name, server.port, ctx=8192, **fields)


def _requests_with_images(server: FakeVisionLlama) -> list[dict[str, Any]]:
    return [body for body in server.chat_requests if image_parts(body)]


async def test_a_seeing_endpoint_gets_the_image_and_the_planner_is_told(tmp_path: Path) -> None:
    plan = {
        "tasks": [
            {"id": "task_1", "agent": "vision_analyst", "description": "Inspect the layer"},
            {"id": "task_2", "agent": "researcher", "description": "List first layer faults"},
        ]
    }
    with FakeVisionLlama(vision=True) as seeing, FakeVisionLlama(vision=False, plan=plan) as blind:
        tiers = {t: [_spec(f"blind-{t}", blind)] for t in TIERS if t != "vision"}
        tiers["vision"] = [_spec("gemma-vision", seeing, supports_vision=True)]
        fleet = write_fleet(tmp_path / "fleet.toml", tiers)
        result = await arun_goal(GOAL, fleet=str(fleet), images=[photo()], **FAST)
    record = clean_image(photo(), ImageLimits())
    planner = next(b for b in blind.chat_requests if "Decompose the goal" in str(b["messages"]))
    assert "1 image is attached to this goal" in str(planner["messages"])
    assert record.short_hash in str(planner["messages"])
    vision, research = result.tasks
    assert vision.status == "completed", vision.error
    assert vision.endpoint == "gemma-vision" and vision.images_sent == 1
    assert research.images_sent == 0  # it does not look at images: text only
    [sent] = _requests_with_images(seeing)
    [part] = image_parts(sent)
    assert part["image_url"]["url"] == record.data_url()
    assert record.short_hash in str(sent["messages"])  # the agent is told what it carries
    assert _requests_with_images(blind) == []


async def test_with_no_seeing_endpoint_the_task_fails_naming_them_and_the_fix(
    tmp_path: Path,
) -> None:
    plan = {"tasks": [{"id": "look", "agent": "vision_analyst", "description": "Check it"}]}
    with FakeVisionLlama(vision=False) as blind:
        tiers = {t: [_spec(f"blind-{t}", blind)] for t in TIERS}
        # The fleet file claims vision; the server (no --mmproj) says otherwise.
        tiers["vision"] = [_spec("stand-in-vision", blind, supports_vision=True)]
        fleet = write_fleet(tmp_path / "fleet.toml", tiers)
        result = await arun_goal(GOAL, fleet=str(fleet), plan=plan, images=[photo()], **FAST)
        task_requests = [b for b in blind.chat_requests if "Your task (look)" in str(b)]
    [task] = result.tasks
    assert task.status == "failed" and task.output == "" and task.images_sent == 0
    assert task.error is not None
    assert "stand-in-vision" in task.error and "modalities.vision = false" in task.error
    assert "--mmproj" in task.error and "launch.mmproj" in task.error
    assert "supports_vision = true" in task.error
    assert task_requests == [] and _requests_with_images(blind) == []


async def test_a_blind_primary_is_skipped_and_a_seeing_fallback_tier_used(tmp_path: Path) -> None:
    plan = {
        "tasks": [
            {"id": "dims", "agent": "coder", "description": "Read the sizes off the screenshot"}
        ]
    }
    with FakeVisionLlama(vision=True) as seeing, FakeVisionLlama(vision=False) as blind:
        tiers = {t: [_spec(f"blind-{t}", blind)] for t in TIERS if t != "tools"}
        tiers["tools"] = [_spec("seeing-tools", seeing, supports_vision=True)]
        fleet = write_fleet(tmp_path / "fleet.toml", tiers)
        result = await arun_goal(GOAL, fleet=str(fleet), plan=plan, images=[photo()], **FAST)
    [task] = result.tasks
    assert task.status == "completed", task.error
    assert task.endpoint == "seeing-tools" and task.fallback_used and task.images_sent == 1
    assert [c.endpoint for c in task.calls] == ["seeing-tools"]  # coder tier never called
    assert _requests_with_images(blind) == []
    assert len(_requests_with_images(seeing)) == 1


async def test_ollama_gets_the_image_in_the_documented_images_field(tmp_path: Path) -> None:
    model = "gemma3:4b"
    plan = {"tasks": [{"id": "look", "agent": "vision_analyst", "description": "Check it"}]}
    with FakeOllama(model=model) as fake:
        spec = endpoint_spec("ollama", fake.port, kind="ollama", model=model, ctx=8192)
        tiers = {t: [spec] for t in TIERS if t != "vision"}
        tiers["vision"] = [{**spec, "name": "ollama-vision", "supports_vision": True}]
        fleet = write_fleet(tmp_path / "fleet.toml", tiers)
        result = await arun_goal(GOAL, fleet=str(fleet), plan=plan, images=[photo()], **FAST)
        bodies = [b for b in fake.chat_requests if b and b.get("messages")]
    [task] = result.tasks
    assert task.status == "completed", task.error
    assert task.endpoint == "ollama-vision" and task.images_sent == 1
    record = clean_image(photo(), ImageLimits())
    with_images = [m for b in bodies for m in b["messages"] if m.get("images")]
    [message] = with_images
    assert message["role"] == "user"
    assert message["images"] == [base64.b64encode(record.data).decode("ascii")]
    assert isinstance(message["content"], str) and "data:image" not in message["content"]


def _png_url() -> str:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.mark.parametrize(
    ("images", "status", "field", "says"),
    [
        (
            ["data:image/jpeg;base64," + base64.b64encode(b"plain text" * 9).decode()],
            415,
            "images.0",
            "not an image by its content",
        ),
        (
            ["data:image/png;base64," + base64.b64encode(b"\0" * (20 * 1024 * 1024)).decode()],
            413,
            "images.0",
            "the limit is 8.0 MB",
        ),
        ([_png_url()] * 5, 422, "images", "at most 4"),
        (["https://photos.blocked.example/p.jpg"], 422, "images.0", "blocked_hosts"),
        (["/etc/hostname"], 415, "images.0", "a file path is not read here"),
    ],
    ids=["not-an-image", "20-mb", "fifth-image", "blocked-host", "server-path"],
)
async def test_the_service_answers_each_bad_image_with_a_4xx(
    tmp_path: Path, images: list[str], status: int, field: str, says: str
) -> None:
    fleet = offline_fleet(tmp_path)
    text = fleet.read_text() + '\n[fetch]\nblocked_hosts = [".blocked.example"]\n'
    fleet.write_text(text)
    app = create_app(
        ServiceSettings(
            fleet=str(fleet), start_embedded=False, api_token=None, max_body_bytes=64 << 20
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for path in ("/api/query/parallel", "/api/query/parallel/stream"):
            response = await client.post(path, json={"query": GOAL, "images": images})
            assert response.status_code == status, response.text
            body = response.json()
            assert body["field"] == field and says in body["error"]


async def test_a_resumed_run_reads_its_images_from_the_checkpoint(tmp_path: Path) -> None:
    from graph import astream_goal
    from graph.images._loading import REMEMBERED_IMAGES
    from graph.planning import PlanApproval

    plan = {"tasks": [{"id": "look", "agent": "vision_analyst", "description": "Check it"}]}
    with FakeVisionLlama(vision=True) as seeing:
        tiers = {t: [_spec(f"seeing-{t}", seeing, supports_vision=True)] for t in TIERS}
        fleet = write_fleet(tmp_path / "fleet.toml", tiers)
        events = [
            e
            async for e in astream_goal(
                GOAL, fleet=str(fleet), plan=plan, images=[photo()], approve_plan=True, **FAST
            )
        ]
        approval = events[-1]
        assert isinstance(approval, PlanApproval) and seeing.chat_requests == []
        # As in a new process: only the checkpoint has them.
        process_runtime().get(REMEMBERED_IMAGES).clear()
        result = await arun_goal(
            None, thread_id=approval.thread_id, plan_decision={"action": "approve"}, **FAST
        )
    [task] = result.tasks
    assert task.status == "completed" and task.images_sent == 1, task.error
    [sent] = _requests_with_images(seeing)
    assert (
        image_parts(sent)[0]["image_url"]["url"] == clean_image(photo(), ImageLimits()).data_url()
    )


async def test_images_take_their_share_of_the_context_before_the_text(tmp_path: Path) -> None:
    plan = {"tasks": [{"id": "look", "agent": "vision_analyst", "description": "Check it"}]}
    other = io.BytesIO()
    Image.new("RGB", (300, 200), (10, 20, 30)).save(other, format="JPEG")
    with FakeVisionLlama(vision=True) as seeing:
        tiers = {t: [_spec(f"seeing-{t}", seeing)] for t in TIERS if t != "vision"}
        # Two images of 1024 tokens each leave no room in a 2048-token context.
        small = endpoint_spec("small-vision", seeing.port, ctx=2048, supports_vision=True)
        tiers["vision"] = [small]
        fleet = write_fleet(tmp_path / "fleet.toml", tiers)
        images = [photo(), other.getvalue()]
        result = await arun_goal(GOAL, fleet=str(fleet), plan=plan, images=images, **FAST)
    [task] = result.tasks
    assert task.status == "failed" and task.images_sent == 0
    assert task.error is not None and "too little of the 2048-token context" in task.error
    assert _requests_with_images(seeing) == []
