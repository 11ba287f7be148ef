"""A planner answer cut at its token cap: the retry it gets, and the tasks kept from it.

Under the plan grammar a cut answer is a valid JSON *prefix*: ``{"tasks": [{...}, {...},
{"id": "task_3", "agent": "co`` — every task before the cut is whole. The planner node
asks once more with a larger cap and fewer tasks (:func:`retry_budget`); if that answer is
cut too, the whole tasks are kept (:func:`complete_tasks`) rather than a keyword plan or a
``PlanError``.
"""

from __future__ import annotations

import json
from typing import Any

RETRY_TOKEN_FACTOR = 2


def complete_tasks(text: str) -> list[dict[str, Any]]:
    """The whole task objects of a (possibly cut) ``{"tasks": [...]}`` answer, in order.

    Returns:
        Every task object that parses completely; empty when none does.
    """
    start = text.find("[", text.find('"tasks"') + 1 if '"tasks"' in text else 0)
    if start < 0:
        return []
    decoder = json.JSONDecoder()
    tasks: list[dict[str, Any]] = []
    position = start + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text) or text[position] != "{":
            return tasks
        try:
            task, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return tasks  # the cut one
        if isinstance(task, dict):
            tasks.append(task)


def retry_budget(max_tokens: int, max_tasks: int, whole_tasks: int) -> tuple[int, int]:
    """Cap and task count for the one retry after a cut answer.

    The cap doubles (bounded by what the context allows, clamped by the caller); the task
    count drops to what fitted, but never below 2 so the plan can still fan out.

    Args:
        max_tokens: The cap the cut answer had.
        max_tasks: The task count it was asked for.
        whole_tasks: Tasks that fitted whole before the cut.
    """
    fewer = max(2, min(max_tasks - 1, max(whole_tasks, 1)))
    return max_tokens * RETRY_TOKEN_FACTOR, min(max_tasks, fewer)


__all__ = ["complete_tasks", "retry_budget"]
