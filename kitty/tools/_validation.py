"""Client-side checks of a model's tool call, before anything reaches a tool.

A call is run only when its tool was offered to this task (so it is on the agent's
allowlist) and its arguments match the tool's JSON schema; otherwise the model is told
why, in a tool message, and the tool never sees the call.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool


def parameters_of(tool: BaseTool) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, as offered to the model."""
    parameters = convert_to_openai_tool(tool)["function"].get("parameters") or {}
    return dict(parameters) or {"type": "object", "properties": {}}


def refusal(name: str, args: Any, offered: dict[str, BaseTool]) -> str | None:
    """Why a call must not run (``None``: it may).

    Args:
        name: Tool name the model gave.
        args: Arguments the model gave.
        offered: The tools this task was offered (already filtered by its allowlist).
    """
    if name not in offered:
        available = ", ".join(sorted(offered)) or "none"
        return (
            f"tool {name!r} is not available to this task (available: {available}); "
            "call one of those or answer directly"
        )
    if not isinstance(args, dict):
        return f"arguments of {name!r} must be a JSON object, got {type(args).__name__}"
    validator = Draft202012Validator(parameters_of(offered[name]))
    problems = sorted(validator.iter_errors(args), key=lambda e: list(e.path))
    if problems:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}" for e in problems[:3]
        )
        return f"arguments of {name!r} do not match its schema: {details}; fix them and call again"
    return None
