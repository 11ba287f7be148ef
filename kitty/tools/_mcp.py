"""MCP servers from the fleet file (``[mcp.NAME]``): one kept-open session per server.

A server's tools are offered as ``NAME.TOOL``. The first :func:`mcp_tools` call for a server
starts it (concurrent first calls share that start); the session then stays open for the
process and event loop, so a tool call is one request on it, never a new spawn.

The MCP SDK runs on anyio, whose context managers must be entered and exited by the same
task. Each session is therefore owned by one background task that enters the transport and
the session, publishes the loaded tools, waits for a stop signal and exits. When the loop
ends (``asyncio.run`` cancels what is left), that task unwinds and the server stops with it;
:func:`aclose_mcp_sessions` does the same on purpose at exit.

A session ends when its server does: a stdio server whose output ends (it exited or was
killed) stops its session at once, and the next :func:`mcp_tools` starts the server again. A
tool call waits on its request *and* on the session, so a call still pending when the
transport breaks fails at once with a :class:`~kitty.errors.ToolError` instead of waiting out
``timeout_s``. (The SDK answers pending requests with "Connection closed" when the server's
output ends, but when writing the request to a dead server breaks first, its transport tears
the session down and cancels that answer, leaving the request unanswered.)

A session is dropped only when its transport is closed (the server's output ended, its
task ended, a write to it failed), never because of a JSON-RPC error reply: the session is
shared by every call of every run on that server, and a server that answers one call with
an error (-32602 invalid params, or any code of the -32000..-32099 server-error range, where
-32000 is also the SDK's own "Connection closed") is alive and serving the others.

A stdio server's stderr goes to a private temporary file rather than the terminal (it would
tear the CLI's live view); its last lines are quoted when the server fails to start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, TextIO, TypeVar, cast

import anyio
import httpx
from anyio.streams.memory import MemoryObjectReceiveStream
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from langchain_mcp_adapters.sessions import Connection, create_session
from langchain_mcp_adapters.tools import load_mcp_tools
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError
from mcp.types import CONNECTION_CLOSED

from endpoints.config import McpServerConfig
from endpoints.runtime import RuntimeSlot, process_runtime
from kitty.errors import ToolError, ToolSourceError

__all__ = ["aclose_mcp_sessions", "mcp_tools"]

START_TIMEOUT_S = 30.0
"""Most seconds a server may take to start and list its tools."""

logger = logging.getLogger("kitty.tools")

# How long a stopping session may take to unwind (stdio: stdin closed, then terminate/kill).
_CLOSE_WAIT_S = 10.0
_STDERR_TAIL_CHARS = 600
_BRACED_VAR = re.compile(r"\$\{([^}]+)\}")
_SessionKey = tuple[str, str]
_T = TypeVar("_T")


@dataclass
class _Session:
    """One server's session, owned by ``task``; ``tools`` resolves once it is up."""

    name: str
    config: McpServerConfig
    tools: asyncio.Future[list[BaseTool]]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


_SESSIONS: RuntimeSlot[dict[_SessionKey, _Session]] = RuntimeSlot(
    "MCP sessions of an event loop, by server name and settings", dict
)


def _loop_sessions(loop: asyncio.AbstractEventLoop) -> dict[_SessionKey, _Session]:
    # Per loop in the process runtime, which forgets sessions of loops that have closed.
    return process_runtime().for_loop(_SESSIONS, loop)


async def mcp_tools(name: str, config: McpServerConfig) -> list[BaseTool]:
    """The tools of MCP server ``name``, each named ``f"{name}.{tool}"``.

    One session per server per process and event loop, started on first use (concurrent
    first calls share one start) and kept open; later calls reuse it. A tool whose call
    fails (the server reports an error, the call outlasts ``timeout_s``, the server went
    away) raises :class:`~kitty.errors.ToolError` with what the model should be told.

    Args:
        name: The server's name in the fleet file (``[mcp.NAME]``).
        config: Its settings.

    Returns:
        The server's tools, in the order the server lists them.

    Raises:
        ToolSourceError: The server cannot start (missing command, crash at start, wrong
            URL); the message names the server, its command and the fix. The failure is
            not remembered: a later call tries again.
    """
    loop = asyncio.get_running_loop()
    sessions = _loop_sessions(loop)
    key = (name, config.model_dump_json())
    session = sessions.get(key)
    if session is None or session.stop.is_set() or (session.task and session.task.done()):
        session = _Session(name=name, config=config, tools=loop.create_future())
        sessions[key] = session
        session.task = loop.create_task(_own_session(session, sessions, key))
    # shield: one caller giving up must not cancel the start the others wait for.
    return list(await asyncio.shield(session.tools))


