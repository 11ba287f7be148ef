"""An agent task's tools: its allowlist, the calls on the wire, and the bounded tool loop.

The slot is released while tools run and taken again for the next model round.
"""

from graph.tools._agent_tools import available_tools, offered_tools, warn_unprovided
from graph.tools._tool_calls import Offer, native_support
from graph.tools._tool_loop import LoopResult, ToolRunner, run_tool_loop

__all__ = [
    "LoopResult",
    "Offer",
    "ToolRunner",
    "available_tools",
    "native_support",
    "offered_tools",
    "run_tool_loop",
    "warn_unprovided",
]
