"""The benchmarks behind ``kitty-orch bench``: scheduling, overhead, planner, scale...

Not in the default install: ``pip install 'kitty-orchestrator[bench]'`` adds it.
"""

from kitty.bench._whatif import WhatIf, load_scenario, what_if

__all__ = [
    "WhatIf",
    "load_scenario",
    "what_if",
]
