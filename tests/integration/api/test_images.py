"""Images against the real embedded llama.cpp fleet, whose vision stand-in has no ``--mmproj``.

The server's own ``/props`` says ``modalities.vision`` is false; a fleet file that claims
``supports_vision = true`` for it (a projector forgotten) still gets no image sent: the
vision task fails with the cause and the fix, and the server's own counters (``/metrics``
prompt tokens and decode calls, ``/slots`` task ids) show it received no request at all.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from endpoints.config import FleetConfig
from graph import arun_goal
from tests.helpers import metric_value, profile_endpoint_spec, write_fleet

pytestmark = pytest.mark.integration

COUNTERS = ("llamacpp:prompt_tokens_total", "llamacpp:n_decode_total")


def _server_counters(base_url: str) -> dict[str, Any]:
    metrics = httpx.get(f"{base_url}/metrics", timeout=5.0).text
    slots = httpx.get(f"{base_url}/slots", timeout=5.0).json()
    return {
        **{name: metric_value(metrics, name) for name in COUNTERS},
        "slot_tasks": [slot.get("id_task") for slot in slots],
    }


def _photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 90, 90)).save(out, format="JPEG")
    return out.getvalue()


async def test_a_server_without_mmproj_is_never_sent_an_image(
    embedded_fleet: FleetConfig, tmp_path: Path, fresh_fleet_state: None
) -> None:
    vision = embedded_fleet.tier("vision").endpoints[0]
    props = httpx.get(f"{vision.base_url}/props", timeout=5.0).json()
    assert props["modalities"]["vision"] is False  # no projector loaded
    # A user who set supports_vision but forgot the projector.
    claimed = {**profile_endpoint_spec("embedded", "vision"), "supports_vision": True}
    fleet = write_fleet(tmp_path / "fleet.toml", {"vision": [claimed]}, others_from="embedded")
    plan: dict[str, list[dict[str, Any]]] = {
        "tasks": [
            {"id": "look", "agent": "vision_analyst", "description": "Is the first layer OK?"},
            {"id": "note", "agent": "researcher", "description": "Name one bed level check"},
        ]
    }
    plan["tasks"][1]["max_tokens"] = 4
    before = _server_counters(vision.base_url)
    result = await arun_goal(
        "Is this first layer OK?",
        fleet=str(fleet),
        plan=plan,
        images=[_photo()],
        voice=False,
        synthesis_max_tokens=8,
    )
    after = _server_counters(vision.base_url)
    look, note = result.tasks
    assert look.status == "failed" and look.images_sent == 0 and look.calls == []
    assert look.error is not None and vision.name in look.error
    assert "modalities.vision = false" in look.error and "--mmproj" in look.error
    assert note.status == "completed" and note.images_sent == 0  # the rest of the run goes on
    assert after == before  # the vision server got no request, with or without the image
