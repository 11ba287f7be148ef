"""Pictures of a run: the plan as a DAG and a Gantt timeline per endpoint slot.

Needs matplotlib (the ``charts`` extra); nothing else in the graph imports it.
"""

from graph.charts._timeline import plot_timeline

__all__ = [
    "plot_timeline",
]
