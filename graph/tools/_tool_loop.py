"""The tool loop of an agent task: model -> tool calls -> tool results -> model.

A task whose agent is offered tools runs at most ``tool_rounds`` model calls. Each round
is its own :func:`~endpoints.calls.call_tiers`: the model slot is held for the request
only and given back while the tools run, and later rounds take a slot again ahead of
tasks that have not started (:data:`RESUMED_PRIORITY`). Every call is checked before it
runs (:func:`kitty.tools._validation.refusal`); a refused, failing or timed-out call becomes a
tool message that says why, never an exception. The last round offers no tools, so the
task always ends with an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage
from langchain_core.tools import BaseTool
from opentelemetry.trace import NoOpTracer, Span, Tracer

from endpoints.calls import CallOutcome
from endpoints.config import EndpointConfig
from graph._node_support import emit
from graph.events import TaskToolCall
from graph.schemas import Task, ToolCallRecord
from graph.tools._tool_calls import (
    TOOL_OUTPUT_CHARS,
    Offer,
    ParsedCall,
    first_offer,
    parse_calls,
    round_messages,
    tool_text,
)
from kitty.telemetry import error_type, record_error, tool_span
from kitty.tools import parameters_of, refusal

logger = logging.getLogger("kitty.graph")

RESUMED_PRIORITY = 1_000_000.0
"""Slot priority of a task's later rounds: ahead of every task that has not started."""
TOOL_ROUND_MAX_TOKENS = 200
"""Completion cap of a round that must call a tool: a call is short, and a small model
goes on writing after it until the cap."""
MAX_CALLS_PER_ROUND = 4
MAX_BAD_ROUNDS = 2


@dataclass
class ToolRunner:
    """Runs the checked calls of one task and keeps their records.

    Each call, refused ones too, is an ``execute_tool`` span of ``tracer`` (a child of
    the task's span); its ``error.type`` says ``refused``, ``timeout`` or the exception.
    """

    run_id: str
    task: Task
    timeout_s: float
    tracer: Tracer = field(default_factory=NoOpTracer)
    records: list[ToolCallRecord] = field(default_factory=list)

    def _event(self, record: ToolCallRecord, phase: str) -> None:
        emit(
            TaskToolCall(
                run_id=self.run_id,
                task_id=self.task.id,
                agent=self.task.agent,
                tool=record.name,
                phase="started" if phase == "started" else "finished",
                args=record.args,
                seconds=record.latency_s,
                ok=record.ok,
                refused=record.refused,
                error=record.error,
            )
        )

    async def run(self, call: ParsedCall, offered: dict[str, BaseTool]) -> str:
        """Run one call (or refuse it); return what the model is told."""
        with tool_span(
            self.tracer, tool=call.name, call_id=call.id, task_id=self.task.id, run_id=self.run_id
        ) as span:
            return await self._run(call, offered, span)

    async def _run(self, call: ParsedCall, offered: dict[str, BaseTool], span: Span) -> str:
        args = call.args if isinstance(call.args, dict) else {"raw": call.args}
        record = ToolCallRecord(name=call.name, args=args, started_at=time.time())
        self.records.append(record)
        why = refusal(call.name, call.args, offered)
        if why is not None:
            record.refused, record.error = True, why
            record_error(span, "refused")
            self._event(record, "finished")
            return f"refused: {why}"
        self._event(record, "started")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = tool_text(await offered[call.name].ainvoke(call.args))
        except TimeoutError:
            record.error = (
                f"tool {call.name!r} did not answer within {self.timeout_s:g}s "
                "(raise tool_timeout_s if it needs longer)"
            )
            record_error(span, "timeout")
        except Exception as exc:  # a tool's failure is the model's to handle, not the run's
            record.error = f"tool {call.name!r} failed: {type(exc).__name__}: {exc}"
            record_error(span, error_type(exc))  # its text may quote content: not recorded
        else:
            record.ok, record.output = True, answer[:TOOL_OUTPUT_CHARS]
        record.latency_s = time.perf_counter() - started
        self._event(record, "finished")
        return record.output if record.ok else f"error: {record.error}"


@dataclass
class Exchange:
    """One tool round: the calls the model made, what each returned, text beside them."""

    calls: list[ParsedCall]
    replies: list[str]
    text: str


