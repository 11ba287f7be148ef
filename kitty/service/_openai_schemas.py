"""Bodies of the OpenAI-compatible door (``/v1/models``, ``/v1/chat/completions``).

Requests follow OpenAI's Chat Completions API: the fields OpenAI clients commonly send are
accepted (most are ignored: every agent has its own sampling settings), the ones this
service cannot honour (tools, ``n`` > 1, log probabilities, audio) are refused by name, and
the run settings of the service (:class:`RunOptions`) come in ``metadata`` or as top-level
keys (OpenAI clients send ``extra_body`` fields as top-level keys). Responses are
``chat.completion`` / ``chat.completion.chunk`` objects plus an ``x_kitty`` field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator

from graph import MAX_TASKS, RunMetrics
from kitty.service._schemas import NON_BLANK

# The largest completion cap a run setting allows (Context.synthesis_max_tokens).
MAX_ANSWER_TOKENS = 32768
# A thread id names a checkpoint thread: printable, no spaces, bounded.
_THREAD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class TextPart(BaseModel):
    """A text part of a message's content."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: StrictStr


class ImageURL(BaseModel):
    """Where an image part's image is: a ``data:`` URL or an ``http(s)`` URL."""

    model_config = ConfigDict(extra="ignore")

    url: StrictStr
    detail: str | None = Field(default=None, description="Accepted and ignored.")


class ImagePart(BaseModel):
    """An image part of a message's content."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["image_url"]
    image_url: ImageURL


class RefusalPart(BaseModel):
    """A refusal an assistant turn carries (quoted as text in the conversation)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["refusal"]
    refusal: StrictStr


ContentPart = Annotated[TextPart | ImagePart | RefusalPart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    """One message of the conversation; the last one is the user's goal."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any | None = None

    def text(self) -> str:
        """The message's text: its string content or its text parts, images as a mark."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        pieces = []
        for part in self.content:
            if isinstance(part, TextPart):
                pieces.append(part.text)
            elif isinstance(part, RefusalPart):
                pieces.append(part.refusal)
            else:
                pieces.append("[image]")
        return "\n".join(pieces)

    def image_urls(self) -> list[str]:
        """The URLs of the message's image parts, in order."""
        if not isinstance(self.content, list):
            return []
        return [part.image_url.url for part in self.content if isinstance(part, ImagePart)]


class StreamOptions(BaseModel):
    """``stream_options``: ``include_usage`` moves the usage to a last chunk of its own."""

    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high"]


class Reasoning(BaseModel):
    """``reasoning: {"effort": ...}``: the newer spelling of ``reasoning_effort``.

    Open WebUI and OpenRouter send it instead of ``reasoning_effort``.
    """

    model_config = ConfigDict(extra="ignore")

    effort: ReasoningEffort | None = None


class RunOptions(BaseModel):
    """The service's run settings, in ``metadata`` or as top-level keys.

    OpenAI's ``metadata`` values are strings: numbers and booleans given as text
    (``"2"``, ``"true"``) are read as such.
    """

    model_config = ConfigDict(extra="forbid")

    max_tasks: int | None = Field(
        default=None, ge=1, le=MAX_TASKS, description="Most tasks the planner may create."
    )
    thinking: Literal["low", "medium", "high"] | None = Field(
        default=None, description="Reasoning effort of the synthesizer."
    )
    voice: bool | None = Field(
        default=None,
        description="Also write the 2-3 sentence voice summary (x_kitty.voice_summary); "
        "off by default here.",
    )
    thread_id: str | None = Field(
        default=None,
        pattern=_THREAD_ID_PATTERN,
        description="Checkpoint thread of the run: continues its unfinished work, or runs "
        "the goal on that thread (409 while it runs).",
    )
    conversation_max_tokens: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ANSWER_TOKENS,
        description="Most tokens of earlier turns shown to the planner and the synthesizer.",
    )


RUN_OPTION_NAMES = frozenset(RunOptions.model_fields)

