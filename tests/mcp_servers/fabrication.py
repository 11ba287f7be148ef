"""A small fabrication queue served over MCP stdio, for the tool tests.

Run as ``python -m tests.mcp_servers.fabrication`` (or by path). Every call is appended
to the file named by ``$FABRICATION_CALL_LOG`` (one JSON line per call), so a test can
tell which calls reached the server and which were refused before it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from mcp.server.fastmcp import FastMCP

QUEUE_MARKER = "QUEUE-7F3A"
server = FastMCP("fabrication")
_jobs: list[dict[str, str]] = []


def _log(tool: str, **args: object) -> None:
    path = os.environ.get("FABRICATION_CALL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as sink:
            sink.write(json.dumps({"tool": tool, "args": args, "at": time.time()}) + "\n")


@server.tool()
def check_queue() -> str:
    """Report how many jobs wait on the printers and which printer is free."""
    _log("check_queue")
    return f"{QUEUE_MARKER}: {len(_jobs)} jobs queued; printer bamboo_x1 is idle"


@server.tool()
def submit_job(file: str, printer: str = "bamboo_x1") -> str:
    """Queue a print job: a model file on a printer."""
    _log("submit_job", file=file, printer=printer)
    _jobs.append({"file": file, "printer": printer})
    return f"job {len(_jobs)} queued: {file} on {printer}"


@server.tool()
async def slow_check(seconds: float = 3.0) -> str:
    """Check the printers slowly (takes ``seconds``)."""
    _log("slow_check", seconds=seconds)
    await asyncio.sleep(seconds)
    return f"{QUEUE_MARKER}: checked slowly"


@server.tool()
def broken_sensor() -> str:
    """Read the chamber temperature sensor (it is broken)."""
    _log("broken_sensor")
    raise RuntimeError("sensor offline: chamber thermistor not responding")


if __name__ == "__main__":
    server.run("stdio")
