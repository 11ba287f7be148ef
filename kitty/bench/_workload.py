"""Benchmark workloads: DAG shapes with pinned token counts, and large generated plans.

Every task is *pinned*: a per-task ``max_tokens`` plus llama.cpp's ``ignore_eos``, so the
server generates exactly that many tokens whatever the model says, and a fixed ``seed``,
so a task's output - and with it every dependent's prompt - is the same for every
scheduler. Token counts, not model whims, decide how long each task takes.

Agents map to endpoints of the embedded fleet through their primary tier: researcher,
analyst, cad_designer and fabricator -> tools (4 slots); reasoner -> reasoning (2);
vision_analyst -> vision (2); coder -> coder (2); summarizer -> summary (2).
"""

from __future__ import annotations

from dataclasses import dataclass

from graph import Plan, Task

PINNED = {"ignore_eos": True, "seed": 7}


def pinned(
    task_id: str, agent: str, tokens: int, deps: list[str] | None = None, what: str = ""
) -> Task:
    """A task that generates exactly ``tokens`` tokens on llama.cpp, offered no tools.

    Without tools the product's system prompt is the agent's plus
    :data:`graph.prompts.NO_TOOLS`, whatever tools the fleet configures, and the
    baselines (:mod:`kitty.bench._prompting`) send exactly that.
    """
    description = what or f"Write part {task_id} of the answer as the {agent}"
    return Task(
        id=task_id,
        agent=agent,
        description=description,
        dependencies=list(deps or []),
        max_tokens=max(1, tokens),
        extra=dict(PINNED),
        tool_choice="none",
    )


@dataclass(frozen=True)
class Dag:
    """A named benchmark DAG.

    Attributes:
        name: Short id used in tables and file names.
        shape: One line describing the shape and why it separates the schedulers.
        goal: The goal text every variant puts in its prompts.
        tasks: Pinned tasks in topological order.
    """

    name: str
    shape: str
    goal: str
    tasks: list[Task]

    @property
    def plan(self) -> Plan:
        """The DAG as a plan for the product."""
        return Plan(tasks=[t.model_copy(deep=True) for t in self.tasks], source="given")

    @property
    def tokens(self) -> int:
        """Completion tokens over all tasks."""
        return sum(t.max_tokens or 0 for t in self.tasks)


GOAL = "Plan a small wall hook for a 2 kg bag: research, design, print settings"


