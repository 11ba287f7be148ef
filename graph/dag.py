"""A plan as a graph: its cycles, a stable order, its depth and its critical paths."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from graph.schemas import Task
from kitty.errors import PlanError


def back_edges(tasks: list[Task]) -> Iterator[tuple[str, list[str]]]:
    """Depth-first search over dependencies in plan order, without recursion.

    Yields ``(dep, path)`` for each dependency edge that leads back into the current
    path (``path[-1]`` depends on ``dep``, which is on ``path``): each closes a cycle.
    Iterative because a caller's plan may be a chain hundreds of tasks deep. ``path``
    changes as the search goes on; copy what you keep.
    """
    by_id = {t.id: t for t in tasks}
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    for root in by_id:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        pending = [iter(by_id[root].dependencies)]
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                state[path.pop()] = 2
                pending.pop()
            elif dep not in by_id or state.get(dep) == 2:
                continue
            elif state.get(dep) == 1:
                yield dep, path
            else:
                state[dep] = 1
                path.append(dep)
                pending.append(iter(by_id[dep].dependencies))


def find_cycle(tasks: list[Task]) -> list[str] | None:
    """Return one dependency cycle as a list of ids (first id repeated last), or None."""
    for dep, path in back_edges(tasks):
        return [*path[path.index(dep) :], dep]
    return None


def topological_order(tasks: list[Task]) -> list[Task]:
    """Kahn's algorithm, stable with respect to the given order (assumes no cycle)."""
    remaining = {t.id: set(t.dependencies) for t in tasks}
    ordered: list[Task] = []
    by_id = {t.id: t for t in tasks}
    while remaining:
        ready = [tid for tid in by_id if tid in remaining and not remaining[tid]]
        if not ready:
            raise PlanError("plan has a dependency cycle")
        for tid in ready:
            ordered.append(by_id[tid])
            del remaining[tid]
        for deps in remaining.values():
            deps.difference_update(ready)
    return ordered


def critical_path_length(tasks: list[Task]) -> int:
    """Number of tasks on the longest dependency chain (1 for independent tasks)."""
    depth: dict[str, int] = {}
    for task in topological_order(tasks):
        depth[task.id] = 1 + max((depth[d] for d in task.dependencies if d in depth), default=0)
    return max(depth.values(), default=0)


def remaining_critical_path(tasks: list[Task], cost: Callable[[Task], float]) -> dict[str, float]:
    """Per task id: its own ``cost`` plus the costliest chain of tasks that build on it.

    The slot priority of a task: granting slots to the longest remaining path
    first keeps a long chain from waiting behind short independent tasks.
    """
    children: dict[str, list[str]] = {t.id: [] for t in tasks}
    for task in tasks:
        for dep in task.dependencies:
            if dep in children:
                children[dep].append(task.id)
    remaining: dict[str, float] = {}
    for task in reversed(topological_order(tasks)):
        after = max((remaining[c] for c in children[task.id]), default=0.0)
        remaining[task.id] = cost(task) + after
    return remaining