async def aclose_mcp_sessions() -> None:
    """Close every MCP session of the running event loop and wait for the servers to stop.

    The CLI and the service call it at exit; the next :func:`mcp_tools` starts anew.
    """
    loop = asyncio.get_running_loop()
    sessions = _loop_sessions(loop)
    closing = list(sessions.values())
    sessions.clear()
    for session in closing:
        session.stop.set()
    tasks = [s.task for s in closing if s.task is not None and not s.task.done()]
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=_CLOSE_WAIT_S)
    for task in pending:
        logger.warning("MCP session %s did not close in %.0f s; cancelled", task, _CLOSE_WAIT_S)
        task.cancel()


async def _own_session(
    session: _Session, sessions: dict[_SessionKey, _Session], key: _SessionKey
) -> None:
    """Enter the session, publish its tools, wait for stop, exit: all in this one task."""
    config = session.config
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as log:
        stderr = cast(TextIO, log)
        try:
            async with _open(
                session.name, config, stderr, partial(_server_exited, session)
            ) as client:
                await client.initialize()
                loaded = await load_mcp_tools(
                    client, server_name=session.name, handle_tool_errors=False
                )
                session.tools.set_result([_named(session, tool) for tool in loaded])
                await session.stop.wait()
        except BaseException as exc:
            if not session.tools.done():
                session.tools.set_exception(_start_error(session.name, config, exc, stderr))
                session.tools.exception()  # retrieved, so an unawaited start logs nothing
            elif not session.stop.is_set() and not isinstance(exc, asyncio.CancelledError):
                logger.warning("MCP server %r stopped: %s", session.name, _leaf_text(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            if sessions.get(key) is session:
                del sessions[key]


def _server_exited(session: _Session) -> None:
    """End ``session`` now that its server is gone, so the next load starts it again."""
    if not session.stop.is_set():
        if session.tools.done():  # a failed start says why in its own error
            logger.warning("MCP server %r exited; it is started again on next use", session.name)
        session.stop.set()


def _open(
    name: str, config: McpServerConfig, stderr: TextIO, on_exit: Callable[[], None]
) -> AbstractAsyncContextManager[ClientSession]:
    """The transport + client session for ``config`` (not yet initialized).

    ``on_exit`` is called when a stdio server's output ends: it exited.
    """
    # The SDK's read timeout also bounds `initialize` and `tools/list`: a server that takes
    # a few seconds to import must not fail to start because its calls are meant to be
    # short. Each tool call gets `timeout_s` itself (see `_named`).
    read_timeout = timedelta(seconds=max(config.timeout_s, START_TIMEOUT_S))
    if config.transport == "stdio":
        return _stdio_session(config, stderr, read_timeout, on_exit)
    connection: Connection
    if config.transport == "sse":
        connection = {
            "transport": "sse",
            "url": config.url or "",
            "headers": dict(config.headers),
            "timeout": config.timeout_s,
            "session_kwargs": {"read_timeout_seconds": read_timeout},
        }
    else:
        connection = {
            "transport": "streamable_http",
            "url": config.url or "",
            "headers": dict(config.headers),
            "timeout": config.timeout_s,
            "session_kwargs": {"read_timeout_seconds": read_timeout},
        }
    return create_session(connection)


@asynccontextmanager
async def _stdio_session(
    config: McpServerConfig,
    stderr: TextIO,
    read_timeout: timedelta,
    on_exit: Callable[[], None],
) -> AsyncIterator[ClientSession]:
    """Like the adapters' stdio session, with the server's stderr sent to ``stderr``.

    ``on_exit`` is called when the server's output ends.
    """
    if config.cwd and not os.path.isdir(config.cwd):
        raise NotADirectoryError(f"cwd {config.cwd!r} is not a directory")
    params = StdioServerParameters(
        command=config.command or "",
        args=list(config.args),
        # The SDK merges these over a safe default environment (PATH, HOME, ...).
        env={key: _expand_env(value) for key, value in config.env.items()},
        cwd=config.cwd,
    )
    async with (
        stdio_client(params, errlog=stderr) as (read, write),
        _watching_end(read, on_exit) as watched,
        ClientSession(watched, write, read_timeout_seconds=read_timeout) as client,
    ):
        yield client


@asynccontextmanager
async def _watching_end(
    read: MemoryObjectReceiveStream[_T], on_end: Callable[[], None]
) -> AsyncIterator[MemoryObjectReceiveStream[_T]]:
    """``read`` passed through unchanged; ``on_end`` is called once it ends.

    ``on_end`` runs before the session sees its stream end, so the session is marked
    stopped before the SDK answers its pending requests "Connection closed".
    """
    forward, watched = anyio.create_memory_object_stream[_T](0)

    async def relay() -> None:
        try:
            async with read:
                async for message in read:
                    await forward.send(message)
            on_end()
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return  # the session closed its end first: it is stopping anyway
        finally:
            forward.close()

    async with anyio.create_task_group() as relaying:
        relaying.start_soon(relay)
        try:
            yield watched
        finally:
            relaying.cancel_scope.cancel()


def _expand_env(value: str) -> str:
    """``${VAR}`` from this process's environment (secrets stay out of the fleet file)."""
    return _BRACED_VAR.sub(lambda m: os.environ.get(m.group(1), m.group(0)), value)


def _named(session: _Session, tool: BaseTool) -> BaseTool:
    """``tool`` as ``NAME.TOOL``, returning text and raising :class:`ToolError` on failure."""
    full_name = f"{session.name}.{tool.name}"
    config = session.config

    async def call(**arguments: Any) -> str:
        try:
            async with asyncio.timeout(config.timeout_s):
                content = await _while_open(session, tool.ainvoke(arguments))
        except TimeoutError:
            raise ToolError(
                f"{full_name} took longer than {config.timeout_s:g} s and was abandoned "
                f"(timeout_s of [mcp.{session.name}] in the fleet file)"
            ) from None
        except ToolException as exc:
            raise ToolError(f"{full_name} failed: {exc}") from None
        except McpError as exc:
            if exc.error.code == httpx.codes.REQUEST_TIMEOUT:
                raise ToolError(
                    f"{full_name} took longer than {config.timeout_s:g} s and was abandoned "
                    f"(timeout_s of [mcp.{session.name}] in the fleet file)"
                ) from None
            if exc.error.code == CONNECTION_CLOSED and _ended(session):
                raise ToolError(
                    f"{full_name}: the MCP server stopped ({exc}); {_RESTART}"
                ) from None
            # An error reply (the code alone cannot tell: servers send -32000 too): the
            # server is alive, only this call failed. The session is not dropped; if its
            # transport has in fact closed, the session ends by itself (see _watching_end).
            raise ToolError(f"{full_name} failed: {exc}") from None
        except _SessionEnded:
            raise ToolError(
                f"{full_name}: the MCP server went away during the call; {_RESTART}"
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            _drop(session)
            raise ToolError(
                f"{full_name}: lost the connection to the MCP server "
                f"({type(exc).__name__}); {_RESTART}"
            ) from None
        return _as_text(content)

    return StructuredTool.from_function(
        coroutine=call,
        name=full_name,
        description=tool.description or f"{tool.name} on MCP server {session.name}",
        args_schema=tool.args_schema,
        metadata={**(tool.metadata or {}), "mcp_server": session.name, "mcp_tool": tool.name},
    )


_RESTART = "it is started again when its tools are next loaded"


class _SessionEnded(Exception):
    """The session ended (its server exited, or it was closed) while a call was pending."""


async def _while_open(session: _Session, request: Awaitable[_T]) -> _T:
    """The result of ``request``, or :class:`_SessionEnded` as soon as ``session`` ends.

    The session's task ends when its transport breaks; a request pending then may never be
    answered (see the module docstring), so the call must not wait on the request alone.
    """
    owner = session.task
    pending = asyncio.ensure_future(request)
    if owner is None:
        return await pending
    try:
        await asyncio.wait({pending, owner}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not pending.done():
            # Ended, timed out or cancelled: let the request unwind before the caller goes on.
            pending.cancel()
            await asyncio.wait({pending})
    if pending.cancelled():
        raise _SessionEnded
    return pending.result()


def _ended(session: _Session) -> bool:
    """Whether ``session`` has stopped or is stopping (its transport closed, or closed by us)."""
    return session.stop.is_set() or (session.task is not None and session.task.done())


def _drop(session: _Session) -> None:
    """Stop a session that went bad, so the next :func:`mcp_tools` starts a fresh one."""
    session.stop.set()


def _as_text(content: Any) -> str:
    """The adapters' content blocks as one text (non-text blocks are named, not inlined)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return str(content)
    parts: list[str] = []
    for block in content:
        if isinstance(block, dict):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            else:
                mime = block.get("mime_type") or "unknown type"
                parts.append(f"[{block.get('type', 'content')} block: {mime}]")
        else:
            parts.append(str(block))
    return "\n".join(parts)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The real errors inside anyio's (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _leaf_text(exc: BaseException) -> str:
    leaf = _leaves(exc)[0]
    text = str(leaf) or type(leaf).__name__
    return text if type(leaf).__name__ in text else f"{type(leaf).__name__}: {text}"


def _stderr_tail(stderr: TextIO) -> str:
    try:
        stderr.flush()
        stderr.seek(0)
        text = stderr.read().strip()
    except (OSError, ValueError):
        return ""
    return text[-_STDERR_TAIL_CHARS:]


def _gone(exc: BaseException) -> bool:
    """Whether a failed start means the stdio server was gone (it exited).

    Its output ended, or the request could not be written: a server that exits at once
    may be gone before the client writes ``initialize``, and then the write breaks
    instead of the read ending.
    """
    return any(
        (isinstance(leaf, McpError) and leaf.error.code == CONNECTION_CLOSED)
        or isinstance(
            leaf,
            anyio.BrokenResourceError
            | anyio.ClosedResourceError
            | BrokenPipeError
            | ConnectionResetError,
        )
        for leaf in _leaves(exc)
    )


def _start_error(
    name: str, config: McpServerConfig, exc: BaseException, stderr: TextIO
) -> ToolSourceError:
    """Why the server did not start, and what to change."""
    leaf = _leaves(exc)[0]
    where = f"MCP server {name!r} ({config.describe()}) did not start"
    table = f"[mcp.{name}]"
    if isinstance(exc, asyncio.CancelledError):
        return ToolSourceError(f"{where}: its start was cancelled")
    if config.transport == "stdio":
        if isinstance(leaf, NotADirectoryError):
            fix = f"give an existing folder as cwd in {table}"
        elif isinstance(leaf, FileNotFoundError | PermissionError):
            return ToolSourceError(
                f"{where}: command {config.command!r} was not found or cannot be run; "
                f"install it or give its full path as command in {table} of the fleet file"
            )
        else:
            fix = f"run `{config.describe()}` yourself to see why it stops"
        reason = "it exited before the MCP handshake" if _gone(exc) else _leaf_text(exc)
        said = _stderr_tail(stderr)
        detail = f"; it wrote: {said}" if said else ""
        return ToolSourceError(f"{where}: {reason}{detail}; {fix}")
    return ToolSourceError(
        f"{where}: {_leaf_text(leaf)}; check that the server runs and listens at url, and "
        f"its headers, in {table} of the fleet file"
    )
