"""``kitty-orch bench tools``: tool-call validity on the fleet's model, and slot release.

Validity: tool tasks with named and ``required`` choices over small Python tools, each
counted as parsed (the first round produced a call), schema-valid (not refused) and
executed (the tool ran). On SmolLM2-135M the goal is 100 %.

Slot release: one DAG run twice side by side, its tool tasks calling a slow tool. In the
"released" run the tool only sleeps, as the product does it (no model slot is held while
a tool runs); in the "held" run the same tool also holds one slot of the endpoint for
its whole duration, which is what a tool loop that kept its slot would cost. The ratio
of the two makespans is what releasing the slot buys.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel, Field

from endpoints.fleet import get_runtime
from graph.api import arun_goal
from graph.schemas import RunResult
from kitty.bench._env import BenchEnv


class _CityArgs(BaseModel):
    city: str = Field(description="City name")


class _PartArgs(BaseModel):
    part_id: str = Field(description="Part number, e.g. M4-12")


class _ConvertArgs(BaseModel):
    value: float = Field(description="Amount to convert")
    unit: str = Field(description="Unit of the amount: mm or inch")


async def _weather(city: str) -> str:
    return f"{city}: 18 C, dry"


async def _part(part_id: str) -> str:
    return f"{part_id}: 240 in stock"


async def _convert(value: float, unit: str) -> str:
    return f"{value * 25.4:.1f} mm" if unit.startswith("in") else f"{value / 25.4:.2f} in"


def validity_tools() -> list[BaseTool]:
    """Three small tools with string and number arguments."""
    return [
        StructuredTool.from_function(
            coroutine=_weather,
            name="get_weather",
            args_schema=_CityArgs,
            description="Current weather in a city.",
        ),
        StructuredTool.from_function(
            coroutine=_part,
            name="lookup_part",
            args_schema=_PartArgs,
            description="Stock of a part number.",
        ),
        StructuredTool.from_function(
            coroutine=_convert,
            name="convert_units",
            args_schema=_ConvertArgs,
            description="Convert between millimetres and inches.",
        ),
    ]


PROMPTS = {
    "get_weather": "What is the weather in {x}?",
    "lookup_part": "How many {x} bolts are in stock?",
    "convert_units": "Convert {x} inches to millimetres.",
}
SUBJECTS = ["Oslo", "Lima", "M4-12", "M3-8", "2.5", "7", "Cairo", "M5-20", "0.75", "Kyoto"]


def _validity_plan(batch: int, size: int) -> dict[str, Any]:
    names = list(PROMPTS)
    tasks = []
    for index in range(size):
        number = batch * size + index
        name = names[number % len(names)]
        choice = name if number % 2 == 0 else "required"
        tasks.append(
            {
                "id": f"t{number:02d}",
                "agent": "coder",
                "description": PROMPTS[name].format(x=SUBJECTS[number % len(SUBJECTS)]),
                "tool_choice": choice,
                "max_tokens": 16,
                "extra": {"seed": number},
            }
        )
    return {"tasks": tasks}


async def _validity(env: BenchEnv, total: int, batch_size: int) -> dict[str, Any]:
    tools = validity_tools()
    parsed = valid = executed = 0
    by_choice: dict[str, list[int]] = {"named": [0, 0], "required": [0, 0]}
    began = time.perf_counter()
    for batch in range((total + batch_size - 1) // batch_size):
        size = min(batch_size, total - batch * batch_size)
        result = await arun_goal(
            "Answer with one tool call each",
            fleet=env.fleet,
            plan=_validity_plan(batch, size),
            tools=tools,
            agent_tools={"coder": list(PROMPTS)},
            tool_rounds=2,
            voice=False,
            synthesis_max_tokens=8,
        )
        for task, planned in zip(result.tasks, result.plan.tasks, strict=True):
            first = task.tool_calls[0] if task.tool_calls else None
            kind = "required" if planned.tool_choice == "required" else "named"
            by_choice[kind][1] += 1
            if first is None:
                continue
            parsed += 1
            valid += not first.refused
            executed += first.ok
            by_choice[kind][0] += first.ok
    return {
        "tasks": total,
        "parsed": parsed,
        "schema_valid": valid,
        "executed": executed,
        "executed_named": by_choice["named"],
        "executed_required": by_choice["required"],
        "wall_s": round(time.perf_counter() - began, 1),
    }


def _slow_tool(env: BenchEnv, seconds: float, hold: bool) -> BaseTool:
    runtime = get_runtime(env.fleet)

    async def inspect_printer(printer: str) -> str:
        if not hold:
            await asyncio.sleep(seconds)
        else:
            handle = runtime.candidates(["coder"])[0]
            async with handle.limiter.slot():
                await asyncio.sleep(seconds)
        return f"{printer}: nozzle clean, bed level"

    class _Args(BaseModel):
        printer: str = Field(description="Printer name")

    return StructuredTool.from_function(
        coroutine=inspect_printer,
        name="inspect_printer",
        args_schema=_Args,
        description="Inspect a printer (slow: walks to it).",
    )


def _release_plan(tool_tasks: int, plain_tasks: int) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = [
        {
            "id": f"inspect_{i}",
            "agent": "coder",
            "description": f"Inspect printer p{i}.",
            "tool_choice": "inspect_printer",
            "max_tokens": 8,
            "extra": {"seed": i},
        }
        for i in range(tool_tasks)
    ]
    tasks += [
        {
            "id": f"write_{i}",
            "agent": "coder",
            "description": f"Name sorting algorithm number {i}.",
            "max_tokens": 24,
            "extra": {"ignore_eos": True, "seed": i},
        }
        for i in range(plain_tasks)
    ]
    return {"tasks": tasks}


async def _release(
    env: BenchEnv, tool_tasks: int, plain_tasks: int, seconds: float
) -> dict[str, Any]:
    runs: dict[str, list[float]] = {"released": [], "held": []}
    for rep in range(env.reps):
        for mode in ("released", "held") if rep % 2 == 0 else ("held", "released"):
            tool = _slow_tool(env, seconds, hold=mode == "held")
            result: RunResult = await arun_goal(
                "Inspect the printers and name algorithms",
                fleet=env.fleet,
                plan=_release_plan(tool_tasks, plain_tasks),
                tools=[tool],
                agent_tools={"coder": ["inspect_printer"]},
                tool_rounds=2,
                voice=False,
                synthesis_max_tokens=8,
            )
            runs[mode].append(result.metrics.execution_s)
    released, held = min(runs["released"]), min(runs["held"])
    slots = get_runtime(env.fleet).candidates(["coder"])[0].limiter.capacity
    return {
        "tool_tasks": tool_tasks,
        "plain_tasks": plain_tasks,
        "tool_seconds": seconds,
        "coder_slots": slots,
        "released_makespan_s": round(released, 2),
        "held_makespan_s": round(held, 2),
        "held_over_released": round(held / released, 2) if released else None,
    }


async def run_tools(env: BenchEnv) -> dict[str, Any]:
    """Both measurements on ``env``'s fleet (its ``coder`` tier)."""
    env.ensure_fleet()
    total, batch = {"full": (50, 10), "quick": (20, 10), "smoke": (4, 4)}[env.size]
    validity = await _validity(env, total, batch)
    shape = {"full": (4, 6, 3.0), "quick": (4, 4, 2.0), "smoke": (2, 2, 1.0)}[env.size]
    release = await _release(env, *shape)
    return {"validity": validity, "release": release}


def render_tools(suite: dict[str, Any]) -> list[str]:
    """Markdown for the suite."""
    v, r = suite["validity"], suite["release"]

    def pct(n: int) -> str:
        return f"{n}/{v['tasks']} ({100 * n / max(v['tasks'], 1):.0f} %)"

    named, required = v["executed_named"], v["executed_required"]
    return [
        "| tool tasks | calls parsed | schema-valid | executed | named executed "
        "| required executed |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {v['tasks']} | {pct(v['parsed'])} | {pct(v['schema_valid'])} | "
        f"{pct(v['executed'])} | {named[0]}/{named[1]} | {required[0]}/{required[1]} |",
        "",
        "| DAG | slot released while tools run | slot held | held / released |",
        "|---|---:|---:|---:|",
        f"| {r['tool_tasks']} tasks with a {r['tool_seconds']:g} s tool + {r['plain_tasks']} "
        f"plain, {r['coder_slots']} coder slots | {r['released_makespan_s']} s | "
        f"{r['held_makespan_s']} s | {r['held_over_released']}x |",
    ]
