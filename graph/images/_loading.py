"""Images attached to a run: loaded from anything, checked by content, cleaned, kept by hash.

An image enters as a file path, raw bytes, a ``data:`` URL, an ``http(s)`` URL or a PIL
image, and leaves as an :class:`ImageRecord`: its pixels re-encoded without any metadata
(EXIF, GPS, XMP, ICC and text chunks are dropped: a phone photo's location never reaches a
model or a checkpoint), turned upright first (EXIF orientation), downscaled so its longer
side is at most ``max_side`` pixels, and named by the sha256 of the cleaned bytes.

The checks, in order: at most ``max_images`` per run; at most ``max_bytes`` per image as
received (before decoding, so a huge upload is refused without being decoded); the
content must be a PNG, JPEG, WebP or GIF by its header (Pillow opens no other format: no
TIFF, PSD or EPS, whose reader runs Ghostscript); at most ``max_pixels`` by the header's
width and height, before any pixel is decoded (a 164 KB PNG can claim 13000x13000 pixels
and take gigabytes to decode); then it must decode (``Image.open`` + ``verify``): a name or
a claimed type counts for nothing. A URL is fetched under the fleet file's ``[fetch]`` host
rules (:func:`kitty.tools._fetch.fetch_bytes`).

Decoding runs in a worker thread, never on the event loop, and at most
:data:`IMAGE_DECODES_AT_ONCE` decodes run at once on a loop (the rest wait their turn).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field

from endpoints.config import FetchSettings
from endpoints.runtime import RuntimeSlot, process_runtime
from kitty.errors import ToolError, UserError

__all__ = [
    "DEFAULT_IMAGE_MAX_BYTES",
    "DEFAULT_IMAGE_MAX_PIXELS",
    "DEFAULT_IMAGE_MAX_SIDE",
    "DEFAULT_MAX_IMAGES",
    "IMAGE_DECODES_AT_ONCE",
    "IMAGE_FORMATS",
    "ImageError",
    "ImageLimits",
    "ImageRecord",
    "ImageSource",
    "clean_image",
    "load_image",
    "load_images",
    "remember",
    "remembered",
]

DEFAULT_IMAGE_MAX_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_IMAGES = 4
DEFAULT_IMAGE_MAX_SIDE = 1024
# 40 megapixels: an 8K screenshot (7680x4320) or a 36 MP camera's photo; one decode of it
# takes about 120 MB per copy of its pixels (RGB).
DEFAULT_IMAGE_MAX_PIXELS = 40_000_000
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
"""The formats Pillow may open (its ids); everything else is "not an image"."""
IMAGE_DECODES_AT_ONCE = 2
"""Most images decoded at the same time on one event loop: bounds the memory and CPU that
concurrent requests can spend on decoding (each decode at most ``max_pixels``)."""
JPEG_QUALITY = 90
# Records kept in this process for the agent tasks of runs under way (a resumed run in a
# new process reads them from its checkpoint instead).
_REMEMBERED_MAX = 64

ImageSource = str | os.PathLike[str] | bytes | bytearray | Image.Image
"""What an image may be given as: path, ``data:``/``http(s)`` URL, bytes or a PIL image."""

ImageProblem = Literal["type", "size", "count", "url", "missing"]


class ImageError(UserError):
    """An attached image cannot be used; the message says which one, why and what to do.

    Attributes:
        problem: ``type`` (not a PNG, JPEG, WebP or GIF by content), ``size`` (over the
            byte cap or the pixel cap),
            ``count`` (more images than the run allows), ``url`` (refused or failed
            fetch) or ``missing`` (no such file).
        index: Position of the image in the list given (``None`` for ``count``).
    """

    def __init__(self, message: str, problem: ImageProblem, index: int | None = None) -> None:
        super().__init__(message)
        self.problem: ImageProblem = problem
        self.index = index


@dataclass(frozen=True)
class ImageLimits:
    """Caps and target size of a run's images (from :class:`~graph.context.Context`).

    Attributes:
        max_bytes: Largest image as received, in bytes.
        max_images: Most images one run may carry.
        max_side: Longest side an image is downscaled to, in pixels.
        max_pixels: Most pixels (width x height, from the file's header) an image may
            have to be decoded at all.
    """

    max_bytes: int = DEFAULT_IMAGE_MAX_BYTES
    max_images: int = DEFAULT_MAX_IMAGES
    max_side: int = DEFAULT_IMAGE_MAX_SIDE
    max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS


class ImageRecord(BaseModel):
    """One cleaned image of a run, stored once in its state and named by content hash.

    Attributes:
        sha256: Hex sha256 of :attr:`data` (the cleaned bytes): the image's name.
        mime: ``image/jpeg`` or ``image/png`` (what :attr:`data` is).
        width: Pixels, after downscaling.
        height: Pixels, after downscaling.
        data: The cleaned image (no metadata).
        source: Where it came from, for messages (a file name, a URL, ``bytes``).
        original_format: The format it arrived in (``JPEG``, ``PNG``, ``WEBP``...).
    """

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    sha256: str = Field(min_length=64, max_length=64)
    mime: Literal["image/jpeg", "image/png"]
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    data: bytes = Field(repr=False)
    source: str = ""
    original_format: str = ""

    @property
    def short_hash(self) -> str:
        """The first 12 hex digits of the hash (enough to tell a run's images apart)."""
        return self.sha256[:12]

    def data_url(self) -> str:
        """The image as a ``data:`` URL (OpenAI ``image_url`` content parts)."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"

    def describe(self) -> str:
        """One line for prompts and logs: hash prefix, type, pixels, size."""
        kib = max(len(self.data) // 1024, 1)
        return f"{self.short_hash} {self.mime} {self.width}x{self.height} px {kib} KB"


def _too_big(size: int, limits: ImageLimits, label: str, index: int) -> ImageError:
    return ImageError(
        f"image {index + 1} ({label}) is {size / 1_048_576:.1f} MB; the limit is "
        f"{limits.max_bytes / 1_048_576:.1f} MB per image (setting image_max_bytes): "
        "send a smaller or more compressed image",
        "size",
        index,
    )


def _too_many_pixels(
    size: tuple[int, int] | None, limits: ImageLimits, label: str, index: int
) -> ImageError:
    measured = (
        f"is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
        if size is not None
        else "has more pixels than Pillow will ever decode"
    )
    return ImageError(
        f"image {index + 1} ({label}) {measured}; the limit is {limits.max_pixels:,} pixels "
        "per image (setting image_max_pixels): downscale it before sending (a vision model "
        f"sees it at most {limits.max_side} px on its longer side anyway)",
        "size",
        index,
    )


def _check_pixels(size: tuple[int, int], limits: ImageLimits, label: str, index: int) -> None:
    if size[0] * size[1] > limits.max_pixels:
        raise _too_many_pixels(size, limits, label, index)


def clean_image(
    raw: bytes, limits: ImageLimits, *, source: str = "bytes", index: int = 0
) -> ImageRecord:
    """Check ``raw`` by content and return it cleaned: upright, downscaled, no metadata.

    Blocking and CPU-bound (a decode): an ``async`` caller runs it off the event loop, as
    :func:`load_image` does.

    Args:
        raw: The image file's bytes, as received.
        limits: Caps and target size.
        source: Where it came from (shown in errors and prompts).
        index: Its position in the run's list (shown in errors).

    Raises:
        ImageError: Larger than ``limits.max_bytes``, more pixels than
            ``limits.max_pixels`` (read from the header, before decoding), or not a PNG,
            JPEG, WebP or GIF that Pillow can decode.
    """
    if len(raw) > limits.max_bytes:
        raise _too_big(len(raw), limits, source, index)
    not_image = ImageError(
        f"image {index + 1} ({source}) is not an image by its content (Pillow cannot "
        "decode it as a JPEG, PNG, WebP or GIF; TIFF, PSD, EPS and other formats are not "
        "read), whatever its name says; send a JPEG, PNG, WebP or GIF file",
        "type",
        index,
    )
    try:
        # Opening reads the header only; its width and height are checked before any pixel
        # is decoded. Pillow's own bomb check (Image.MAX_IMAGE_PIXELS, a process global)
        # still raises above twice its default: that is the same refusal.
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as probe:
            _check_pixels(probe.size, limits, source, index)
            probe.verify()  # checks the file's structure; the image must be opened again
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as opened:
            original_format = opened.format or ""
            opened.seek(0)  # the first frame of an animation
            upright = ImageOps.exif_transpose(opened)
            pixels = _plain_pixels(upright)
    except Image.DecompressionBombError:
        raise _too_many_pixels(None, limits, source, index) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise not_image from None
    pixels.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    data, mime = _encode(pixels)
    return ImageRecord(
        sha256=hashlib.sha256(data).hexdigest(),
        mime=mime,
        width=pixels.width,
        height=pixels.height,
        data=data,
        source=source,
        original_format=original_format,
    )


def _plain_pixels(image: Image.Image) -> Image.Image:
    """A fresh image holding only ``image``'s pixels: no ``info``, EXIF or ICC profile."""
    keeps_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    converted = image.convert("RGBA" if keeps_alpha else "RGB")
    # frombytes builds a new image from raw pixels: nothing of the file's metadata survives.
    return Image.frombytes(converted.mode, converted.size, converted.tobytes())


def _encode(image: Image.Image) -> tuple[bytes, Literal["image/jpeg", "image/png"]]:
    out = io.BytesIO()
    if image.mode == "RGBA":  # JPEG has no alpha channel
        image.save(out, format="PNG", optimize=True)
        return out.getvalue(), "image/png"
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue(), "image/jpeg"


def _decode_data_url(url: str, index: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header.lower():
        raise ImageError(
            f"image {index + 1}: a data: URL must be base64, like data:image/png;base64,iVBOR...",
            "type",
            index,
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(
            f"image {index + 1}: the data: URL's base64 payload is not valid base64",
            "type",
            index,
        ) from None


async def _fetch(url: str, limits: ImageLimits, fetch: FetchSettings, index: int) -> bytes:
    from kitty.tools import fetch_bytes

    try:
        _final, body, cut = await fetch_bytes(
            url, fetch, max_bytes=limits.max_bytes, accept="image/*"
        )
    except ToolError as exc:
        raise ImageError(f"image {index + 1}: {exc}", "url", index) from None
    if cut:
        raise _too_big(limits.max_bytes + 1, limits, url, index)
    return body


def _read_file(path: Path, limits: ImageLimits, index: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise _too_big(size, limits, path.name, index)
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(
            f"image {index + 1}: file {path} does not exist; check the path", "missing", index
        ) from None
    except IsADirectoryError:
        raise ImageError(
            f"image {index + 1}: {path} is a directory, not an image file", "missing", index
        ) from None
    except PermissionError:
        raise ImageError(
            f"image {index + 1}: cannot read {path} (permission denied)", "missing", index
        ) from None


async def load_image(
    source: ImageSource | ImageRecord | dict[str, Any],
    limits: ImageLimits,
    fetch: FetchSettings,
    *,
    index: int = 0,
    allow_paths: bool = True,
) -> ImageRecord:
    """One image from any accepted form, checked and cleaned.

    Args:
        source: A path, ``data:`` or ``http(s)`` URL, bytes, a PIL image, or a record
            (kept as it is: already clean) or its dict form (from a checkpoint).
        limits: Caps and target size.
        fetch: The fleet's ``[fetch]`` rules, for URLs.
        index: Position in the run's list (for messages).
        allow_paths: Whether a string may name a local file (not for HTTP or Studio
            input: a caller there must not read the server's files).

    Raises:
        ImageError: Refused (size, type, URL, missing file); the message says what to do.
    """
    if isinstance(source, ImageRecord):
        return source
    if isinstance(source, dict):
        return ImageRecord.model_validate(source)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, limits, "PIL image", index)
        image = source
        return await _off_loop(lambda: _clean_pil(image, limits, index))
    if isinstance(source, bytes | bytearray):
        raw = bytes(source)
        return await _off_loop(lambda: clean_image(raw, limits, source="bytes", index=index))
    text = os.fspath(source)
    lowered = text.strip().lower()
    if lowered.startswith("data:"):
        raw = _decode_data_url(text.strip(), index)
        return await _off_loop(lambda: clean_image(raw, limits, source="data URL", index=index))
    if lowered.startswith(("http://", "https://")):
        url = text.strip()
        raw = await _fetch(url, limits, fetch, index)
        return await _off_loop(lambda: clean_image(raw, limits, source=url, index=index))
    if not allow_paths:
        raise ImageError(
            f"image {index + 1}: give a data:image/...;base64,... URL or an http(s) URL "
            "(a file path is not read here)",
            "type",
            index,
        )
    path = Path(text).expanduser()
    return await _off_loop(
        lambda: clean_image(_read_file(path, limits, index), limits, source=path.name, index=index)
    )


def _clean_pil(image: Image.Image, limits: ImageLimits, index: int) -> ImageRecord:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return clean_image(out.getvalue(), limits, source="PIL image", index=index)


_T = TypeVar("_T")

# Per event loop (an asyncio semaphore belongs to the loop it first waits on).
_DECODES = RuntimeSlot(
    "image decodes under way on this loop", lambda: asyncio.Semaphore(IMAGE_DECODES_AT_ONCE)
)


async def _off_loop(work: Callable[[], _T]) -> _T:
    """Run ``work`` (a decode) in a worker thread, at most IMAGE_DECODES_AT_ONCE at a time.

    A cancelled caller keeps its place until its thread has finished (a thread cannot be
    stopped): otherwise clients that give up early could start any number of decodes.
    """
    async with process_runtime().for_loop(_DECODES):
        decode = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return await asyncio.shield(decode)
        except asyncio.CancelledError:
            await asyncio.wait([decode])
            if not decode.cancelled():
                decode.exception()  # retrieved: the caller has gone, nobody else will
            raise


async def load_images(
    sources: Sequence[ImageSource | ImageRecord | dict[str, Any]] | None,
    limits: ImageLimits,
    fetch: FetchSettings,
    *,
    allow_paths: bool = True,
) -> list[ImageRecord]:
    """A run's images, checked and cleaned, each once (a repeated image is kept once).

    Raises:
        ImageError: More than ``limits.max_images``, or one image refused.
    """
    items = list(sources or [])
    if len(items) > limits.max_images:
        raise ImageError(
            f"{len(items)} images attached; a run takes at most {limits.max_images} "
            "(setting max_images): send fewer, or split the work into several runs",
            "count",
        )
    records: dict[str, ImageRecord] = {}
    for index, item in enumerate(items):
        record = await load_image(item, limits, fetch, index=index, allow_paths=allow_paths)
        records.setdefault(record.sha256, record)
    remember(records.values())
    return list(records.values())


class RememberedImages:
    """The last ``_REMEMBERED_MAX`` images this process loaded, by hash (least recent out)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: OrderedDict[str, ImageRecord] = OrderedDict()

    def add(self, records: Iterable[ImageRecord]) -> None:
        """Keep ``records``, forgetting the least recently kept beyond the limit."""
        with self._lock:
            for record in records:
                self._records[record.sha256] = record
                self._records.move_to_end(record.sha256)
            while len(self._records) > _REMEMBERED_MAX:
                self._records.popitem(last=False)

    def find(self, hashes: Iterable[str]) -> dict[str, ImageRecord]:
        """The records of ``hashes`` still kept (missing ones are left out)."""
        with self._lock:
            return {h: self._records[h] for h in hashes if h in self._records}

    def clear(self) -> None:
        """Forget every record (as a new process would)."""
        with self._lock:
            self._records.clear()


REMEMBERED_IMAGES = RuntimeSlot("images loaded by this process, by hash", RememberedImages)


def remember(records: Iterable[ImageRecord]) -> None:
    """Keep records in this process for the agent tasks that will ask for them by hash."""
    process_runtime().get(REMEMBERED_IMAGES).add(records)


def remembered(hashes: Iterable[str]) -> dict[str, ImageRecord]:
    """The records of ``hashes`` this process still holds (missing ones are left out)."""
    return process_runtime().get(REMEMBERED_IMAGES).find(hashes)
