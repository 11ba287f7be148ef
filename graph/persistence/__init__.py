"""Checkpointers for durable runs: SQLite by default, in-memory for tests, Postgres by URL.

A run's checkpoints let it resume after a crash without redoing finished tasks; a node
reads and writes its own checkpoint through :func:`current_checkpoint`.
"""

from graph.persistence._checkpointers import (
    CHECKPOINTS_ENV_VAR,
    MEMORY,
    CheckpointError,
    check_location,
    default_checkpoint_location,
    delete_threads_older_than,
    describe_location,
    make_checkpointer,
    shared_memory_checkpointer,
)
from graph.persistence._run_checkpoint import (
    CHECKPOINTER_KEY,
    RunCheckpoint,
    current_checkpoint,
    with_checkpointer,
)

__all__ = [
    "CHECKPOINTER_KEY",
    "CHECKPOINTS_ENV_VAR",
    "MEMORY",
    "CheckpointError",
    "RunCheckpoint",
    "check_location",
    "current_checkpoint",
    "default_checkpoint_location",
    "delete_threads_older_than",
    "describe_location",
    "make_checkpointer",
    "shared_memory_checkpointer",
    "with_checkpointer",
]
