"""What agents can call: MCP servers, built-in tools (memory, fetch, search), Python tools.

Every tool here is a LangChain ``BaseTool`` whose name is what allowlists use
(``web_search``, ``memory.recall``, ``fabrication.submit_job``); the graph's tool loop
decides which of them a task is offered and validates each call before it runs.
"""

from kitty.tools._fetch import fetch_bytes
from kitty.tools._toolset import OfferedTools, configured, tools_for, unprovided
from kitty.tools._validation import parameters_of, refusal

__all__ = [
    "OfferedTools",
    "configured",
    "fetch_bytes",
    "parameters_of",
    "refusal",
    "tools_for",
    "unprovided",
]
