"""Typed records of a run: tasks, plans, task results, metrics and the run result."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from endpoints.calls import ModelCall

TaskStatus = Literal["completed", "failed", "skipped"]


class Task(BaseModel):
    """One subtask of a plan, for one agent.

    Attributes:
        id: Unique id within the plan (``task_1``...).
        agent: Registered agent name.
        description: What the agent must do.
        dependencies: Ids of tasks whose results this task needs.
        max_tokens: Per-task completion cap, overriding the agent's.
        extra: Sampling and engine parameters merged into the request body (llama.cpp
            ``ignore_eos``, ``top_k``, ``seed``...); only :attr:`EXTRA_KEYS` are
            accepted, so a plan cannot replace the messages, the model or the stream mode.
        tool_choice: ``auto`` (the model decides), ``required`` (the first round must
            call a tool), ``none`` (no tools), or one tool's name (the first round calls
            that tool). Applies to the first model round; later rounds are ``auto``.
    """

    # llama.cpp server sampling/engine options (tools/server/README.md, POST /completion);
    # everything that shapes the request itself (messages, model, stream, n_predict, slot)
    # stays ours.
    EXTRA_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "temperature",
            "dynatemp_range",
            "dynatemp_exponent",
            "top_p",
            "top_k",
            "min_p",
            "typical_p",
            "min_keep",
            "repeat_penalty",
            "repeat_last_n",
            "presence_penalty",
            "frequency_penalty",
            "mirostat",
            "mirostat_tau",
            "mirostat_eta",
            "seed",
            "ignore_eos",
            "n_probs",
            "dry_multiplier",
            "dry_base",
            "dry_allowed_length",
            "dry_penalty_last_n",
            "dry_sequence_breakers",
            "xtc_probability",
            "xtc_threshold",
            "logit_bias",
            "grammar",
            "samplers",
            "cache_prompt",
        }
    )
    _EXTRA_INSTEAD: ClassVar[dict[str, str]] = {
        "n_predict": "set the task's max_tokens",
        "max_tokens": "set the task's max_tokens",
        "messages": "the agent builds the messages from description and dependencies",
        "prompt": "the agent builds the messages from description and dependencies",
        "model": "the endpoint's model is used; choose the agent (tier) instead",
        "stream": "the orchestrator always streams",
        "id_slot": "slots are assigned by the orchestrator",
    }

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    agent: str = Field(min_length=1)
    description: str = Field(min_length=1)
    dependencies: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(default=None, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)
    tool_choice: str = Field(default="auto", min_length=1, max_length=128)

    @field_validator("extra")
    @classmethod
    def _only_sampling_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        refused = [key for key in value if key not in cls.EXTRA_KEYS]
        if refused:
            key = refused[0]
            why = cls._EXTRA_INSTEAD.get(key, "it is not a sampling or engine option")
            raise ValueError(
                f"key {key!r} is not allowed in extra ({why}); allowed keys: "
                + ", ".join(sorted(cls.EXTRA_KEYS))
            )
        return value


class Plan(BaseModel):
    """A validated DAG of tasks.

    Attributes:
        tasks: Tasks in a topological order.
        warnings: Repairs applied while validating (unknown agent, dropped dependency...).
        source: ``planner`` (model output), ``fallback`` (keyword plan because the planner
            endpoint failed) or ``given`` (supplied by the caller).
    """

    tasks: list[Task] = Field(min_length=1)
    warnings: list[str] = Field(default_factory=list)
    source: Literal["planner", "fallback", "given"] = "planner"

    def task(self, task_id: str) -> Task:
        """Return the task with this id (``KeyError`` if absent)."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(task_id)


class ToolCallRecord(BaseModel):
    """One tool call a task's model asked for.

    Attributes:
        name: Tool name as the model gave it.
        args: Arguments as the model gave them.
        ok: The tool ran and answered.
        refused: Refused before reaching the tool (not offered, not allowlisted, arguments
            not matching its schema).
        output: The tool's answer, trimmed.
        error: Why it was refused or what failed.
        started_at: Epoch seconds when it started (or was refused).
        latency_s: Seconds the tool took.
    """

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    ok: bool = False
    refused: bool = False
    output: str = ""
    error: str | None = None
    started_at: float = 0.0
    latency_s: float = 0.0


