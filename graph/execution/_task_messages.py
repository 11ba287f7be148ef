"""An agent task's messages, built per endpoint: fixed prompt, dependencies cut to fit, images.

The builder is called once for each endpoint tried (:data:`endpoints.calls.MessageBuilder`):
the dependency results are cut to *that* endpoint's context, and a task carrying images
gets them only on an endpoint that can see; any other endpoint is skipped
(:class:`~graph.images._routing.EndpointCannotSee`) before a slot is taken or a byte sent.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from langchain_core.messages import BaseMessage, SystemMessage

from endpoints.calls import MessageBuilder
from endpoints.config import EndpointConfig
from graph import prompts
from graph.budgets import (
    ensure_fits,
    room_after,
    safe_token_bound,
    trim_to_tokens,
)
from graph.images import EndpointCannotSee, ImageRecord, image_message
from graph.schemas import Task, TaskResult
from kitty.errors import PromptTooLong

IMAGE_PROMPT_TOKENS = 1024
"""Context tokens budgeted per image: vision encoders use 256 (Gemma 3) to ~1,000 (Qwen2-VL
at 1024 px) tokens an image; the text budget leaves this much room for each."""


def failure_notes(task: Task, deps: dict[str, TaskResult]) -> dict[str, str]:
    """Dependency id -> the note saying it failed (these are never cut)."""
    return {
        dep_id: prompts.DEPENDENCY_FAILED.format(
            task_id=dep_id, agent=deps[dep_id].agent, error=deps[dep_id].error or "failed"
        )
        for dep_id in task.dependencies
        if deps[dep_id].status != "completed"
    }


async def dependency_block(
    task: Task,
    deps: dict[str, TaskResult],
    endpoint: EndpointConfig,
    budget_tokens: int,
) -> str:
    """The dependency results of ``task``, completed ones cut to equal shares of the budget.

    The budget is for the completed results (with their headings); the block's header and
    the notes on failed dependencies are part of the fixed prompt.
    """
    if not deps:
        return ""
    notes = failure_notes(task, deps)
    share = max(budget_tokens // max(len(deps) - len(notes), 1), 0)
    parts = [prompts.DEPENDENCY_HEADER]
    for dep_id in task.dependencies:
        result = deps[dep_id]
        if dep_id in notes:
            parts.append(notes[dep_id])
            continue
        fields = {"task_id": dep_id, "agent": result.agent}
        # The block's own heading counts against the share too.
        room = share - safe_token_bound(prompts.DEPENDENCY_OK.format(output="", **fields))
        output = await trim_to_tokens(result.output, room, endpoint)
        parts.append(prompts.DEPENDENCY_OK.format(output=output, **fields))
    return "".join(parts)


def task_messages(
    task: Task,
    goal: str,
    deps: dict[str, TaskResult],
    system: str,
    max_tokens: int,
    reserve: str = "",
    *,
    images: Sequence[ImageRecord] = (),
    seeing: Collection[str] = (),
) -> MessageBuilder:
    """An ``endpoint -> messages`` builder: the fixed prompt, deps cut to that endpoint.

    ``reserve`` is text the call adds beside these messages (tool schemas, earlier tool
    rounds): the dependency budget leaves room for it. With ``images`` the user message
    carries them as ``image_url`` parts (each budgeted at :data:`IMAGE_PROMPT_TOKENS`), and
    an endpoint not in ``seeing`` is refused.
    """
    image_note = prompts.task_images([image.describe() for image in images])

    def user(dependencies: str) -> str:
        text = prompts.TASK_USER.format(
            goal=goal, task_id=task.id, description=task.description, dependencies=dependencies
        )
        return text + image_note

    notes = "".join(failure_notes(task, deps).values())
    fixed = system + reserve + user(prompts.DEPENDENCY_HEADER + notes if deps else "")
    has_results = any(r.status == "completed" for r in deps.values())
    # What dependency_block cuts to equal shares: when each certainly fits, nothing is
    # cut and no /tokenize round trip is needed to know it.
    shares = [
        prompts.DEPENDENCY_OK.format(task_id=d, agent=deps[d].agent, output=deps[d].output)
        for d in task.dependencies
        if deps[d].status == "completed"
    ]

    async def build(endpoint: EndpointConfig) -> list[BaseMessage]:
        if images and endpoint.name not in seeing:
            raise EndpointCannotSee(
                f"cannot see images (supports_vision / /props modalities.vision); "
                f"the task's {len(images)} image(s) were not sent to it"
            )
        # The images take their share of the context first; text gets what is left.
        budget = endpoint
        if images:
            left = max(endpoint.ctx - IMAGE_PROMPT_TOKENS * len(images), 1)
            budget = endpoint.model_copy(update={"ctx": left})
        try:
            if has_results:
                room = await room_after(fixed, budget, max_tokens, shares=shares)
                dependencies = await dependency_block(task, deps, endpoint, room)
            else:
                await ensure_fits(fixed, budget)
                dependencies = await dependency_block(task, deps, endpoint, 0)
        except PromptTooLong:
            if not images:
                raise
            raise PromptTooLong(
                f"{len(images)} image(s) at ~{IMAGE_PROMPT_TOKENS} tokens each leave too "
                f"little of the {endpoint.ctx}-token context for the task's text; attach "
                "fewer images or give the endpoint a larger ctx"
            ) from None
        return [SystemMessage(system), image_message(user(dependencies), images)]

    return build
