"""Checkpointers for durable runs: SQLite by default, in-memory for tests, Postgres by URL.

A run's checkpoints let it resume after a crash without redoing finished tasks.
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

__all__ = [
    "CHECKPOINTS_ENV_VAR",
    "MEMORY",
    "CheckpointError",
    "check_location",
    "default_checkpoint_location",
    "delete_threads_older_than",
    "describe_location",
    "make_checkpointer",
    "shared_memory_checkpointer",
]
