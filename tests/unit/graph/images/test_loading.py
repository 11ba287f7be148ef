"""Image hygiene: checked by content, capped, downscaled, EXIF gone, URLs under [fetch] rules.

Covers the bad inputs of issue 14 from Python and the CLI (the HTTP answers are in
``test_images_wire.py``): bytes that are no image behind a ``.jpg`` name, a 20 MB image,
a fifth image, a URL to a blocked host.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from typer.testing import CliRunner

from endpoints.config import FetchSettings
from graph import arun_goal, prompts
from graph.images._loading import ImageError, ImageLimits, clean_image, load_images
from tests.conftest import FakeFleet

LIMITS = ImageLimits()
NO_RULES = FetchSettings()


def jpeg_with_gps(size: tuple[int, int] = (2000, 1500)) -> bytes:
    """A phone-like JPEG whose EXIF carries a camera make and a GPS position."""
    image = Image.new("RGB", size, (200, 80, 40))
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 36.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    return out.getvalue()


def small_png(color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(out, format="PNG")
    return out.getvalue()


def test_gps_exif_is_stripped_and_the_image_downscaled() -> None:
    raw = jpeg_with_gps()
    with Image.open(io.BytesIO(raw)) as original:  # the test image really has GPS data
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    record = clean_image(raw, LIMITS, source="photo.jpg")
    with Image.open(io.BytesIO(record.data)) as cleaned:
        assert not cleaned.getexif()
        assert not cleaned.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert "exif" not in cleaned.info
        assert max(cleaned.size) == LIMITS.max_side == 1024
    assert b"PhoneMaker" not in record.data and b"Exif" not in record.data
    assert (record.width, record.height) == (1024, 768)
    assert record.mime == "image/jpeg" and record.original_format == "JPEG"


def test_the_name_is_the_hash_of_the_cleaned_bytes_and_repeats_are_kept_once() -> None:
    import asyncio
    import hashlib

    png = small_png()
    records = asyncio.run(load_images([png, png, small_png((1, 2, 3))], LIMITS, NO_RULES))
    assert len(records) == 2
    assert records[0].sha256 == hashlib.sha256(records[0].data).hexdigest()
    assert records[0].data_url().startswith("data:image/jpeg;base64,")


def test_bytes_that_are_no_image_are_refused_whatever_the_file_is_called(tmp_path: Path) -> None:
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"\xff\xd8\xff\xe0 this is a text file pretending to be a JPEG" * 20)
    with pytest.raises(ImageError, match="not an image by its content") as info:
        import asyncio

        asyncio.run(load_images([str(fake)], LIMITS, NO_RULES))
    assert info.value.problem == "type" and "photo.jpg" in str(info.value)


async def test_a_20_mb_image_is_refused_before_decoding() -> None:
    big = small_png() + b"\0" * (20 * 1024 * 1024)
    with pytest.raises(ImageError, match=r"20\.0 MB; the limit is 8\.0 MB") as info:
        await load_images([big], LIMITS, NO_RULES)
    assert info.value.problem == "size"


async def test_a_fifth_image_is_refused() -> None:
    with pytest.raises(ImageError, match="5 images attached; a run takes at most 4") as info:
        await load_images([small_png()] * 5, LIMITS, NO_RULES)
    assert info.value.problem == "count"


async def test_a_url_to_a_blocked_host_is_refused_by_the_fetch_rules() -> None:
    rules = FetchSettings(blocked_hosts=[".blocked.example"])
    with pytest.raises(ImageError, match="blocked by \\[fetch\\] blocked_hosts") as info:
        await load_images(["https://cdn.blocked.example/photo.jpg"], LIMITS, rules)
    assert info.value.problem == "url"
    with pytest.raises(ImageError, match="loopback address"):
        await load_images(["http://127.0.0.1:9/photo.jpg"], LIMITS, NO_RULES)


async def test_data_urls_are_read_and_paths_refused_where_paths_are_not_allowed(
    tmp_path: Path,
) -> None:
    url = "data:image/png;base64," + base64.b64encode(small_png()).decode()
    [record] = await load_images([url], LIMITS, NO_RULES, allow_paths=False)
    assert record.source == "data URL"
    path = tmp_path / "a.png"
    path.write_bytes(small_png())
    with pytest.raises(ImageError, match="a file path is not read here"):
        await load_images([str(path)], LIMITS, NO_RULES, allow_paths=False)


def test_a_pil_image_with_alpha_stays_png() -> None:
    import asyncio

    image = Image.new("RGBA", (40, 30), (0, 0, 255, 128))
    [record] = asyncio.run(load_images([image], LIMITS, NO_RULES))
    assert record.mime == "image/png" and (record.width, record.height) == (40, 30)


async def test_the_python_api_refuses_bad_images_before_any_model_call(
    fake_fleet: FakeFleet, tmp_path: Path
) -> None:
    fake = tmp_path / "shot.png"
    fake.write_bytes(b"GIF89a? no, just words")
    with pytest.raises(ImageError, match=r"image 1 \(shot.png\) is not an image"):
        await arun_goal("Is this first layer OK?", fleet=fake_fleet.path, images=[fake])
    with pytest.raises(ImageError, match="at most 1"):
        await arun_goal(
            "Is this first layer OK?",
            fleet=fake_fleet.path,
            images=[small_png(), small_png((9, 9, 9))],
            max_images=1,
        )
    assert fake_fleet.chat.calls == []


def test_the_cli_prints_one_clear_line_for_a_bad_image(tmp_path: Path) -> None:
    from kitty.cli.main import app
    from tests.helpers import offline_fleet

    fleet = offline_fleet(tmp_path)
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"not a photo at all" * 10)
    result = CliRunner().invoke(
        app, ["run", "Is this first layer OK?", "--fleet", str(fleet), "--image", str(fake)]
    )
    assert result.exit_code == 2, result.output
    assert "not an image by its content" in result.output and "photo.jpg" in result.output
    missing = CliRunner().invoke(
        app, ["run", "goal", "--fleet", str(fleet), "--image", str(tmp_path / "nope.jpg")]
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_the_planner_is_told_how_many_images_are_attached_and_which() -> None:
    from agents.registry import DEFAULT_AGENTS

    record = clean_image(small_png(), LIMITS)
    text = prompts.planner_user(
        "Is this first layer OK?", list(DEFAULT_AGENTS.values()), 4, {}, [record.describe()]
    )
    assert "1 image is attached to this goal" in text
    assert record.short_hash in text and "image/jpeg 64x48 px" in text
    assert "'vision_analyst'" in text
    assert text.endswith("Goal: Is this first layer OK?")  # the goal stays last
    without = prompts.planner_user("g", list(DEFAULT_AGENTS.values()), 4, {})
    assert "attached" not in without


async def test_a_plan_that_ignores_the_images_gets_a_vision_task(fake_fleet: FakeFleet) -> None:
    import json

    plan = {"tasks": [{"id": "task_1", "agent": "researcher", "description": "Bed levelling"}]}
    fake_fleet.chat.script(json.dumps(plan), phase="planner")
    result = await arun_goal(
        "Is this first layer OK?",
        fleet=fake_fleet.path,
        images=[small_png()],
        max_tasks=3,
        voice=False,
    )
    [planner] = fake_fleet.chat.calls_for(phase="planner")
    assert "2 or fewer specific subtasks" in planner.prompt  # one kept free for vision
    assert "1 image is attached to this goal" in planner.prompt
    assert [(t.id, t.agent) for t in result.plan.tasks] == [
        ("task_1", "researcher"),
        ("task_2", "vision_analyst"),
    ]
    assert any("added task_2 (vision_analyst)" in w for w in result.warnings)
    research, vision = result.tasks
    # The offline fleet has no endpoint that can see: the task fails, the other one runs.
    assert research.status == "completed" and vision.status == "failed"
    assert vision.error is not None and "supports_vision = false" in vision.error
    assert fake_fleet.chat.calls_for(task="task_2") == []
