"""Which tasks get a run's images, which endpoints may receive them, and in what form.

A task needs the images when its agent is ``vision_analyst`` or its description speaks of
them (image, photo, picture, screenshot...). It gets them only on an endpoint that can see:
the fleet file's ``supports_vision`` confirmed by the server's ``/props``
``modalities.vision`` (:func:`endpoints.clients.llamacpp.endpoint_supports_vision`). With none among
its tiers the task fails before any request, naming each endpoint and why it is blind; a
blind endpoint in its chain (a text-only fallback tier) is skipped, never sent an image.

On the wire both engines take OpenAI ``image_url`` content parts with ``data:`` URLs:
llama.cpp reads them on ``/v1/chat/completions`` and ``ChatOllama`` turns them into the
message's ``images`` list (base64) of Ollama's ``/api/chat``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from typing import Any

from langchain_core.messages import HumanMessage

from endpoints.clients import llamacpp as engine
from endpoints.config import EndpointConfig
from graph.images._loading import ImageRecord, remember, remembered
from graph.persistence import RunCheckpoint
from graph.schemas import Plan, Task
from kitty.errors import PromptTooLong

VISION_AGENT = "vision_analyst"
ATTACHMENTS_CHANNEL = "attachments"
_REFERS_TO_IMAGES = re.compile(
    r"\b(image|images|photo|photos|photograph|picture|pictures|pic|screenshot|screenshots|"
    r"snapshot|attached|attachment|attachments)\b",
    re.IGNORECASE,
)


class EndpointCannotSee(PromptTooLong):
    """The endpoint cannot take images: the call skips it before taking a slot.

    A :class:`~kitty.errors.PromptTooLong` because that is how a message builder tells
    :func:`endpoints.calls.call_tiers` that this endpoint cannot take this prompt (an image
    is more than a blind model can read), so the next candidate is tried.
    """


def needs_images(task: Task) -> bool:
    """True for a task that must see the run's images (vision agent, or it refers to them)."""
    return task.agent == VISION_AGENT or bool(_REFERS_TO_IMAGES.search(task.description))


def with_vision_task(plan: Plan, count: int, max_tasks: int) -> tuple[Plan, str | None]:
    """``plan`` with a ``vision_analyst`` task added when no task would look at the images.

    A small planner may ignore the note about attached images; the images would then
    reach no model and the answer would be written blind. A planned (not a given) plan
    gets one task that examines them, if it has room under ``max_tasks``.

    Returns:
        The plan (changed or not) and a warning saying what was done, if anything.
    """
    if count == 0 or any(needs_images(task) for task in plan.tasks):
        return plan, None
    plural = "s" if count != 1 else ""
    if plan.source == "given" or len(plan.tasks) >= max_tasks:
        return plan, (
            f"{count} image{plural} attached but no task of the plan looks at them: give "
            f"one to '{VISION_AGENT}' or mention the attached image in its description"
        )
    taken = {task.id for task in plan.tasks}
    task_id = next(
        f"task_{n}" for n in range(len(plan.tasks) + 1, 10_000) if f"task_{n}" not in taken
    )
    task = Task(
        id=task_id,
        agent=VISION_AGENT,
        description=f"Examine the attached image{plural} and report what matters for the goal",
    )
    added = plan.model_copy(update={"tasks": [*plan.tasks, task]})
    return (
        added,
        f"no planned task looked at the attached image{plural}: added {task_id} ({VISION_AGENT})",
    )


def image_message(text: str, records: Sequence[ImageRecord]) -> HumanMessage:
    """A user message of ``text`` followed by one ``image_url`` part per image."""
    if not records:
        return HumanMessage(text)
    parts: list[str | dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": r.data_url()}} for r in records]
    return HumanMessage(content=parts)


async def seeing_endpoints(endpoints: Iterable[EndpointConfig]) -> set[str]:
    """Names of the endpoints that can be sent images (fleet file and server agree)."""
    chosen = list(endpoints)
    answers = await asyncio.gather(*(engine.endpoint_supports_vision(e) for e in chosen))
    return {e.name for e, sees in zip(chosen, answers, strict=True) if sees}


async def _why_blind(endpoint: EndpointConfig) -> str:
    reported = await engine.server_reports_vision(endpoint)
    if not endpoint.supports_vision:
        if reported:
            return "its server has a projector, but the fleet file says supports_vision = false"
        return "fleet file: supports_vision = false" + (
            "; server /props: modalities.vision = false (started without --mmproj)"
            if reported is False
            else ""
        )
    if reported is False:
        return "server /props: modalities.vision = false (started without --mmproj)"
    return "its /props could not be read to confirm vision (server down or starting?)"


async def no_vision_error(endpoints: Sequence[EndpointConfig], count: int) -> str:
    """Why a task with ``count`` images cannot run on any of ``endpoints``, and the fix."""
    reasons = await asyncio.gather(*(_why_blind(e) for e in endpoints))
    listed = "; ".join(f"{e.name} ({why})" for e, why in zip(endpoints, reasons, strict=True))
    return (
        f"this task needs the run's {count} image{'s' if count != 1 else ''}, but no endpoint "
        f"it may use can see images, so nothing was sent: {listed or 'no endpoints'}. To add "
        "one, run a vision model's llama-server with --mmproj PROJECTOR.gguf (fleet file: "
        'launch.mmproj = "PROJECTOR.gguf" for the embedded fleet and `fleet script`) and set '
        "supports_vision = true on that endpoint of the vision tier (Ollama: a vision model "
        "and supports_vision = true)"
    )


async def images_for_task(
    hashes: Sequence[str], checkpoint: RunCheckpoint | None
) -> tuple[list[ImageRecord], list[str]]:
    """The records of ``hashes``: from this process, else from the run's checkpoint.

    Args:
        hashes: The images the task was given, by hash.
        checkpoint: Where the calling node stands
            (:func:`~graph.persistence.current_checkpoint`); ``None``: not a durable run.

    Returns:
        The records found (in ``hashes`` order) and the hashes that were not.
    """
    found = remembered(hashes)
    missing = [h for h in hashes if h not in found]
    if missing and checkpoint is not None:
        stored = await _checkpoint_attachments(checkpoint)
        remember(stored.values())
        found.update({h: stored[h] for h in missing if h in stored})
    return [found[h] for h in hashes if h in found], [h for h in hashes if h not in found]


async def _checkpoint_attachments(checkpoint: RunCheckpoint) -> dict[str, ImageRecord]:
    """The ``attachments`` channel of the run's current checkpoint (a resumed run)."""
    saved = await checkpoint.read()
    values = (saved.checkpoint.get("channel_values") or {}) if saved else {}
    return as_attachments(values.get(ATTACHMENTS_CHANNEL))


def as_attachments(value: Any) -> dict[str, ImageRecord]:
    """A stored ``attachments`` value as records by hash (dicts from a checkpoint too)."""
    if not isinstance(value, dict):
        return {}
    records = (
        item if isinstance(item, ImageRecord) else ImageRecord.model_validate(item)
        for item in value.values()
    )
    return {r.sha256: r for r in records}