@dataclass
class LoopResult:
    """How a task's tool loop ended.

    Attributes:
        outcome: The model calls of every round, combined; its text is the answer.
        records: Every tool call asked for.
        warnings: What the user should know about a completed task.
        error: Why the loop could not start (a named tool that is not offered).
    """

    outcome: CallOutcome | None
    records: list[ToolCallRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


BaseMessages = Callable[[EndpointConfig, str], Awaitable[list[BaseMessage]]]
"""``(endpoint, reserve) -> messages``: the task's prompt for that endpoint, its budget
leaving room for ``reserve`` (the tool schemas and the rounds so far)."""
RoundCall = Callable[
    [Callable[[EndpointConfig], Awaitable[list[BaseMessage]]], Offer, int, float],
    Awaitable[CallOutcome],
]
"""``(messages, offer, max_tokens, priority) -> outcome``: one model round."""
Combine = Callable[[CallOutcome, CallOutcome], CallOutcome]


def _reserve(offer: Offer, exchanges: list[Exchange]) -> str:
    schemas = [{"name": n, "parameters": parameters_of(t)} for n, t in offer.tools.items()]
    rounds = [
        f"{c.name} {json.dumps(c.args, default=str)} -> {reply}"
        for exchange in exchanges
        for c, reply in zip(exchange.calls, exchange.replies, strict=True)
    ]
    return json.dumps(schemas) + "\n".join(rounds)


def _round_builder(
    base_messages: BaseMessages, offer: Offer, done: list[Exchange], native: dict[str, bool]
) -> Callable[[EndpointConfig], Awaitable[list[BaseMessage]]]:
    """The messages of one round for an endpoint: the prompt, then the rounds so far."""

    async def messages(endpoint: EndpointConfig) -> list[BaseMessage]:
        base = await base_messages(endpoint, _reserve(offer, done))
        is_native = native.get(endpoint.name, False)
        return base + [
            m for ex in done for m in round_messages(ex.calls, ex.replies, ex.text, is_native)
        ]

    return messages


async def run_tool_loop(
    task: Task,
    tools: dict[str, BaseTool],
    *,
    problems: list[str],
    rounds: int,
    max_tokens: int,
    native: dict[str, bool],
    base_messages: BaseMessages,
    call_round: RoundCall,
    combine: Combine,
    runner: ToolRunner,
) -> LoopResult:
    """Run a task's rounds until the model answers without calling a tool.

    Args:
        task: The task (its ``tool_choice`` shapes the first round).
        tools: The tools it is offered this run.
        problems: Tool sources that failed to start (named in errors and warnings).
        rounds: Most model calls (``tool_rounds``); the last offers no tools.
        max_tokens: The task's completion cap (tool-forcing rounds use less).
        native: Endpoint name -> whether its server parses tool calls itself.
        base_messages: The task's prompt per endpoint.
        call_round: Makes one model round.
        combine: Merges the outcomes of two rounds.
        runner: Runs the calls and keeps their records.
    """
    first = first_offer(task.tool_choice, tools)
    if isinstance(first, str):
        return LoopResult(None, error="; ".join([first, *problems]))
    offer, exchanges, total = first, list[Exchange](), None
    warnings = [f"tool source unavailable: {p}" for p in problems]
    bad_rounds = 0
    index = 0
    while index < rounds:
        if index == rounds - 1 or bad_rounds >= MAX_BAD_ROUNDS:
            offer = Offer({}, None)
        messages = _round_builder(base_messages, offer, list(exchanges), native)
        # A forced call is not the answer: it gets its own cap, whatever the task's is.
        cap = TOOL_ROUND_MAX_TOKENS if offer.forced else max_tokens
        outcome = await call_round(messages, offer, cap, RESUMED_PRIORITY if index else 0.0)
        total = outcome if total is None else combine(total, outcome)
        if not outcome.ok:
            break
        calls: list[ParsedCall] = []
        text = outcome.text
        served_by = outcome.endpoint or ""
        if offer.choice is not None:
            calls, text = parse_calls(outcome, native.get(served_by, False))
        if not calls and offer.forced and native.get(served_by):
            # The server took `tools` but did not constrain the call (a template it could
            # not analyse): constrain this endpoint's calls ourselves from now on.
            logger.info("%s ignored a required tool call; constraining it with a schema", served_by)
            native[served_by] = False
            continue
        if not calls and offer.forced:
            # No usable call (cut at the cap, say): the answer comes from a plain round.
            warnings.append("the model gave no usable call although its tool_choice required one")
            offer = Offer({}, None)
            index = max(index + 1, rounds - 1)
            continue
        if not calls:
            total.text = text
            break
        seen = len(runner.records)
        replies = [await runner.run(call, offer.tools) for call in calls[:MAX_CALLS_PER_ROUND]]
        exchanges.append(Exchange(calls[:MAX_CALLS_PER_ROUND], replies, text))
        if all(r.refused for r in runner.records[seen:]):
            bad_rounds += 1
            if bad_rounds == MAX_BAD_ROUNDS:
                warnings.append(
                    f"{bad_rounds} rounds of refused tool calls: the task answered without "
                    "tools (see tool_calls for why each was refused)"
                )
        offer = Offer(tools, "auto")
        index += 1
    return LoopResult(total, runner.records, warnings)
