"""Checkpoint retention (``--keep-days``): old threads go, recent ones stay (real SQLite)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from pydantic import ValidationError

from graph.persistence import delete_threads_older_than, make_checkpointer
from kitty.service import ServiceSettings, create_app
from tests.postgres_server import PostgresServer

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


async def put(
    saver: BaseCheckpointSaver, thread_id: str, age: timedelta, now: datetime = NOW
) -> None:
    """Save one checkpoint on ``thread_id`` stamped ``age`` before ``now``."""
    checkpoint = empty_checkpoint()
    checkpoint["ts"] = (now - age).isoformat()
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    latest = await saver.aget_tuple(config)
    if latest is not None:
        config = latest.config
    await saver.aput(config, checkpoint, {"source": "input", "step": -1}, {})


async def exists(saver: BaseCheckpointSaver, thread_id: str) -> bool:
    return await saver.aget_tuple({"configurable": {"thread_id": thread_id}}) is not None


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A checkpoint store: a SQLite file, or a fresh database on a real PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "runs.sqlite")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


async def test_sweep_deletes_only_threads_idle_longer_than_keep_days(store: str) -> None:
    async with make_checkpointer(store) as saver:
        await put(saver, "old", timedelta(days=30))
        await put(saver, "new", timedelta(hours=2))
        # Started long ago but checkpointed recently: its last checkpoint counts.
        await put(saver, "revived", timedelta(days=40))
        await put(saver, "revived", timedelta(days=1))

        deleted = await delete_threads_older_than(saver, keep_days=7, now=NOW)

        assert deleted == ["old"]
        assert not await exists(saver, "old")
        assert await exists(saver, "new") and await exists(saver, "revived")
        assert await delete_threads_older_than(saver, keep_days=7, now=NOW) == []

    async with make_checkpointer(store) as reopened:  # really saved
        assert not await exists(reopened, "old") and await exists(reopened, "new")


async def test_sweep_works_on_the_memory_checkpointer() -> None:
    async with make_checkpointer("memory") as saver:
        await put(saver, "old", timedelta(days=3))
        await put(saver, "new", timedelta(minutes=5))
        assert await delete_threads_older_than(saver, keep_days=2, now=NOW) == ["old"]
        assert await exists(saver, "new")


async def test_service_sweeps_at_startup(tmp_path: Path) -> None:
    async with make_checkpointer(tmp_path / "svc.sqlite") as saver:
        await put(saver, "ancient", timedelta(days=400), now=datetime.now(UTC))
        await put(saver, "fresh", timedelta(0), now=datetime.now(UTC))
        settings = ServiceSettings(
            fleet="embedded", start_embedded=False, checkpointer=saver, keep_days=30
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            assert not await exists(saver, "ancient")
            assert await exists(saver, "fresh")


def test_keep_days_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="keep_days"):
        ServiceSettings(keep_days=0)


async def test_service_keeps_sweeping_while_it_runs(tmp_path: Path) -> None:
    async with make_checkpointer(tmp_path / "svc.sqlite") as saver:
        settings = ServiceSettings(
            fleet="embedded",
            start_embedded=False,
            checkpointer=saver,
            keep_days=1,
            retention_interval_s=0.05,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            await put(saver, "went_stale", timedelta(days=2), now=datetime.now(UTC))
            for _ in range(100):
                if not await exists(saver, "went_stale"):
                    break
                await asyncio.sleep(0.02)
            assert not await exists(saver, "went_stale")
        # The sweeper stopped with the app: nothing is deleted after shutdown.
        await put(saver, "after_shutdown", timedelta(days=2), now=datetime.now(UTC))
        await asyncio.sleep(0.15)
        assert await exists(saver, "after_shutdown")
