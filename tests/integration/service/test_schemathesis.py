"""Contract tests: schemathesis against a live ``kitty-orch serve`` (issue 24 item 4).

schemathesis reads the service's own OpenAPI document and sends every operation examples,
boundary values and random data, valid and invalid, then checks every answer: no 5xx, the
status, content type, headers and body as documented (each event of the event streams
too), invalid data refused, valid data taken, and, with a token, a missing or wrong token
refused. It runs twice: on a service without a token, and on one with ``KITTY_API_TOKEN``
(schemathesis sends the header; the Host is the loopback one the service answers).

Every operation is tested, none excluded: both event streams end once their run ends, and
the runs are kept short (tiny planner, synthesis and summary caps, a 5 s run deadline). The
rejections JSON Schema cannot express (a plan's cross-field rules, an image's content, the
OpenAI parameters the door refuses by name) are allowed, each with its reason, in
``schemathesis.toml`` beside this file; see docs/guide/http-api.md#contract-tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from endpoints.config import FleetConfig
from tests.helpers import free_port, kitty_command, stop_process, wait_until_serving

pytestmark = pytest.mark.integration

TOKEN = "schemathesis-test-token"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# schemathesis lives in a venv of its own inside the project's (see the Makefile's setup):
# it needs a jsonschema-rs that LangGraph's API server excludes.
SCHEMATHESIS = Path(sys.prefix) / "schemathesis" / "bin" / "st"
# Examples per operation and phase: enough to reach every status an operation documents,
# few enough to keep the runs (each valid query is one) to a few minutes.
MAX_EXAMPLES = 3
# Fixed, so a failure is reproduced by running the test again.
SEED = "24"
# Seconds one request may take (a whole run, on a fleet that other tests may share).
REQUEST_TIMEOUT_S = 120
ALL_PHASES = "examples,coverage,fuzzing,stateful"
RUN_SETTINGS = {
    "synthesis_max_tokens": 8,
    "summary_max_tokens": 8,
    "planner_max_tokens": 48,
    "run_deadline_s": 1,
}


@dataclass
class LiveService:
    base_url: str
    token: str | None
    log: Path


@contextmanager
def serve(token: str | None, folder: Path) -> Iterator[LiveService]:
    """``kitty-orch serve`` on a free loopback port, checkpointing (background runs work)."""
    port = free_port()
    log = folder / "serve.log"
    unset = ("KITTY_API_TOKEN", "KITTY_USER_TOKENS")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env["KITTY_FLEET"] = "embedded"
    if token is not None:
        env["KITTY_API_TOKEN"] = token
    command = kitty_command(
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--checkpoint",
        str(folder / "checkpoints.sqlite"),
        # schemathesis's examples never wait for a place: a 429 is documented, but a run
        # refused for want of a place would hide what the run itself answers.
        "--max-concurrent-runs",
        "64",
        *(arg for key, value in RUN_SETTINGS.items() for arg in ("--set", f"{key}={value}")),
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/healthz", process, log, name="service")
        yield LiveService(f"http://127.0.0.1:{port}", token, log)
    finally:
        stop_process(process, timeout_s=15)


def schemathesis(service: LiveService, phases: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``st run`` with every check on the service's document; its report on stdout."""
    st = SCHEMATHESIS
    if not st.exists():
        pytest.fail(f"schemathesis is not installed at {st}; run `make setup` (it makes that venv)")
    auth = ["--header", f"Authorization: Bearer {service.token}"] if service.token else []
    return subprocess.run(
        [
            str(st),
            "--config-file",
            str(CONFIG),
            "run",
            f"{service.base_url}/openapi.json",
            "--checks",
            "all",
            # How fast a run answers is not part of the contract (benchmarks measure it;
            # the embedded fleet shares its CPUs): the time limit is the request timeout.
            "--max-response-time",
            str(REQUEST_TIMEOUT_S),
            "--phases",
            phases,
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            SEED,
            "--workers",
            "2",
            "--request-timeout",
            str(REQUEST_TIMEOUT_S),
            "--no-color",
            *auth,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "COLUMNS": "120"},
        cwd=cwd,  # schemathesis keeps its own state in .schemathesis/ there
    )


@pytest.mark.parametrize(
    ("token", "phases"),
    [
        # The coverage phase's boundary values are the same with a token (and take most of
        # the time: each valid one is a run), so it runs once; the stateful phase (links
        # from a submitted run to its thread) runs with the token.
        (None, "examples,coverage,fuzzing"),
        (TOKEN, "examples,fuzzing,stateful"),
    ],
    ids=["no-token", "token"],
)
@pytest.mark.timeout(600)
def test_the_service_keeps_its_documented_contract(
    embedded_fleet: FleetConfig, tmp_path: Path, token: str | None, phases: str
) -> None:
    """No 5xx and no answer outside the document, with and without a token."""
    with serve(token, tmp_path) as service:
        result = schemathesis(service, phases, tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 0, f"schemathesis found failures:\n{report}"
    # Every operation of the document was selected and tested.
    counts = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert counts is not None, report
    selected, total, tested = map(int, counts.groups())
    assert selected == total == tested >= 11, report
