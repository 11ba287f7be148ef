"""The checkpoint a node runs at: read it, or write to it, through LangGraph's public API.

A node that resumes a run reads what the checkpoint holds (results of tasks that
finished before an interruption, the run's images), and a finished task writes its
result there before its dependents wake. LangGraph hands a node its thread, checkpoint
and task ids (``Runtime.execution_info``) but not its checkpointer, so a graph bound to
a checkpointer with :func:`with_checkpointer` carries it in its own config under
:data:`CHECKPOINTER_KEY`; :func:`current_checkpoint` puts the two together.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple
from langgraph.config import get_config
from langgraph.pregel import Pregel
from langgraph.runtime import get_runtime

CHECKPOINTER_KEY = "kitty_checkpointer"
"""The ``configurable`` key under which a bound graph carries its checkpointer."""

GraphT = TypeVar("GraphT", bound=Pregel[Any, Any, Any, Any])


def with_checkpointer(graph: GraphT, checkpointer: BaseCheckpointSaver) -> GraphT:
    """``graph`` saving to ``checkpointer``, which its nodes find by :func:`current_checkpoint`."""
    bound = graph.copy(update={"checkpointer": checkpointer})
    return bound.with_config(configurable={CHECKPOINTER_KEY: checkpointer})


@dataclass(frozen=True)
class RunCheckpoint:
    """Where a node of a durable run stands: its checkpointer, thread, checkpoint and task.

    Attributes:
        checkpointer: The run's checkpointer.
        thread_id: The run's thread.
        checkpoint_id: The checkpoint the node's superstep started from (``None``: the
            thread's latest).
        task_id: LangGraph's id of the node's task (needed to write, not to read).
    """

    checkpointer: BaseCheckpointSaver
    thread_id: str
    checkpoint_id: str | None = None
    task_id: str | None = None

    def _config(self) -> RunnableConfig:
        lookup: dict[str, Any] = {"thread_id": self.thread_id, "checkpoint_ns": ""}
        if self.checkpoint_id:
            lookup["checkpoint_id"] = self.checkpoint_id
        return {"configurable": lookup}

    async def read(self) -> CheckpointTuple | None:
        """The checkpoint with its pending writes (``None``: nothing saved yet)."""
        try:
            return await self.checkpointer.aget_tuple(self._config())
        except NotImplementedError:  # a synchronous-only saver
            return await asyncio.to_thread(self.checkpointer.get_tuple, self._config())

    async def write(self, writes: list[tuple[str, Any]], task_suffix: str) -> bool:
        """Save ``writes`` to this checkpoint, filed under the node's task id + ``task_suffix``.

        Returns:
            False when there is nothing to write to (no checkpoint or task id).
        """
        if not (self.checkpoint_id and self.task_id):
            return False
        await self.checkpointer.aput_writes(self._config(), writes, f"{self.task_id}{task_suffix}")
        return True


def current_checkpoint() -> RunCheckpoint | None:
    """The calling node's :class:`RunCheckpoint`; ``None`` outside a graph or not durable.

    A graph run without a checkpointer bound by :func:`with_checkpointer` (LangGraph
    Studio adds its own, which nodes cannot see) gets ``None``: nothing to read or write.
    """
    try:
        config = get_config()
        info = get_runtime().execution_info
    except RuntimeError:  # not inside a graph run
        return None
    checkpointer = (config.get("configurable") or {}).get(CHECKPOINTER_KEY)
    if not isinstance(checkpointer, BaseCheckpointSaver) or info is None or not info.thread_id:
        return None
    return RunCheckpoint(checkpointer, info.thread_id, info.checkpoint_id, info.task_id)
