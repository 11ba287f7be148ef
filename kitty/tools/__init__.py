"""What agents can call: MCP servers, built-in tools (memory, fetch, search), Python tools.

Every tool here is a LangChain ``BaseTool`` whose name is what allowlists use
(``web_search``, ``memory.recall``, ``fabrication.submit_job``); the graph's tool loop
decides which of them a task is offered and validates each call before it runs.
"""
