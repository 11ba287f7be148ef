"""A small fabrication queue served over MCP stdio, for the tool tests.

Run as ``python -m tests.mcp_servers.fabrication`` (or by path). Every call is appended
to the file named by ``$FABRICATION_CALL_LOG`` (one JSON line per call), so a test can
tell which calls reached the server and which were refused before it.

``set_bed_temperature`` refuses a temperature out of range with a JSON-RPC error reply
(not a tool result with ``isError``), as servers that validate their own parameters do.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from mcp import types
from mcp.server.fastmcp import FastMCP
from mcp.shared.exceptions import McpError

QUEUE_MARKER = "QUEUE-7F3A"
BED_MAX_C = 120
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


@server.tool()
def set_bed_temperature(celsius: float, error_code: int = types.INVALID_PARAMS) -> str:
    """Set the print bed's temperature (at most 120 °C)."""
    _log("set_bed_temperature", celsius=celsius)
    return f"bed set to {celsius:g} °C"


_call_tool = server._mcp_server.request_handlers[types.CallToolRequest]


async def _checked_call_tool(request: types.CallToolRequest) -> types.ServerResult:
    """FastMCP's tools/call, answering a bad bed temperature with a JSON-RPC error reply."""
    arguments = request.params.arguments or {}
    if request.params.name == "set_bed_temperature":
        celsius = arguments.get("celsius")
        if isinstance(celsius, int | float) and not 0 <= celsius <= BED_MAX_C:
            _log("set_bed_temperature", celsius=celsius, refused=True)
            raise McpError(
                types.ErrorData(
                    code=int(arguments.get("error_code", types.INVALID_PARAMS)),
                    message=f"celsius {celsius:g} is out of range 0-{BED_MAX_C}",
                )
            )
    return await _call_tool(request)


# FastMCP turns a tool's exception into an isError result; only a request handler can
# answer with a JSON-RPC error, so the tools/call handler is wrapped.
server._mcp_server.request_handlers[types.CallToolRequest] = _checked_call_tool


if __name__ == "__main__":
    server.run("stdio")
