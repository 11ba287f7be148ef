"""Decoding limits: formats, pixels from the header, decoding off the event loop.

Security review finding 6 (issue 24): a 164 KB PNG of 13000x13000 pixels passed the byte
cap and was decoded on the event loop (36.8 s, the service grew to 2.2 GB), and
``Image.open`` accepted TIFF, PSD and EPS (EPS runs Ghostscript where it is installed).
"""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib
from pathlib import Path

import pytest
from PIL import EpsImagePlugin, Image, ImageFile

from endpoints.config import FetchSettings
from graph.context import Context
from graph.images import _loading
from graph.images._loading import (
    DEFAULT_IMAGE_MAX_PIXELS,
    IMAGE_DECODES_AT_ONCE,
    ImageError,
    ImageLimits,
    ImageRecord,
    clean_image,
    load_images,
)

LIMITS = ImageLimits()
NO_RULES = FetchSettings()


def blank_png(width: int, height: int) -> bytes:
    """A valid 1-bit black PNG of any size, built without holding its pixels in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    rows = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed pixels
    body = b"".join(rows.compress(row) for _ in range(height)) + rows.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def small_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(out, format="PNG")
    return out.getvalue()


def tiff() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(out, format="TIFF")
    return out.getvalue()


def eps() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(out, format="EPS")
    return out.getvalue()


def psd() -> bytes:
    """A minimal 8-bit RGB Photoshop file (Pillow reads PSD but cannot write it)."""
    width, height = 8, 8
    header = b"8BPS" + struct.pack(">H6sHIIHH", 1, b"", 3, height, width, 8, 3)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode data, resources, layers
    return header + sections + struct.pack(">H", 0) + bytes(3 * width * height)


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any pixel data is decoded."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError(f"{self.format} pixels were decoded ({self.size})")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.usefixtures("no_decoding")
async def test_a_13000_px_square_png_is_refused_from_its_header_before_decoding(
    tmp_path: Path,
) -> None:
    """Security review finding 6: the 13000x13000 PNG of the review is refused undecoded."""
    raw = blank_png(13000, 13000)
    assert len(raw) < LIMITS.max_bytes  # passes the byte cap: the pixel limit must catch it
    path = tmp_path / "huge.png"
    path.write_bytes(raw)
    with pytest.raises(ImageError) as info:
        await load_images([str(path)], LIMITS, NO_RULES)
    assert info.value.problem == "size" and info.value.index == 0
    message = str(info.value)
    assert "13000x13000" in message and "169,000,000 pixels" in message
    assert f"{DEFAULT_IMAGE_MAX_PIXELS:,}" in message and "image_max_pixels" in message


@pytest.mark.usefixtures("no_decoding")
def test_a_larger_image_than_pillows_own_bomb_limit_gets_the_same_answer() -> None:
    """Security review finding 6: Pillow's DecompressionBombError becomes the pixel refusal."""
    with pytest.raises(ImageError, match="image_max_pixels") as info:
        clean_image(blank_png(20000, 20000), LIMITS)
    assert info.value.problem == "size"


def test_the_pixel_limit_is_a_setting_of_the_run() -> None:
    """Security review finding 6: a smaller ``max_pixels`` refuses what the default takes."""
    raw = blank_png(300, 200)
    assert clean_image(raw, LIMITS).width == 300
    with pytest.raises(ImageError, match="300x200 = 60,000 pixels; the limit is 50,000"):
        clean_image(raw, ImageLimits(max_pixels=50_000))
    assert Context(image_max_pixels=50_000).image_limits().max_pixels == 50_000
    assert Context().image_limits().max_pixels == DEFAULT_IMAGE_MAX_PIXELS


async def test_a_pil_image_over_the_pixel_limit_is_refused_before_it_is_encoded() -> None:
    """Security review finding 6: a PIL image is measured before it is saved and decoded."""
    image = Image.new("L", (400, 300))
    with pytest.raises(ImageError, match="400x300") as info:
        await load_images([image], ImageLimits(max_pixels=100_000), NO_RULES)
    assert info.value.problem == "size"


