"""What ``kitty-orch run`` reads besides its goal: a plan file, images, ``--set`` settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, cast

from pydantic import TypeAdapter, ValidationError

from endpoints import FleetConfig
from graph import Context, ImageRecord, Plan
from kitty.errors import PlanError, SettingsError, format_validation_error

THINKING_LEVELS = ("low", "medium", "high")
# Context fields with their own option.
_NOT_SETTABLE = {"fleet", "max_tasks", "voice", "thinking", "approve_plan"}


class PlanFileError(PlanError):
    """A ``--plan`` file cannot be used; the message names the file and the problem."""


def load_plan_file(path: Path) -> tuple[Plan, str | None]:
    """Read and check a plan file: ``{"tasks": [...]}`` (an optional ``"goal"`` too).

    Returns:
        The plan (strictly validated, as the graph will) and the file's goal, if any.

    Raises:
        PlanFileError: Missing or unreadable file, bad JSON, wrong shape, invalid task,
            unknown agent or dependency, or a cycle; one line naming the file.
    """
    from agents import DEFAULT_AGENTS
    from graph import check_given_plan

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanFileError(f"plan file {path} does not exist; check the path") from None
    except OSError as exc:
        raise PlanFileError(f"cannot read plan file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(
            f"plan file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
        found = (
            "an object without a 'tasks' list" if isinstance(data, dict) else type(data).__name__
        )
        raise PlanFileError(
            f'plan file {path} must hold a JSON object {{"tasks": [...]}}; found {found}'
        )
    goal = data.pop("goal", None)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanFileError(f"plan file {path}: {format_validation_error(exc.errors())}") from None
    try:
        plan = check_given_plan(plan, agents=list(DEFAULT_AGENTS))
    except PlanError as exc:
        raise PlanFileError(f"plan file {path}: {exc}") from None
    return plan, goal if isinstance(goal, str) else None


def load_image_files(sources: list[str], context: Context, fleet: FleetConfig) -> list[ImageRecord]:
    """The ``--image`` files (or URLs), checked and cleaned as the run will store them.

    Raises:
        ImageError: A missing file, not an image by content, too large, too many images,
            or a URL the fleet's ``[fetch]`` rules refuse; one line naming it and the fix.
    """
    if not sources:
        return []
    import asyncio

    from graph import load_images

    return asyncio.run(load_images(sources, context.image_limits(), fleet.fetch))


def parse_settings(items: list[str]) -> dict[str, Any]:
    """Turn ``--set NAME=VALUE`` items into :class:`~graph.Context` fields.

    Raises:
        SettingsError: Not ``NAME=VALUE``, an unknown name, or a value of the wrong type.
    """
    allowed = [name for name in Context.setting_names() if name not in _NOT_SETTABLE]
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise SettingsError(f"--set {item!r}: write NAME=VALUE, e.g. --set task_timeout_s=60")
        if name not in allowed:
            raise SettingsError(f"--set {name}: unknown setting; known: {', '.join(allowed)}")
        value: Any = raw.strip()
        if value.lower() in {"none", "null"}:
            value = None
        field = Context.model_fields[name]
        try:
            # The field's own bounds too (gt=0...), not just its type.
            adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, Annotated[field.annotation, field]))
            settings[name] = adapter.validate_python(value)
        except ValidationError as exc:
            raise SettingsError(f"--set {name}={raw}: {exc.errors()[0]['msg'].lower()}") from None
    return settings


def check_thinking(level: str | None) -> str | None:
    """The ``--thinking`` level, checked.

    Raises:
        SettingsError: Not one of :data:`THINKING_LEVELS`.
    """
    if level is not None and level not in THINKING_LEVELS:
        raise SettingsError(f"--thinking {level!r}: use one of {', '.join(THINKING_LEVELS)}")
    return level
