"""Keyword plans used when the planner endpoint itself cannot be reached (the design's three).

Data, not code: which agents take part is written here, beside the agents themselves, so
the graph's fallback names no agent. The first plan whose keywords occur in the goal is
used; the last plan has no keywords and is the default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FallbackStep(BaseModel):
    """One task of a fallback plan.

    Attributes:
        id: Task id.
        agent: Agent name (remapped by plan repair when the registry lacks it).
        description: What to do; ``{goal}`` is replaced by the goal.
        dependencies: Ids of earlier steps.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    agent: str
    description: str
    dependencies: tuple[str, ...] = ()


class FallbackPlan(BaseModel):
    """A plan for goals that mention one of ``keywords`` (empty: any goal)."""

    model_config = ConfigDict(frozen=True)

    keywords: tuple[str, ...] = ()
    steps: tuple[FallbackStep, ...]

    def matches(self, goal: str) -> bool:
        """True when the goal mentions a keyword (always for the default plan)."""
        lowered = goal.lower()
        return not self.keywords or any(k in lowered for k in self.keywords)


FALLBACK_PLANS: tuple[FallbackPlan, ...] = (
    FallbackPlan(
        keywords=("code", "implement", "program", "script"),
        steps=(
            FallbackStep(
                id="task_1", agent="researcher", description="Research best practices for: {goal}"
            ),
            FallbackStep(
                id="task_2", agent="coder", description="Implement code solution for: {goal}"
            ),
            FallbackStep(
                id="task_3",
                agent="reasoner",
                description="Synthesize research and code into final answer",
                dependencies=("task_1", "task_2"),
            ),
        ),
    ),
    FallbackPlan(
        keywords=("design", "cad", "model", "print", "3d"),
        steps=(
            FallbackStep(
                id="task_1", agent="researcher", description="Search for reference designs: {goal}"
            ),
            FallbackStep(
                id="task_2",
                agent="cad_designer",
                description="Generate CAD model for: {goal}",
                dependencies=("task_1",),
            ),
            FallbackStep(
                id="task_3",
                agent="fabricator",
                description="Analyze printability and recommend settings",
                dependencies=("task_2",),
            ),
        ),
    ),
    FallbackPlan(
        steps=(
            FallbackStep(id="task_1", agent="researcher", description="Research: {goal}"),
            FallbackStep(
                id="task_2",
                agent="analyst",
                description="Analyze and structure findings",
                dependencies=("task_1",),
            ),
            FallbackStep(
                id="task_3",
                agent="reasoner",
                description="Synthesize into comprehensive answer",
                dependencies=("task_2",),
            ),
        ),
    ),
)


def fallback_steps(goal: str) -> tuple[FallbackStep, ...]:
    """The steps of the first fallback plan that matches ``goal``."""
    return next(plan.steps for plan in FALLBACK_PLANS if plan.matches(goal))
