"""Pictures of a run: the plan as a DAG and a Gantt timeline per endpoint slot.

Needs matplotlib (the ``charts`` extra); nothing else in the graph imports it. Without it,
importing this package fails with one line naming the ``pip install`` that adds it.
"""

from graph.charts._requirement import require_matplotlib as _require_matplotlib

_require_matplotlib()

from graph.charts._plan_chart import plot_plan  # noqa: E402  (after the check above)
from graph.charts._timeline import (  # noqa: E402
    compare_timelines,
    plot_timeline,
    timeline_lanes,
)

__all__ = [
    "compare_timelines",
    "plot_plan",
    "plot_timeline",
    "timeline_lanes",
]
