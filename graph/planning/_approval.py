"""Plan approval: an opt-in human check between planning and dispatch.

With ``Context.approve_plan`` on, the ``approval`` node calls LangGraph's ``interrupt()``
with the plan; the run stops (its state is in the checkpointer) until it is resumed with
``Command(resume=decision)``, where the decision is one of::

    {"action": "approve"}
    {"action": "edit", "plan": {"tasks": [...]}}      # checked strictly, like a given plan
    {"action": "reject", "reason": "..."}             # the run ends, the answer says so

Without ``approve_plan`` the node only dispatches. The Python API, the CLI
(``--approve-plan``) and LangGraph Studio (the interrupt shows up natively) all use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from langgraph.graph import END
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agents.registry import DEFAULT_AGENTS
from graph._node_support import context_of
from graph._state import OrchestratorState
from graph.context import Context
from graph.execution import dispatch
from graph.planning._validation import PlanError, check_given_plan
from graph.schemas import Plan
from kitty.errors import PlanApprovalRequired, format_validation_error

ACTIONS = ("approve", "edit", "reject")
HOW_TO_ANSWER = (
    'resume with {"action": "approve"}, {"action": "edit", "plan": {"tasks": [...]}} '
    'or {"action": "reject", "reason": "..."}'
)
REJECTED_ANSWER = "The plan was rejected, so nothing ran."


class PlanDecision(BaseModel):
    """A reviewer's answer to a plan.

    Attributes:
        action: ``approve``, ``edit`` (run ``plan`` instead) or ``reject``.
        plan: The edited plan (``edit`` only): ``{"tasks": [...]}`` as for a given plan.
        reason: Why the plan was rejected (``reject`` only; shown in the answer).
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "edit", "reject"]
    plan: dict[str, Any] | None = None
    reason: str | None = Field(default=None, max_length=2000)


class PlanApproval(BaseModel):
    """A plan waiting for a decision; yielded by :func:`graph.astream_goal`.

    Attributes:
        kind: Always ``plan_approval``.
        run_id: The run.
        thread_id: Checkpoint thread to resume with the decision.
        goal: The goal.
        plan: The plan to approve, edit or reject.
        error: Why the previous answer was not accepted, if it was not.
    """

    kind: Literal["plan_approval"] = "plan_approval"
    run_id: str
    thread_id: str | None = None
    goal: str = ""
    plan: Plan
    error: str | None = None

    @classmethod
    def from_interrupt(cls, value: Any, thread_id: str | None) -> PlanApproval:
        """Read the payload the ``approval`` node passed to ``interrupt()``."""
        data = dict(value) if isinstance(value, Mapping) else {}
        return cls(
            run_id=str(data.get("run_id") or ""),
            thread_id=thread_id,
            goal=str(data.get("goal") or ""),
            plan=Plan.model_validate(data.get("plan")),
            error=data.get("error"),
        )


def parse_decision(
    value: PlanDecision | Mapping[str, Any] | str, *, agents: list[str] | None = None
) -> tuple[PlanDecision, Plan | None]:
    """Check a decision; for ``edit``, validate the new plan strictly.

    Args:
        value: A :class:`PlanDecision`, its dict form, or ``"approve"`` / ``"reject"``.
        agents: Registered agent names (default: the built-in agents).

    Returns:
        The decision and, for ``edit``, the checked plan.

    Raises:
        PlanError: Unknown action, an ``edit`` without a plan, or an invalid plan; the
            message says what to fix.
    """
    if isinstance(value, str) and value in ("approve", "reject"):
        value = {"action": value}
    if isinstance(value, PlanDecision):
        decision = value
    elif isinstance(value, Mapping):
        try:
            decision = PlanDecision.model_validate(dict(value))
        except ValidationError as exc:
            problems = format_validation_error(exc.errors())
            raise PlanError(f"invalid plan decision ({problems}); {HOW_TO_ANSWER}") from None
    else:
        raise PlanError(f"a plan decision must be an object, got {value!r}; {HOW_TO_ANSWER}")
    if decision.action != "edit":
        return decision, None
    if not decision.plan:
        raise PlanError('an "edit" decision needs the edited plan under "plan"')
    plan = check_given_plan(decision.plan, agents=agents or list(DEFAULT_AGENTS))
    return decision, plan


def approval_payload(state: OrchestratorState, error: str | None = None) -> dict[str, Any]:
    """What ``interrupt()`` shows: the plan, the goal and how to answer (JSON-safe)."""
    plan = state["plan"]
    assert plan is not None
    return {
        "kind": "plan_approval",
        "run_id": state.get("run_id", ""),
        "goal": state.get("goal", ""),
        "plan": plan.model_dump(mode="json"),
        "error": error,
        "how_to_answer": HOW_TO_ANSWER,
    }


async def approval(state: OrchestratorState, runtime: Runtime[Context]) -> Command[Any]:
    """Ask for approval of the plan when the run wants it, then dispatch (or end).

    An answer that is not a valid decision asks again, with the error in the payload.
    """
    if not context_of(runtime).approve_plan:
        return Command(goto=dispatch(state))
    error: str | None = None
    while True:
        answer = interrupt(approval_payload(state, error))
        try:
            decision, edited = parse_decision(answer)
            break
        except PlanError as exc:
            error = str(exc)
    warnings = list(state.get("warnings") or [])
    if decision.action == "reject":
        reason = (decision.reason or "").strip()
        warnings.append("plan rejected" + (f": {reason}" if reason else ""))
        answer_text = REJECTED_ANSWER + (f" Reason: {reason}" if reason else "")
        return Command(goto=END, update={"answer": answer_text, "warnings": warnings})
    if edited is None:
        return Command(goto=dispatch(state))
    warnings.append(f"plan edited before the run ({len(edited.tasks)} tasks)")
    return Command(
        goto=dispatch({**state, "plan": edited}),
        update={"plan": edited, "warnings": warnings},
    )


__all__ = [
    "ACTIONS",
    "PlanApproval",
    "PlanApprovalRequired",
    "PlanDecision",
    "approval",
    "approval_payload",
    "parse_decision",
]
