"""What a benchmark run records: per-task spans and one variant's timing."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TaskSpan:
    """One task's model call as a scheduler saw it (epoch seconds)."""

    task_id: str
    endpoint: str
    started_at: float
    finished_at: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ok: bool = True


@dataclass
class VariantRun:
    """One execution of a workload by one scheduler.

    Attributes:
        variant: ``sequential``, ``waves``, ``product`` or ``oracle``.
        wall_s: Task-phase wall time: from handing the scheduler the DAG to the last task
            finishing (for the product: plan ready -> synthesis starting).
        spans: The tasks' model calls.
        error: Set when the run failed.
        outputs: Task id -> generated text.
    """

    variant: str
    wall_s: float
    spans: list[TaskSpan] = field(default_factory=list)
    error: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the run finished and every task completed."""
        return self.error is None and all(s.ok for s in self.spans)

    @property
    def span_s(self) -> float:
        """First model call start -> last model call end."""
        if not self.spans:
            return 0.0
        return max(s.finished_at for s in self.spans) - min(s.started_at for s in self.spans)

    @property
    def completion_tokens(self) -> int:
        """Completion tokens over all tasks."""
        return sum(s.completion_tokens for s in self.spans)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (spans left out)."""
        return {
            "variant": self.variant,
            "wall_s": round(self.wall_s, 4),
            "span_s": round(self.span_s, 4),
            "tasks": len(self.spans),
            "completion_tokens": self.completion_tokens,
            "ok": self.ok,
            "error": self.error,
        }

    def to_json(self) -> dict[str, Any]:
        """Figures plus spans (times in seconds from the first call's start)."""
        origin = min((s.started_at for s in self.spans), default=0.0)
        spans = [
            {
                **asdict(s),
                "started_at": round(s.started_at - origin, 4),
                "finished_at": round(s.finished_at - origin, 4),
            }
            for s in self.spans
        ]
        return {**self.summary(), "spans": spans}


def best(runs: list[VariantRun]) -> VariantRun:
    """The fastest successful run (or the first failed one when none succeeded)."""
    good = [r for r in runs if r.ok]
    return min(good, key=lambda r: r.wall_s) if good else runs[0]


def geomean(values: list[float]) -> float:
    """Geometric mean of positive values (``nan`` when there are none)."""
    positive = [v for v in values if v > 0]
    if not positive:
        return math.nan
    return math.exp(sum(math.log(v) for v in positive) / len(positive))