def scheduling_dags(scale: float = 1.0) -> list[Dag]:
    """The scheduling suite: five shapes (token counts multiplied by ``scale``).

    Args:
        scale: Factor on every pinned token count (``--quick`` uses a smaller one).
    """

    def n(tokens: int) -> int:
        return max(1, round(tokens * scale))

    return [
        Dag(
            "fan_out_join",
            "4 parallel tasks on 3 endpoints, then one join",
            GOAL,
            [
                pinned("t1", "researcher", n(48)),
                pinned("t2", "coder", n(40)),
                pinned("t3", "vision_analyst", n(32)),
                pinned("t4", "analyst", n(24)),
                pinned("t5", "reasoner", n(16), ["t1", "t2", "t3", "t4"]),
            ],
        ),
        Dag(
            "chain_beside_long",
            "a 4-step chain (tools) beside one long task (coder)",
            GOAL,
            [
                pinned("c1", "researcher", n(16)),
                pinned("c2", "analyst", n(16), ["c1"]),
                pinned("c3", "fabricator", n(16), ["c2"]),
                pinned("c4", "cad_designer", n(16), ["c3"]),
                pinned("long", "coder", n(64)),
            ],
        ),
        Dag(
            "two_chains",
            "a fast 5-step chain (tools) and a slow 2-step chain (coder)",
            GOAL,
            [
                pinned("f1", "researcher", n(12)),
                pinned("f2", "analyst", n(12), ["f1"]),
                pinned("f3", "fabricator", n(12), ["f2"]),
                pinned("f4", "cad_designer", n(12), ["f3"]),
                pinned("f5", "researcher", n(12), ["f4"]),
                pinned("s1", "coder", n(32)),
                pinned("s2", "coder", n(32), ["s1"]),
            ],
        ),
        Dag(
            "skewed_diamond",
            "a, then a long b beside a chain c1 -> c2 -> c3, then d joins both",
            GOAL,
            [
                pinned("a", "researcher", n(8)),
                pinned("b", "coder", n(56), ["a"]),
                pinned("c1", "analyst", n(16), ["a"]),
                pinned("c2", "vision_analyst", n(16), ["c1"]),
                pinned("c3", "fabricator", n(16), ["c2"]),
                pinned("d", "reasoner", n(12), ["b", "c3"]),
            ],
        ),
        Dag(
            "wide_fan_out",
            "8 mixed-length tools tasks on 4 slots, follow-ups, one join",
            GOAL,
            [
                *[
                    pinned(f"w{i}", agent, n(tokens))
                    for i, (agent, tokens) in enumerate(
                        [
                            ("researcher", 32),
                            ("analyst", 8),
                            ("fabricator", 32),
                            ("cad_designer", 8),
                            ("researcher", 24),
                            ("analyst", 8),
                            ("fabricator", 24),
                            ("cad_designer", 8),
                        ],
                        start=1,
                    )
                ],
                pinned("s2", "summarizer", n(16), ["w2"]),
                pinned("s4", "summarizer", n(16), ["w4"]),
                pinned("v6", "vision_analyst", n(16), ["w6"]),
                pinned("v8", "vision_analyst", n(16), ["w8"]),
                pinned("j", "reasoner", n(12), ["w1", "w3", "w5", "w7", "s2", "s4", "v6", "v8"]),
            ],
        ),
    ]


_AGENT_CYCLE = [
    "researcher",
    "analyst",
    "coder",
    "vision_analyst",
    "fabricator",
    "reasoner",
    "cad_designer",
    "summarizer",
]


#: One agent per tier of the embedded fleet: each server sees one system prompt, so its
#: prompt cache keeps it and a 1-token task costs little more than its request.
ONE_AGENT_PER_TIER = ["researcher", "reasoner", "vision_analyst", "coder", "summarizer"]


def layered_plan(
    count: int, tokens: int = 1, width: int = 10, agents: list[str] | None = None
) -> Plan:
    """A large DAG: layers of ``width`` tasks, agents in rotation, some dependencies.

    Every third task of a layer depends on one or two tasks of the layer before, so the
    plan has ``count / width`` levels and most tasks are ready at once.

    Args:
        count: Number of tasks.
        tokens: Pinned completion tokens per task.
        width: Tasks per layer.
        agents: Agents to rotate through (default: all eight).
    """
    cycle = agents or _AGENT_CYCLE
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    tasks: list[Task] = []
    for index in range(count):
        layer, position = divmod(index, width)
        deps: list[str] = []
        if layer and position % 3 == 0:
            before = (layer - 1) * width
            deps = [f"task_{before + position + 1}"]
            if position + 1 < width and before + position + 2 <= index:
                deps.append(f"task_{before + position + 2}")
        agent = cycle[index % len(cycle)]
        tasks.append(pinned(f"task_{index + 1}", agent, tokens, deps, f"Item {index + 1}"))
    return Plan(tasks=tasks, source="given")


def small_goal_plan(index: int, tokens: int = 8) -> Plan:
    """A 3-task plan for the scale suite: two parallel tasks and a join, on three tiers."""
    tiers = ONE_AGENT_PER_TIER
    first, second, join = (tiers[(index + k) % len(tiers)] for k in (0, 2, 4))
    return Plan(
        tasks=[
            pinned("task_1", first, tokens, what=f"Gather facts for goal {index}"),
            pinned("task_2", second, tokens, what=f"Draft a design for goal {index}"),
            pinned("task_3", join, tokens, ["task_1", "task_2"], f"Combine for goal {index}"),
        ],
        source="given",
    )


