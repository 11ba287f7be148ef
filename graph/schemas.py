"""Typed records of a run: tasks, plans, task results, metrics and the run result."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatus = Literal["completed", "failed", "skipped"]


class Task(BaseModel):
    """One subtask of a plan, for one agent.

    Attributes:
        id: Unique id within the plan (``task_1``...).
        agent: Registered agent name.
        description: What the agent must do.
        dependencies: Ids of tasks whose results this task needs.
        max_tokens: Per-task completion cap, overriding the agent's.
        extra: Engine parameters passed through to the request body (llama.cpp
            ``ignore_eos``, ``top_k``...).
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    agent: str = Field(min_length=1)
    description: str = Field(min_length=1)
    dependencies: list[str] = Field(default_factory=list)
    max_tokens: int | None = Field(default=None, gt=0)
    extra: dict[str, Any] = Field(default_factory=dict)


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
        queued_s: Seconds between dependencies being met and getting a slot.
        latency_s: Seconds of the model call(s).
        ready_at: Epoch seconds when its dependencies were met.
        started_at: Epoch seconds when its model call started.
        finished_at: Epoch seconds when it ended.
        prompt_tokens: Input tokens reported by the server.
        completion_tokens: Output tokens reported by the server.
        reasoning: Reasoning text, if the model returned any.
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
    queued_s: float = 0.0
    latency_s: float = 0.0
    ready_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning: str | None = None


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
        execution_s: Makespan of the tasks (first start -> last finish).
        synthesis_s: Time in the synthesizer.
        summary_s: Time in the summarizer.
        critical_path_s: Longest dependency chain of measured task latencies: the best
            makespan any scheduler could reach with unlimited slots.
        prompt_tokens: Input tokens over all calls (planner, tasks, synthesis, summary).
        completion_tokens: Output tokens over all calls.
        tasks_total: Tasks in the plan.
        tasks_completed: Completed tasks.
        tasks_failed: Failed tasks.
        tasks_skipped: Skipped tasks.
        fallbacks: Tasks served by a fallback tier.
        peak_concurrency: Most tasks holding a slot at the same time.
        endpoints: Endpoint name -> usage (busy seconds = summed task latencies).
    """

    wall_s: float = 0.0
    planner_s: float = 0.0
    execution_s: float = 0.0
    synthesis_s: float = 0.0
    summary_s: float = 0.0
    critical_path_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tasks_total: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    tasks_skipped: int = 0
    fallbacks: int = 0
    peak_concurrency: int = 0
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