@pytest.mark.parametrize("make", [tiff, psd, eps], ids=["TIFF", "PSD", "EPS"])
def test_tiff_psd_and_eps_are_refused_as_an_unsupported_type(
    make: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Security review finding 6: only PNG, JPEG, WebP and GIF are opened at all."""
    assert callable(make)
    raw: bytes = make()
    with Image.open(io.BytesIO(raw)) as opened:  # Pillow itself would read it
        assert opened.format in {"TIFF", "PSD", "EPS"}
    ghostscript_runs: list[object] = []

    def ghostscript(*args: object, **kwargs: object) -> Image.core.ImagingCore:
        ghostscript_runs.append(args)
        raise OSError("Ghostscript stand-in")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    with pytest.raises(ImageError, match="JPEG, PNG, WebP or GIF") as info:
        clean_image(raw, LIMITS, source="upload.bin")
    assert info.value.problem == "type"
    assert ghostscript_runs == []


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_the_documented_formats_are_still_read(fmt: str) -> None:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(out, format=fmt)
    record = clean_image(out.getvalue(), LIMITS)
    assert record.original_format == fmt and (record.width, record.height) == (40, 30)


async def test_images_are_decoded_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """Security review finding 6: decoding never blocks the event loop's thread."""
    threads: list[threading.Thread] = []

    def spy(raw: bytes, limits: ImageLimits, **kwargs: object) -> ImageRecord:
        threads.append(threading.current_thread())
        return clean_image(raw, limits, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_loading, "clean_image", spy)
    image = Image.new("RGB", (20, 20))
    await load_images([small_png(), image], LIMITS, NO_RULES)
    assert len(threads) == 2
    assert all(thread is not threading.main_thread() for thread in threads)


async def test_decodes_at_once_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Security review finding 6: at most IMAGE_DECODES_AT_ONCE decodes run together."""
    lock = threading.Lock()
    running = [0]
    peak = [0]
    release = threading.Event()

    def slow(raw: bytes, limits: ImageLimits, **kwargs: object) -> ImageRecord:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        release.wait(timeout=30)
        with lock:
            running[0] -= 1
        return clean_image(raw, limits, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_loading, "clean_image", slow)
    loads = [asyncio.create_task(load_images([small_png()], LIMITS, NO_RULES)) for _ in range(4)]
    for _ in range(3000):  # until the first decodes have started
        if running[0] >= IMAGE_DECODES_AT_ONCE:
            break
        await asyncio.sleep(0.01)
    for _ in range(10):  # give a third decode every chance to start
        await asyncio.sleep(0.01)
    assert running[0] == IMAGE_DECODES_AT_ONCE
    release.set()
    await asyncio.gather(*loads)
    assert peak[0] == IMAGE_DECODES_AT_ONCE


async def test_a_cancelled_load_keeps_its_place_until_its_decode_has_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Security review finding 6: cancelling a request does not free its decode's place early."""
    started = threading.Event()
    release = threading.Event()
    starts: list[int] = []

    def slow(raw: bytes, limits: ImageLimits, **kwargs: object) -> ImageRecord:
        starts.append(1)
        started.set()
        release.wait(timeout=30)
        return clean_image(raw, limits, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_loading, "clean_image", slow)
    first = [
        asyncio.create_task(load_images([small_png()], LIMITS, NO_RULES))
        for _ in range(IMAGE_DECODES_AT_ONCE)
    ]
    while len(starts) < IMAGE_DECODES_AT_ONCE:
        await asyncio.sleep(0.01)
    for task in first:
        task.cancel()
    late = asyncio.create_task(load_images([small_png()], LIMITS, NO_RULES))
    for _ in range(10):
        await asyncio.sleep(0.01)
    assert len(starts) == IMAGE_DECODES_AT_ONCE  # the cancelled decodes still hold their places
    release.set()
    await late
    assert len(starts) == IMAGE_DECODES_AT_ONCE + 1
    for task in first:
        with pytest.raises(asyncio.CancelledError):
            await task