def contention_dags(scale: float = 1.0) -> list[Dag]:
    """The contention suite: long chains behind wide fan-outs of short tasks, scarce slots.

    Every DAG lists its short independent tasks *first*, so a FIFO scheduler queues the
    chain behind all of them; a scheduler that grants slots to the longest remaining
    path starts the chain at once and fills the other slot(s) with the short tasks. Run
    them with :data:`CONTENTION_SLOTS` (tools 2 slots, coder 1).

    Args:
        scale: Factor on every pinned token count.
    """

    def n(tokens: int) -> int:
        return max(1, round(tokens * scale))

    tools = ["researcher", "analyst", "fabricator", "cad_designer"]
    return [
        Dag(
            "chain_behind_fan_out",
            "12 short tools tasks listed first, then a 5-step tools chain; 2 slots",
            GOAL,
            [
                *[pinned(f"w{i}", tools[i % 4], n(24)) for i in range(1, 13)],
                *[
                    pinned(f"c{i}", tools[i % 4], n(96), [f"c{i - 1}"] if i > 1 else [])
                    for i in range(1, 6)
                ],
            ],
        ),
        Dag(
            "chain_across_tiers",
            "10 short tasks on each of tools and coder, then a 6-step chain alternating "
            "between them; 1 slot each",
            GOAL,
            [
                *[pinned(f"t{i}", tools[i % 4], n(8)) for i in range(1, 11)],
                *[pinned(f"k{i}", "coder", n(8)) for i in range(1, 11)],
                *[
                    pinned(
                        f"c{i}",
                        "coder" if i % 2 == 0 else tools[i % 4],
                        n(48),
                        [f"c{i - 1}"] if i > 1 else [],
                    )
                    for i in range(1, 7)
                ],
            ],
        ),
        Dag(
            "fan_out_chain_join",
            "16 short tools tasks listed first, a 4-step chain, then a join of all; 2 slots",
            GOAL,
            [
                *[pinned(f"w{i}", tools[i % 4], n(8)) for i in range(1, 17)],
                *[
                    pinned(f"c{i}", tools[i % 4], n(64), [f"c{i - 1}"] if i > 1 else [])
                    for i in range(1, 5)
                ],
                pinned("join", "analyst", n(16), [*(f"w{i}" for i in range(1, 17)), "c4"]),
            ],
        ),
    ]


#: Scarce slots for the contention and fairness suites, by tier (applied to the tier's
#: first endpoint): few enough that short independent tasks really compete with a chain.
CONTENTION_SLOTS = {"tools": 2, "coder": 1}


def fairness_plans(scale: float = 1.0, small_goals: int = 5) -> list[tuple[str, Plan]]:
    """One big goal and ``small_goals`` small ones, as (goal, plan), big first.

    The big goal is 12 independent tools tasks and a two-step tail; each small goal is
    two short tools tasks and a join. Submitted together in this order, a FIFO order
    serves the big goal's 12 tasks before any small goal's.

    Args:
        scale: Factor on every pinned token count.
        small_goals: How many small goals.
    """

    def n(tokens: int) -> int:
        return max(1, round(tokens * scale))

    tools = ["researcher", "analyst", "fabricator", "cad_designer"]
    leaves = [pinned(f"b{i}", tools[i % 4], n(32), what=f"Big part {i}") for i in range(1, 13)]
    big = Plan(
        tasks=[
            *leaves,
            pinned("join", "analyst", n(16), [t.id for t in leaves], "Join the big parts"),
            pinned("final", "researcher", n(16), ["join"], "Finish the big goal"),
        ],
        source="given",
    )
    plans = [("Big goal: a complete design review", big)]
    for index in range(1, small_goals + 1):
        small = Plan(
            tasks=[
                pinned("a", tools[index % 4], n(16), what=f"Fact A of small goal {index}"),
                pinned("b", tools[(index + 1) % 4], n(16), what=f"Fact B of small goal {index}"),
                pinned("c", tools[(index + 2) % 4], n(16), ["a", "b"], f"Answer goal {index}"),
            ],
            source="given",
        )
        plans.append((f"Small goal {index}: a quick question", small))
    return plans
