"""Request and response bodies of the HTTP service (the design's ``/api/query/parallel``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

from graph import Plan, RunMetrics, RunResult, TaskResult
from kitty.service._settings import DEFAULT_MAX_QUERY_CHARS, MAX_TASKS_LIMIT

# A query that is not blank has a character outside these (the same class in the schema's
# pattern and in the check, so the document and the service agree on every string).
NON_BLANK = r"[^ \t\n\r\f\v]"
# What an image is given as: a base64 data: URL or an http(s) URL (case as the loader takes
# it). Anything else is refused before it is looked at.
IMAGE_URL_PATTERN = (
    r"^([Dd][Aa][Tt][Aa]:[^,]*;[Bb][Aa][Ss][Ee]64,[A-Za-z0-9+/=]*"
    r"|[Hh][Tt][Tt][Pp][Ss]?://.+)$"
)


class QueryRequest(BaseModel):
    """A goal to plan and run in parallel on the service's fleet."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "Design a wall hook for a 2 kg bag and plan its print", "max_tasks": 4},
                {
                    "query": "Compare two sorting algorithms",
                    "voice_mode": False,
                    "plan": {
                        "tasks": [
                            {"id": "a", "agent": "researcher", "description": "Explain quicksort"},
                            {"id": "b", "agent": "researcher", "description": "Explain mergesort"},
                            {
                                "id": "c",
                                "agent": "analyst",
                                "description": "Compare them",
                                "dependencies": ["a", "b"],
                            },
                        ]
                    },
                },
            ]
        },
    )

    query: StrictStr = Field(
        description=(
            "The goal in plain words. Must not be blank; at most the service's "
            f"max_query_chars characters (default {DEFAULT_MAX_QUERY_CHARS})."
        ),
        # Checked by _not_blank, with a message saying what to do; maxLength is the running
        # service's max_query_chars (set in its OpenAPI document).
        json_schema_extra={"minLength": 1, "pattern": NON_BLANK},
    )
    max_tasks: StrictInt = Field(
        default=6,
        ge=1,
        le=MAX_TASKS_LIMIT,
        description="Most tasks the plan may have (planner cap; a given plan must fit it).",
    )
    voice_mode: StrictBool = Field(
        default=True,
        description="Also write a 2-3 sentence voice summary (voice_summary) for TTS.",
    )
    plan: Plan | None = Field(
        default=None,
        description=(
            "A ready plan: skips the planner. Checked strictly (unique ids, known agents, "
            "known dependencies, no cycles); 'source' and 'warnings' may be omitted."
        ),
    )

    images: list[StrictStr] = Field(
        default_factory=list,
        # In the document only: the loader refuses other strings with a clearer message.
        json_schema_extra={"items": {"type": "string", "pattern": IMAGE_URL_PATTERN}},
        description=(
            "Images for the goal, each a data URL (data:image/png;base64,...) or an "
            "http(s) URL fetched under the fleet's [fetch] host rules. Checked by content "
            "(not an image: 415), at most image_max_bytes each (default 8 MB; larger: 413) "
            "and max_images per run (default 4; more: 422); cleaned of EXIF and downscaled. "
            "Only tasks that look at images get them, on a vision endpoint only."
        ),
    )

    thread_id: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description=(
            "Checkpoint thread to run on (the service must checkpoint runs). A thread with "
            "unfinished work (a cut connection, a crash) is continued: finished tasks are "
            "not run again and query/plan are ignored; otherwise the query runs as a new "
            "run on that thread. A thread already running in any worker gets 409. "
            "Default: a new thread, named in the result's thread_id."
        ),
    )

    user: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description=(
            "Whose memory notes the run's memory tools use. Only the operator's token "
            "(KITTY_API_TOKEN) may name a user; a user token (KITTY_USER_TOKENS) always "
            "uses its own user, and naming another is 403. Default: the token's user, or "
            "the fleet's [memory] user_id."
        ),
    )

    @field_validator("max_tasks", mode="before")
    @classmethod
    def _integral_number(cls, value: object) -> object:
        # JSON Schema's integer is any number without a fraction: 4.0 is 4, 4.5 is refused.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if re.search(NON_BLANK, value) is None:
            raise ValueError("query is empty; say what you want done")
        return value


