"""Run-time settings of the graph (LangGraph ``context_schema``; editable in Studio)."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from endpoints.config import DEFAULT_FLEET, FLEET_ENV_VAR, FleetConfig
from graph.images import (
    DEFAULT_IMAGE_MAX_BYTES,
    DEFAULT_IMAGE_MAX_PIXELS,
    DEFAULT_IMAGE_MAX_SIDE,
    DEFAULT_MAX_IMAGES,
    ImageLimits,
)
from kitty.errors import SettingsError, format_validation_error

MAX_TASKS = 20
"""The one upper bound of ``max_tasks`` (planner cap, service requests, CLI)."""

MAX_CONVERSATION_TURNS = 64
"""Most earlier turns a run carries (older ones would not fit any prompt budget anyway)."""


class ConversationTurn(BaseModel):
    """One earlier turn of the chat a goal comes from (context for the planner and synthesizer).

    Untrusted text: prompts quote it as data, never as instructions.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["user", "assistant", "system"] = Field(
        description="Who wrote the turn (system: instructions the chat client gave)."
    )
    content: str = Field(description="What was written (text only).")


def _default_fleet() -> str:
    return os.environ.get(FLEET_ENV_VAR) or DEFAULT_FLEET


class Context(BaseModel):
    """Settings for one run. Studio shows each field's description."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    fleet: str | FleetConfig = Field(
        default_factory=_default_fleet,
        description=(
            "Fleet profile name, path to a fleet .toml, or a loaded FleetConfig (default "
            "$KITTY_FLEET or 'embedded'; the embedded fleet starts in-process when needed)."
        ),
    )
    max_tasks: int = Field(
        default=6, ge=1, le=MAX_TASKS, description="Most tasks the planner may create."
    )
    voice: bool = Field(
        default=True, description="Write a 2-3 sentence voice summary after the answer."
    )
    thinking: Literal["low", "medium", "high"] | None = Field(
        default=None,
        description="Reasoning effort of the synthesizer; empty uses the endpoint's setting.",
    )
    skip_failed_dependents: bool = Field(
        default=False,
        description=(
            "Skip tasks whose dependency failed instead of running them with a note that "
            "their input failed."
        ),
    )
    task_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds one model call may take (empty: the endpoint's timeout_s). A timeout "
            "on a live server is 'slow': the next endpoint is tried, nothing is benched."
        ),
    )
    slot_timeout_s: float = Field(
        default=600.0, gt=0, description="Seconds a task may wait for a free slot."
    )
    slot_order: Literal["priority", "fifo"] = Field(
        default="priority",
        description=(
            "Who gets a freed slot. 'priority': the task with the longest remaining "
            "critical path (tokens), the run with the least attained service (slot-seconds) "
            "first across runs, every wait bounded by aging, ties first come first served. "
            "'fifo': strictly in arrival order (no critical path, no fairness term), e.g. "
            "as a benchmark baseline."
        ),
    )
    run_deadline_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Seconds the whole task phase may take; unfinished tasks then fail with a "
            "deadline error and the synthesizer works with what finished."
        ),
    )
    planner_max_tokens: int = Field(
        default=1024, ge=16, le=32768, description="Completion cap of the planner call."
    )
    synthesis_max_tokens: int = Field(
        default=768, ge=1, le=32768, description="Completion cap of the synthesizer."
    )
    summary_max_tokens: int = Field(
        default=160, ge=1, le=4096, description="Completion cap of the voice summary."
    )
    conversation: list[ConversationTurn] = Field(
        default_factory=list,
        max_length=MAX_CONVERSATION_TURNS,
        description=(
            "Earlier turns of the chat the goal comes from, oldest first ({role: user | "
            "assistant | system, content}). The planner and the synthesizer see them as quoted "
            "context (never as instructions), cut to conversation_max_tokens: the oldest "
            f"turns are dropped first. At most {MAX_CONVERSATION_TURNS} turns."
        ),
    )
    conversation_max_tokens: int = Field(
        default=1024,
        ge=0,
        le=32768,
        description=(
            "Most tokens of earlier conversation in the planner's and the synthesizer's "
            "prompt (less where the endpoint's context is short; the synthesizer gives it "
            "at most half of its room for results). 0 leaves the conversation out."
        ),
    )
    busy_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries on a 'server busy' answer (Ollama 503) before falling back.",
    )
    approve_plan: bool = Field(
        default=False,
        description=(
            "Stop after planning until the plan is approved, edited or rejected (needs a "
            "checkpointer)."
        ),
    )
    tool_rounds: int = Field(
        default=4,
        ge=2,
        le=16,
        description=(
            "Most model calls of a task with tools (its tool loop); the last one is always "
            "a plain answer."
        ),
    )
    tool_timeout_s: float = Field(default=60.0, gt=0, description="Seconds one tool call may take.")
    agent_tools: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Extra allowlist entries per agent (tool names or SERVER.*), e.g. for tools "
            "passed from Python: {'coder': ['run_tests']}."
        ),
    )
    user_id: str | None = Field(
        default=None,
        description="Memory namespace of the user (default: the fleet's [memory] user_id).",
    )
    tools: list[Any] = Field(
        default_factory=list,
        exclude=True,
        description=(
            "LangChain tools passed from Python (not saved with the run: pass them again "
            "when resuming)."
        ),
    )
    image_max_bytes: int = Field(
        default=DEFAULT_IMAGE_MAX_BYTES,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest image accepted, in bytes as received (default 8 MB).",
    )
    max_images: int = Field(
        default=DEFAULT_MAX_IMAGES, ge=0, le=16, description="Most images one run may carry."
    )
    image_max_side: int = Field(
        default=DEFAULT_IMAGE_MAX_SIDE,
        ge=64,
        le=8192,
        description=(
            "Longest side in pixels an image is downscaled to before it is stored and sent "
            "(vision encoders work at 224-1024 px)."
        ),
    )
    image_max_pixels: int = Field(
        default=DEFAULT_IMAGE_MAX_PIXELS,
        ge=64 * 64,
        le=178_956_970,  # Pillow refuses more anyway (twice its Image.MAX_IMAGE_PIXELS)
        description=(
            "Most pixels (width x height, read from the file's header before decoding) an "
            "image may have (default 40 million): bounds the memory one decode takes."
        ),
    )
    planner_tiers: list[str] = Field(
        default_factory=lambda: ["tools", "reasoning"],
        min_length=1,
        description="Tier chain of the planner call, primary first.",
    )
    synthesis_tiers: list[str] = Field(
        default_factory=lambda: ["reasoning", "tools"],
        min_length=1,
        description="Tier chain of the synthesizer, primary first.",
    )
    summary_tiers: list[str] = Field(
        default_factory=lambda: ["summary", "tools"],
        min_length=1,
        description="Tier chain of the voice summary, primary first.",
    )

    @field_validator("fleet", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    def image_limits(self) -> ImageLimits:
        """The caps and target size of this run's images."""
        return ImageLimits(
            max_bytes=self.image_max_bytes,
            max_images=self.max_images,
            max_side=self.image_max_side,
            max_pixels=self.image_max_pixels,
        )

    @classmethod
    def setting_names(cls) -> list[str]:
        """Names of every setting, in declaration order."""
        return list(cls.model_fields)

    @classmethod
    def build(cls, base: Context | None = None, **settings: Any) -> Context:
        """A validated Context from keyword settings, on top of ``base`` if given.

        Settings given as ``None`` are ignored, so optional keyword options can be passed
        through unchanged.

        Raises:
            SettingsError: An unknown setting or a bad value; the message names each.
        """
        data: dict[str, Any] = dict(base) if base is not None else {}
        # None means "not given" (keyword sugar passes every option through).
        data.update({k: v for k, v in settings.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise SettingsError(
                "invalid run settings: "
                + format_validation_error(exc.errors())
                + f" (known settings: {', '.join(cls.setting_names())})"
            ) from None
