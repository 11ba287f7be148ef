"""kitty-orchestrator's own namespace beside the card packages (graph, agents, endpoints, ops).

- :mod:`kitty.errors`: every error the project raises, in one tree (the lowest layer).
- :mod:`kitty.tools`: what agents can call (MCP servers, memory, fetch, search).
- :mod:`kitty.service`: the HTTP service (``kitty-orch serve``).
- :mod:`kitty.cli`: the ``kitty-orch`` command.
- :mod:`kitty.bench`: the benchmarks behind ``kitty-orch bench`` (the ``bench`` extra).
"""