class QueryResponse(BaseModel):
    """The outcome of one run."""

    response: str = Field(description="The synthesized answer.")
    voice_summary: str | None = Field(
        description="2-3 conversational sentences for TTS; null when voice_mode is false."
    )
    tasks: list[TaskResult] = Field(
        description="Per-task results in plan order (status, output, endpoint, slot, timings)."
    )
    metrics: RunMetrics = Field(description="Run figures: wall time, phases, tokens, slots.")
    plan: Plan = Field(description="The plan that ran.")
    run_id: str = Field(description="Unique id of this run (also on every stream event).")
    thread_id: str | None = Field(
        description="Checkpoint thread of the run when the service checkpoints runs."
    )
    warnings: list[str] = Field(description="Plan repairs and runtime warnings.")

    @classmethod
    def from_result(cls, result: RunResult) -> QueryResponse:
        """Build the response body from a :class:`~graph.schemas.RunResult`."""
        return cls(
            response=result.answer,
            voice_summary=result.voice_summary,
            tasks=result.tasks,
            metrics=result.metrics,
            plan=result.plan,
            run_id=result.run_id,
            thread_id=result.thread_id,
            warnings=result.warnings,
        )


class ErrorResponse(BaseModel):
    """Every error the service returns has this shape (never a stack trace)."""

    error: str = Field(description="What went wrong and what to do about it.")
    field: str | None = Field(
        default=None,
        description="The request part at fault (e.g. 'query', 'plan.tasks.0.agent', "
        "'body', 'Authorization'), when one is.",
    )
    error_id: str | None = Field(
        default=None, description="Id to find an internal error in the service log."
    )
    details: list[dict[str, str]] | None = Field(
        default=None, description="Every validation problem: field, message, type."
    )


class StreamError(ErrorResponse):
    """The data of a stream's ``error`` event: an error body plus its HTTP status."""

    status: int = Field(description="The status the error would have had as a response.")


class LimiterInfo(BaseModel):
    """The service's own admission state for one endpoint."""

    capacity: int = Field(description="Slots the service may use at once.")
    in_use: int = Field(description="Slots held by runs of this service now.")
    queued: int = Field(description="Tasks of this service waiting for a slot now.")
    peak_in_use: int = Field(description="Most slots held at once since start.")
    acquired: int = Field(description="Slots handed out since start.")
    store: str = Field(
        default="local",
        description="Where slots are counted: local (this process) or the redis:// URL "
        "shared by every process of the fleet (password hidden).",
    )
    leases: int | None = Field(
        default=None,
        description="Slot leases held by every process sharing the store, as last seen "
        "(null for the local store).",
    )
    store_queued: int | None = Field(
        default=None,
        description="Tasks of every process sharing the store waiting for a slot, as last "
        "seen (null for the local store).",
    )


class EndpointInfo(BaseModel):
    """A probe of one model server plus the service's limiter for it."""

    name: str
    tiers: list[str] = Field(description="Tiers this server belongs to.")
    kind: str = Field(description="llamacpp or ollama.")
    base_url: str
    health: Literal["ok", "loading", "down", "slow", "error"]
    detail: str = Field(default="", description="Why it is not ok, when it is not.")
    busy_slots: int | None = Field(description="Slots the server reports as processing.")
    total_slots: int | None = Field(description="Slots the server reports (or configured).")
    n_ctx: int | None = Field(description="Context tokens per slot.")
    model: str | None
    latency_ms: float | None = Field(description="Round trip of the health probe.")
    limiter: LimiterInfo | None = Field(description="This service's slot limiter.")


class EndpointsResponse(BaseModel):
    """Every endpoint of the service's fleet."""

    fleet: str = Field(description="Fleet profile name.")
    healthy: bool = Field(description="True when every endpoint answered its health check.")
    endpoints: list[EndpointInfo]


class HealthResponse(BaseModel):
    """Liveness of the service process (does not probe the fleet)."""

    status: Literal["ok"] = "ok"