class TaskResult(BaseModel):
    """The outcome of one task.

    Attributes:
        task_id: Task id.
        status: ``completed``, ``failed`` or ``skipped`` (a dependency failed and the run
            skips dependents of failures).
        output: The agent's answer (empty unless completed).
        error: What went wrong (failed/skipped), in words a user can act on.
        agent: Agent name.
        endpoint: Endpoint that served the task (the last one tried if it failed).
        slot: Our slot number on that endpoint (timeline lane).
        model: Model id the endpoint reported or was configured with.
        fallback_used: True when a fallback-tier endpoint served it.
        attempts: Endpoints tried, in order.
        calls: Each request made to an endpoint (fallbacks, a retry of an empty answer),
            with its own endpoint and latency: per-endpoint busy time is charged from
            these, not from the summed :attr:`latency_s`.
        prepare_s: Seconds spent building prompts after the dependencies were met
            (counting tokens with the endpoint's tokenizer to fit its context), summed
            over the endpoints tried. ``ready_at + prepare_s + queued_s`` is about
            ``started_at`` for a task that ran on its first endpoint.
        queued_s: Seconds spent waiting for a free slot (excluding ``prepare_s``).
        latency_s: Seconds of the model call(s), summed over :attr:`calls`.
        ready_at: Epoch seconds when its dependencies were met.
        started_at: Epoch seconds when its first model call started (kept when the run
            deadline ends the task mid-call).
        finished_at: Epoch seconds when it ended.
        prompt_tokens: Input tokens reported by the server.
        completion_tokens: Output tokens reported by the server.
        cached_prompt_tokens: Of the prompt tokens, those the server took from its prompt
            cache, summed over :attr:`calls` when not given.
        reasoning: Reasoning text, if the model returned any.
        truncated: The answer stopped at the completion cap (``finish_reason`` ``length``):
            still ``completed``, but it may be incomplete (raise ``max_tokens``).
        tool_calls: Every tool call the model asked for, in order (run, failed or refused).
        tools_offered: Names of the tools the task was offered.
        warnings: Things the user should know about a completed task (a tool source that
            did not start, tool rounds that ran out, arguments that never validated).
        priority: Its slot priority: tokens on its remaining critical path (its own cap
            plus the longest chain of tasks after it); a freed slot goes to the highest.
        images_sent: Images of the run this task's model calls carried (0 for a task
            that does not need them, or that found no endpoint able to see them).
    """

    task_id: str
    status: TaskStatus
    output: str = ""
    error: str | None = None
    agent: str
    endpoint: str | None = None
    slot: int | None = None
    model: str | None = None
    fallback_used: bool = False
    attempts: list[str] = Field(default_factory=list)
    calls: list[ModelCall] = Field(default_factory=list)
    prepare_s: float = 0.0
    queued_s: float = 0.0
    latency_s: float = 0.0
    ready_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning: str | None = None
    truncated: bool = False
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    tools_offered: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    priority: float = 0.0
    images_sent: int = 0

    @model_validator(mode="after")
    def _cached_from_calls(self) -> TaskResult:
        # The agent node builds results from its calls; summing here keeps one source.
        if not self.cached_prompt_tokens and self.calls:
            self.cached_prompt_tokens = sum(c.cached_prompt_tokens for c in self.calls)
        return self


class EndpointUsage(BaseModel):
    """Per-endpoint figures of one run."""

    busy_s: float = 0.0
    tasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RunMetrics(BaseModel):
    """Figures of one run.

    Attributes:
        wall_s: Goal in -> answer out.
        planner_s: Time spent planning.
        execution_s: Time during which some task was preparing, queued or running (the
            union of the tasks' ``ready_at``/``started_at`` -> ``finished_at`` spans): the
            makespan of the task phase, without the downtime of an interrupted run
            between the crash and its resume.
        synthesis_s: Time in the synthesizer.
        summary_s: Time in the summarizer.
        critical_path_s: Longest dependency chain of measured task latencies: the best
            makespan any scheduler could reach with unlimited slots.
        prompt_tokens: Input tokens over all calls (planner, tasks, synthesis, summary).
        completion_tokens: Output tokens over all calls.
        cached_prompt_tokens: Of the prompt tokens, those served from the servers' prompt
            caches (tasks, plus the other calls where their usage reports it).
        cached_prompt_share: ``cached_prompt_tokens / prompt_tokens`` (0 without prompts).
        tasks_total: Tasks in the plan.
        tasks_completed: Completed tasks.
        tasks_failed: Failed tasks.
        tasks_skipped: Skipped tasks.
        fallbacks: Tasks served by a fallback tier.
        peak_concurrency: Most tasks holding a slot at the same time.
        tool_calls: Tool calls the models asked for.
        tool_calls_refused: Of those, refused before reaching a tool.
        tool_calls_failed: Of those, run but failed (error or timeout).
        tool_s: Seconds spent running tools (no model slot is held meanwhile).
        endpoints: Endpoint name -> usage (busy seconds = the summed latencies of the
            requests that endpoint served or failed, see :attr:`TaskResult.calls`).
    """

    wall_s: float = 0.0
    planner_s: float = 0.0
    execution_s: float = 0.0
    synthesis_s: float = 0.0
    summary_s: float = 0.0
    critical_path_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_prompt_share: float = 0.0
    tasks_total: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    tasks_skipped: int = 0
    fallbacks: int = 0
    peak_concurrency: int = 0
    tool_calls: int = 0
    tool_calls_refused: int = 0
    tool_calls_failed: int = 0
    tool_s: float = 0.0
    endpoints: dict[str, EndpointUsage] = Field(default_factory=dict)


class RunResult(BaseModel):
    """Everything a run produced.

    Attributes:
        goal: The goal as given.
        answer: The synthesized answer.
        voice_summary: 2-3 conversational sentences for TTS (``None`` with voice off).
        plan: The plan that ran.
        tasks: Task results in plan order.
        metrics: Run figures.
        thread_id: Checkpoint thread of the run (resume with it).
        run_id: Unique id of this run.
        warnings: Plan repairs and runtime warnings.
    """

    goal: str
    answer: str
    voice_summary: str | None = None
    plan: Plan
    tasks: list[TaskResult]
    metrics: RunMetrics
    thread_id: str | None = None
    run_id: str
    warnings: list[str] = Field(default_factory=list)

    def result(self, task_id: str) -> TaskResult:
        """Return one task's result (``KeyError`` if absent)."""
        for result in self.tasks:
            if result.task_id == task_id:
                return result
        raise KeyError(task_id)
