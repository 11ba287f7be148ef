"""Plan repair edge cases: nameless tasks, bad per-task fields, long dependency ids."""

from __future__ import annotations

from agents.registry import DEFAULT_AGENTS
from graph.planning._validation import fallback_plan, repair_plan

AGENTS = list(DEFAULT_AGENTS)


def test_a_nameless_task_does_not_steal_a_real_id() -> None:
    plan = repair_plan(
        [
            {"agent": "researcher", "description": "nameless"},
            {"id": "task_1", "agent": "coder", "description": "the real task_1"},
            {
                "id": "task_3",
                "agent": "analyst",
                "description": "uses it",
                "dependencies": ["task_1"],
            },
        ],
        agents=AGENTS,
        goal="g",
        max_tasks=6,
    )
    by_id = {t.id: t for t in plan.tasks}
    assert by_id["task_1"].description == "the real task_1"
    assert by_id["task_3"].dependencies == ["task_1"]
    nameless = next(t for t in plan.tasks if t.description == "nameless")
    assert nameless.id not in {"task_1", "task_3"}
    assert not any("duplicate" in w for w in plan.warnings)


def test_a_bad_max_tokens_drops_that_field_only() -> None:
    plan = repair_plan(
        [
            {"id": "a", "agent": "coder", "description": "x", "max_tokens": 0},
            {"id": "b", "agent": "coder", "description": "y", "max_tokens": "lots"},
            {"id": "c", "agent": "coder", "description": "z", "max_tokens": 32},
        ],
        agents=AGENTS,
        goal="g",
        max_tasks=6,
    )
    assert [(t.id, t.max_tokens) for t in plan.tasks] == [("a", None), ("b", None), ("c", 32)]
    assert sum("max_tokens" in w for w in plan.warnings) == 2


def test_a_bad_extra_drops_that_field_only() -> None:
    plan = repair_plan(
        [
            {"id": "a", "agent": "coder", "description": "x", "extra": {"stream": True}},
            {"id": "b", "agent": "coder", "description": "y", "extra": {"top_k": 5}},
        ],
        agents=AGENTS,
        goal="g",
        max_tasks=6,
    )
    assert [t.extra for t in plan.tasks] == [{}, {"top_k": 5}]


def test_dependencies_are_cut_like_ids() -> None:
    long_id = "x" * 80
    plan = repair_plan(
        [
            {"id": long_id, "agent": "coder", "description": "first"},
            {"id": "b", "agent": "coder", "description": "second", "dependencies": [long_id]},
        ],
        agents=AGENTS,
        goal="g",
        max_tasks=6,
    )
    assert plan.tasks[0].id == long_id[:64]
    assert plan.tasks[1].dependencies == [long_id[:64]]
    assert not any("unknown dependency" in w for w in plan.warnings)


def test_fallback_plans_come_from_the_agents_data() -> None:
    assert [t.agent for t in fallback_plan("write a script", agents=AGENTS).tasks] == [
        "researcher",
        "coder",
        "reasoner",
    ]
    plan = fallback_plan("print a hook", agents=["researcher", "coder"])
    assert plan.source == "fallback" and {t.agent for t in plan.tasks} <= {"researcher", "coder"}
    assert any("unknown agent" in w for w in plan.warnings)