# Run settings the OpenAI door cannot serve, and why (a 400 says so by name).
REFUSED_OPTIONS = {
    "approve_plan": "a run cannot stop and wait for a plan decision over the OpenAI API; "
    "use the Python API or kitty-orch run --approve-plan",
}


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's request, plus :class:`RunOptions`.

    Accepted and ignored: ``temperature``, ``top_p``, ``presence_penalty``,
    ``frequency_penalty``, ``logit_bias``, ``seed``, ``stop``, ``user``, ``store``,
    ``service_tier``, ``parallel_tool_calls``, ``verbosity``, ``prompt_cache_key``,
    ``safety_identifier``. Applied: ``max_tokens`` / ``max_completion_tokens`` (the
    answer's cap), ``reasoning_effort`` or ``reasoning.effort`` (the synthesizer's
    thinking), ``stream``,
    ``stream_options.include_usage``.
    """

    model_config = ConfigDict(extra="forbid")

    # Checked by _model_named (a message naming the fix), declared here for the document.
    model: StrictStr = Field(json_schema_extra={"minLength": 1, "pattern": NON_BLANK})
    messages: list[ChatMessage] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_ANSWER_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_ANSWER_TOKENS)
    reasoning_effort: ReasoningEffort | None = None
    reasoning: Reasoning | None = None
    metadata: dict[str, Any] | None = None
    n: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any | None = None
    functions: list[Any] | None = None
    function_call: Any | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    modalities: list[str] | None = None
    audio: Any | None = None
    response_format: dict[str, Any] | None = None
    prediction: Any | None = None
    # accepted and ignored
    temperature: float | None = None
    top_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    verbosity: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # run settings as top-level keys (extra_body)
    max_tasks: Any | None = None
    thinking: Any | None = None
    voice: Any | None = None
    thread_id: Any | None = None
    conversation_max_tokens: Any | None = None

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if re.search(NON_BLANK, value) is None:
            raise ValueError("model is empty; pick one of GET /v1/models")
        return value.strip()


REQUEST_FIELDS = frozenset(ChatCompletionRequest.model_fields)


class PromptTokensDetails(BaseModel):
    """Of the prompt tokens, those the servers took from their prompt caches."""

    cached_tokens: int = 0


class Usage(BaseModel):
    """Tokens of the whole run: planner, every task, synthesizer and voice summary."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails

    @classmethod
    def from_metrics(cls, metrics: RunMetrics) -> Usage:
        """The usage of a run from its :class:`~graph.RunMetrics`."""
        return cls(
            prompt_tokens=metrics.prompt_tokens,
            completion_tokens=metrics.completion_tokens,
            total_tokens=metrics.prompt_tokens + metrics.completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=metrics.cached_prompt_tokens),
        )


class KittyExtra(BaseModel):
    """``x_kitty``: what a run gives beyond OpenAI's fields."""

    run_id: str = Field(description="The run's id (as in the service log and traces).")
    thread_id: str | None = Field(description="Checkpoint thread of the run.")
    voice_summary: str | None = Field(description="The voice summary (null unless voice).")
    warnings: list[str] = Field(description="Plan repairs and runtime warnings.")
    answer: str = Field(
        description="The final answer: the authority when the streamed content differs "
        "(a synthesis call that failed over to another endpoint started again)."
    )


FinishReason = Literal["stop", "length"]


class AssistantMessage(BaseModel):
    """The answer of a ``chat.completion``."""

    role: Literal["assistant"] = "assistant"
    content: str
    reasoning_content: str | None = Field(
        default=None, description="The run's progress lines: plan and tasks."
    )


class Choice(BaseModel):
    """The one choice of a ``chat.completion``."""

    index: int = 0
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletion(BaseModel):
    """``stream: false``: the whole run as one ``chat.completion``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    x_kitty: KittyExtra


class Delta(BaseModel):
    """What one chunk adds: the role (first chunk), progress or a piece of the answer."""

    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None


class ChunkChoice(BaseModel):
    """The one choice of a chunk."""

    index: int = 0
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One ``data:`` line of a streamed run (``chat.completion.chunk``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    x_kitty: KittyExtra | None = None

    def to_json(self) -> str:
        """OpenAI's wire form: unset fields left out (a delta carries only what it adds).

        Fields that every chunk has (``object``, ``finish_reason``...) must be set
        explicitly to be sent.
        """
        return self.model_dump_json(exclude_unset=True)


class ModelCard(BaseModel):
    """One workflow of ``GET /v1/models``: a fleet the service runs goals on."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kitty-orchestrator"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorDetail(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    """Every error of the ``/v1`` paths: ``{"error": {message, type, param, code}}``."""

    error: OpenAIErrorDetail
