"""Checkpoint stores, plan decisions, and registry seeding from a SQLite checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver

from graph.execution._completion_registry import persist_result, registry_for
from graph.persistence import (
    CHECKPOINTS_ENV_VAR,
    CheckpointError,
    RunCheckpoint,
    default_checkpoint_location,
    describe_location,
    make_checkpointer,
)
from graph.planning import PlanDecision, PlanError, parse_decision
from graph.schemas import Plan, Task, TaskResult


async def test_memory_store() -> None:
    async with make_checkpointer("memory") as saver:
        assert isinstance(saver, InMemorySaver)


@pytest.mark.parametrize("prefix", ["", "sqlite:///"])
async def test_sqlite_store_creates_its_folder(tmp_path: Path, prefix: str) -> None:
    path = tmp_path / "deep" / "er" / "runs.sqlite"
    async with make_checkpointer(f"{prefix}{path}") as saver:
        assert type(saver).__name__ == "AsyncSqliteSaver"
        assert await saver.aget_tuple({"configurable": {"thread_id": "none"}}) is None
    assert path.is_file()


async def test_default_location_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "env.sqlite"
    monkeypatch.setenv(CHECKPOINTS_ENV_VAR, str(target))
    assert default_checkpoint_location() == str(target)
    async with make_checkpointer() as saver:
        assert saver is not None
    assert target.is_file()
    monkeypatch.delenv(CHECKPOINTS_ENV_VAR)
    assert default_checkpoint_location().endswith(".kitty/checkpoints.sqlite")


async def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a directory"):
        async with make_checkpointer(tmp_path):
            pass


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.sqlite"
    bogus.write_bytes(b"these are my notes, not a database" * 100)
    with pytest.raises(CheckpointError, match="not a usable SQLite checkpoint file"):
        async with make_checkpointer(bogus):
            pass


async def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(CheckpointError, match="unknown checkpoint store"):
        async with make_checkpointer("redis://localhost:6379"):
            pass


async def test_unreachable_postgres_error_hides_the_password() -> None:
    url = "postgresql://kitty:s3cret@127.0.0.1:1/kitty?connect_timeout=2"
    with pytest.raises(CheckpointError) as caught:
        async with make_checkpointer(url):
            pass
    message = str(caught.value)
    assert "cannot connect to Postgres" in message and "s3cret" not in message
    assert describe_location(url).startswith("postgresql://***@127.0.0.1:1")


# ---- plan decisions


def _plan(*deps: tuple[str, list[str]]) -> dict:
    return {
        "tasks": [
            {"id": i, "agent": "researcher", "description": "d", "dependencies": d} for i, d in deps
        ]
    }


def test_decisions_approve_and_reject() -> None:
    assert parse_decision("approve")[0].action == "approve"
    decision, plan = parse_decision({"action": "reject", "reason": "no"})
    assert (decision.action, decision.reason, plan) == ("reject", "no", None)
    assert parse_decision(PlanDecision(action="approve"))[1] is None


def test_edit_decision_is_checked_strictly() -> None:
    _, plan = parse_decision({"action": "edit", "plan": _plan(("a", []), ("b", ["a"]))})
    assert isinstance(plan, Plan) and plan.source == "given"
    with pytest.raises(PlanError, match="cycle"):
        parse_decision({"action": "edit", "plan": _plan(("a", ["b"]), ("b", ["a"]))})
    with pytest.raises(PlanError, match="unknown agent"):
        parse_decision(
            {"action": "edit", "plan": {"tasks": [{"id": "a", "agent": "x", "description": "d"}]}}
        )
    with pytest.raises(PlanError, match="needs the edited plan"):
        parse_decision({"action": "edit"})


@pytest.mark.parametrize(
    "value", [{"action": "maybe"}, {"action": "approve", "extra": 1}, 42, "yes please"]
)
def test_bad_decisions_say_how_to_answer(value: object) -> None:
    with pytest.raises(PlanError, match="action"):
        parse_decision(value)  # type: ignore[arg-type]


# ---- registry seeding from a real SQLite checkpoint's pending writes


async def test_registry_is_seeded_from_sqlite_pending_writes(tmp_path: Path) -> None:
    finished = TaskResult(task_id="A", status="completed", agent="researcher", output="saved")
    async with make_checkpointer(tmp_path / "cp.sqlite") as saver:
        config: RunnableConfig = {"configurable": {"thread_id": "t1", "checkpoint_ns": ""}}
        checkpoint = empty_checkpoint()
        saved = await saver.aput(config, checkpoint, {"source": "loop", "step": 1}, {})
        await saver.aput_writes(saved, [("results", {"A": finished})], "task-a")
        position = RunCheckpoint(saver, thread_id="t1", checkpoint_id=checkpoint["id"])
        registry = await registry_for("run-seeded", position)
        results = await registry.wait_for(["A"])
    assert results["A"].output == "saved"
    assert isinstance(results["A"], TaskResult)
    del registry


def test_task_model_round_trips_through_the_serializer() -> None:
    from graph.persistence._checkpointers import checkpoint_serde

    serde = checkpoint_serde()
    task = Task(id="a", agent="coder", description="d", extra={"ignore_eos": True})
    assert serde.loads_typed(serde.dumps_typed(task)) == task


async def test_early_result_write_is_read_back_after_a_resume(tmp_path: Path) -> None:
    finished = TaskResult(task_id="B", status="completed", agent="coder", output="early")
    async with make_checkpointer(tmp_path / "cp.sqlite") as saver:
        checkpoint = empty_checkpoint()
        base: RunnableConfig = {"configurable": {"thread_id": "t2", "checkpoint_ns": ""}}
        await saver.aput(base, checkpoint, {"source": "loop", "step": 1}, {})
        node = RunCheckpoint(
            saver, thread_id="t2", checkpoint_id=checkpoint["id"], task_id="send-task-b"
        )
        assert await persist_result(node, finished)
        assert not await persist_result(None, finished)  # no checkpointer
        registry = await registry_for("run-after-crash", node)
        assert registry.get("B") == finished


async def test_plan_decision_for_a_thread_not_waiting_is_refused() -> None:
    from graph import NothingToResume, arun_goal

    plan = {"tasks": [{"id": "a", "agent": "researcher", "description": "d"}]}
    with pytest.raises(PlanError, match="no plan waiting for a decision"):
        await arun_goal("goal", plan=plan, plan_decision="approve")
    async with make_checkpointer("memory") as saver:
        with pytest.raises(NothingToResume, match="no unfinished work"):
            await arun_goal(None, thread_id="never-ran", checkpointer=saver)
    with pytest.raises(NothingToResume, match="needs the checkpointer"):
        await arun_goal(None, thread_id="never-ran")
