"""Running a plan: dispatch sends every task at once; each agent node waits for its own deps.

The completion registry, per-endpoint task messages and progress events of a task.
"""

from graph.execution._agent_node import agent, dispatch

__all__ = [
    "agent",
    "dispatch",
]
