"""From goal to a validated plan: the planner node, plan validation and repair, salvage, approval.

The planner's output is a suggestion; the DAG that runs is checked here.
"""

from graph.planning._approval import (
    PlanApproval,
    PlanApprovalRequired,
    PlanDecision,
    approval,
    parse_decision,
)
from graph.planning._planner import make_plan, plan_json_schema, planner
from graph.planning._validation import PlanError, check_given_plan, parse_plan

__all__ = [
    "PlanApproval",
    "PlanApprovalRequired",
    "PlanDecision",
    "PlanError",
    "approval",
    "check_given_plan",
    "make_plan",
    "parse_decision",
    "parse_plan",
    "plan_json_schema",
    "planner",
]
