"""Every error kitty-orchestrator raises, in one tree.

```
KittyError                   base of everything below; never raised itself
├── UserError                input or setup a user can fix; its text says what and how
│   ├── FleetError           fleet file, profile, endpoint or tier problem (also ValueError)
│   │   └── EmbeddedFleetError   the in-process llama.cpp fleet cannot start
│   ├── SimFleetError        the simulated fleet is misconfigured
│   ├── PlanError            bad goal, plan, plan file or plan decision (also ValueError)
│   ├── CheckpointError      bad checkpoint store address or store (also ValueError)
│   ├── NothingToResume      the thread has no unfinished work (also ValueError)
│   ├── PlanApprovalRequired a plan waits for a decision (resume with one)
│   ├── SlotTimeoutError     no slot freed within the wait (also TimeoutError)
│   ├── SettingsError        a run setting is out of range (also ValueError)
│   ├── ToolSourceError      a tool source (an MCP server, the memory store) cannot start
│   └── ToolError            one tool call failed or was refused (the model is told why)
├── EndpointHTTPError        a model server answered a direct request with an error status
├── PromptTooLong            a prompt does not fit one endpoint's context (the next one is tried)
└── InternalError            a bug: surfaces log it with an error id and exit 1 / answer 500
```

Surfaces (CLI, service) show a :class:`UserError`'s text as it is and treat anything else
as a bug. The ``ValueError`` / ``TimeoutError`` mixins keep ``except ValueError`` in callers'
code working; inside this project catch the kitty class.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CheckpointError",
    "EmbeddedFleetError",
    "EndpointHTTPError",
    "FleetError",
    "InternalError",
    "KittyError",
    "NothingToResume",
    "PlanApprovalRequired",
    "PlanError",
    "PromptTooLong",
    "SettingsError",
    "SimFleetError",
    "SlotTimeoutError",
    "ToolError",
    "ToolSourceError",
    "UserError",
    "format_validation_error",
    "new_error_id",
]


class KittyError(Exception):
    """Base of every error this project raises."""


class UserError(KittyError):
    """Input or setup the user can fix; the message says what was wrong and what to do."""


class EndpointHTTPError(KittyError):
    """A model server answered with an HTTP error status (``status_code``: 4xx, 5xx).

    Raised by direct chat calls (:mod:`endpoints.clients._direct_chat`); the executor reads the
    status like the OpenAI SDK's errors: 5xx is the server's fault, 4xx the request's.
    """

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"Error code: {status_code} - {message}")
        self.status_code = status_code


class PromptTooLong(KittyError):
    """The fixed part of a prompt does not fit an endpoint's context (try another one).

    A message builder raises it for one endpoint; the call layer
    (:mod:`endpoints.calls`) then skips that endpoint before taking a slot and tries the
    next candidate. Its text says what to shorten or enlarge.
    """


class InternalError(KittyError):
    """Something that should not happen: a bug. Report it with its error id."""


class FleetError(UserError, ValueError):
    """A fleet file, profile, endpoint or tier is unusable."""


class EmbeddedFleetError(FleetError):
    """The in-process llama.cpp fleet cannot start (port taken, model missing...)."""


class SimFleetError(UserError, ValueError):
    """The simulated fleet's configuration is unusable."""


class PlanError(UserError, ValueError):
    """A goal, plan, plan file or plan decision that cannot be used as given."""


class CheckpointError(UserError, ValueError):
    """A checkpoint store address or store that cannot be used."""


class NothingToResume(UserError, ValueError):
    """A thread asked to continue has no unfinished work in the checkpoint store."""


class SettingsError(UserError, ValueError):
    """A run setting (``Context`` field) is missing, of the wrong type or out of range."""


class SlotTimeoutError(UserError, TimeoutError):
    """No slot of an endpoint became free within the allowed wait."""


class ToolSourceError(UserError):
    """A tool source (an MCP server, the memory store) cannot start; names it and the fix."""


class ToolError(UserError):
    """One tool call failed or was refused; its text is what the model is told."""


class PlanApprovalRequired(UserError):
    """A run stopped for plan approval and no decision or callback was given.

    Attributes:
        approval: The pending approval request; resume its ``thread_id`` with a decision.
    """

    def __init__(self, approval: Any) -> None:
        super().__init__(
            f"the plan of thread {approval.thread_id} waits for approval; pass "
            "on_plan=callback, or call arun_goal again with the same thread_id and "
            "checkpointer and plan_decision={'action': 'approve'|'edit'|'reject', ...}"
        )
        self.approval = approval


def new_error_id() -> str:
    """A short id that ties an error shown to a user to its log line."""
    return uuid.uuid4().hex[:12]


def _location(loc: Iterable[Any]) -> str:
    return ".".join(str(part) for part in loc) or "(input)"


def format_validation_error(
    errors: Iterable[Mapping[str, Any]], *, prefix: str = "", limit: int = 5
) -> str:
    """One readable line per pydantic error: ``field: message`` (at most ``limit``).

    Args:
        errors: ``ValidationError.errors()`` (or FastAPI's ``RequestValidationError``).
        prefix: Prepended to every field path (``"endpoints.tools."``).
        limit: Most errors listed; the rest are counted.
    """
    lines: list[str] = []
    items = list(errors)
    for error in items[:limit]:
        where = prefix + _location(error.get("loc", ()))
        message = str(error.get("msg", "invalid value"))
        message = message.removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    if len(items) > limit:
        lines.append(f"... and {len(items) - limit} more")
    return "; ".join(lines)
