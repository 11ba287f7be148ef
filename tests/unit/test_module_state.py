"""No live state in module globals: it belongs to the process runtime (``endpoints.runtime``).

Every module of the five packages is imported and its module-level names are read from
its source: names assigned at module level, names a function rebinds with ``global``
and functions wrapped in an ``lru_cache``. A name that holds state (a dict, list or set,
a lock, a counter, a cache, an instance of a mutable class...) fails the test unless it is
on :data:`ALLOWED` with the reason it may stay. Upper-case names are constants (PEP 8)
when they hold a non-empty builtin container; holding anything else, they are checked too.

New state goes into a :class:`~endpoints.runtime.RuntimeSlot` (or a field of
:class:`~endpoints.runtime.ProcessRuntime`), so :func:`~endpoints.runtime.reset_runtime`
forgets it with everything else.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import inspect
import logging
import pkgutil
import re
import sys
import textwrap
import types
import typing
from pathlib import Path, PurePath
from types import ModuleType

import pydantic
import pytest
import typer
from fastapi import params
from fastapi.security.base import SecurityBase
from rich.console import Console

PACKAGES = ("graph", "agents", "endpoints", "ops", "kitty")

ALLOWED: dict[tuple[str, str], str] = {
    ("endpoints.runtime._runtime", "_runtime"): "the process runtime: the one owner of live state",
    ("graph.studio", "graph"): (
        "LangGraph Studio loads the compiled graph from a module attribute (langgraph.json)"
    ),
    ("endpoints.slots._store", "LOCAL"): (
        "the in-process slot store every local limiter shares; its one table, the "
        "attained-service ledger, forgets a run by itself once it has been idle"
    ),
    ("endpoints.slots._store", "_tickets"): (
        "a counter of waiter tickets: ids must stay unique, so a reset must not restart it"
    ),
    ("kitty.service._admission", "_lease_ids"): (
        "a counter of admission lease ids: ids must stay unique, so a reset must not restart it"
    ),
    ("endpoints.slots._store_urls", "endpoint_key"): (
        "an lru_cache of a pure string function (a base URL's normal form)"
    ),
    ("ops._gguf_info", "read_gguf"): (
        "an lru_cache of a model file's header by path: model files do not change under a "
        "running fleet, and the cache holds data, not open files"
    ),
    ("ops.embedded", "_shared"): (
        "llama.cpp servers started for the process lifetime and stopped at exit; a runtime "
        "reset must neither orphan nor kill servers that runs are using"
    ),
    ("ops.embedded", "_verified_at"): "when each of those servers last answered /health",
    ("ops.embedded", "_shared_lock"): "guards those two tables",
}

_ALL_CAPS = re.compile(r"_?[A-Z][A-Z0-9_]*")
_PLAIN = (str, bytes, int, float, bool, complex, type(None), range, PurePath, enum.Enum, re.Pattern)
_STATELESS = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    logging.Logger,
    typing.TypeVar,
    typing.ParamSpec,
    pydantic.TypeAdapter,  # a compiled validator
    Console,  # a terminal handle: settings, no data
    typer.Typer,  # the CLI's command tree, declared at import
    SecurityBase,  # an HTTP security scheme declaration
    params.Depends,  # a FastAPI dependency declaration (Security too)
)


def _modules() -> list[ModuleType]:
    found = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        found.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            found.append(importlib.import_module(info.name))
    return found


def _is_constant(value: object) -> bool:
    """An upper-case name's value: a non-empty builtin container is a constant (PEP 8).

    An empty one is how a cache starts, so it counts as state.
    """
    return type(value) in (dict, list, set, tuple, frozenset) and len(value) > 0  # type: ignore[arg-type]


def _is_immutable(value: object) -> bool:
    """True for values that cannot hold state: plain values, types, functions, frozen records."""
    if isinstance(value, (*_PLAIN, *_STATELESS)):
        return True
    if isinstance(value, (tuple, frozenset)):
        return all(_is_immutable(item) for item in value)
    if typing.get_origin(value) is not None:
        return True  # a typing alias such as tuple[str, str]
    if type(value) is object:
        return True  # a sentinel
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return bool(type(value).__dataclass_params__.frozen)  # type: ignore[attr-defined]
    if isinstance(value, pydantic.BaseModel):
        return bool(type(value).model_config.get("frozen"))
    return False


def _has_cache(value: object) -> bool:
    return callable(value) and hasattr(value, "cache_info")


def _module_names(module: ModuleType) -> tuple[set[str], set[str]]:
    """Names assigned at module level, and names functions rebind with ``global``."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return set(), set()
    tree = ast.parse(textwrap.dedent(source))
    assigned: set[str] = set()
    rebound: set[str] = set()
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                assigned.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assigned.add(node.name)  # a decorated function may be a cache
            rebound.update(
                name for sub in ast.walk(node) if isinstance(sub, ast.Global) for name in sub.names
            )
        elif isinstance(node, ast.ClassDef):
            rebound.update(
                name for sub in ast.walk(node) if isinstance(sub, ast.Global) for name in sub.names
            )
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            stack.extend(ast.iter_child_nodes(node))
    return assigned, rebound


def stateful_globals(module: ModuleType) -> dict[str, str]:
    """Module-level names of ``module`` that hold state -> what they hold."""
    assigned, rebound = _module_names(module)
    found: dict[str, str] = {}
    for name in sorted(assigned | rebound):
        if name.startswith("__") or not hasattr(module, name):
            continue
        value = getattr(module, name)
        if name in rebound:
            found[name] = f"rebound with `global` (now {type(value).__name__})"
        elif _has_cache(value):
            found[name] = "an lru_cache"
        elif _ALL_CAPS.fullmatch(name) and _is_constant(value):
            continue  # a constant
        elif not _is_immutable(value):
            found[name] = type(value).__name__
    return found


def test_no_live_state_outside_the_process_runtime() -> None:
    offending = [
        f"{module.__name__}.{name}: {what}"
        for module in _modules()
        for name, what in stateful_globals(module).items()
        if (module.__name__, name) not in ALLOWED
    ]
    assert not offending, (
        "module-level state outside the process runtime; keep it in a RuntimeSlot of "
        "endpoints.runtime (reset by reset_runtime), or add it to ALLOWED with the reason:\n"
        + "\n".join(offending)
    )


def test_every_allowed_name_still_exists() -> None:
    modules = {module.__name__: module for module in _modules()}
    stale = [
        f"{module}.{name}"
        for module, name in ALLOWED
        if module not in modules or name not in stateful_globals(modules[module])
    ]
    assert not stale, f"ALLOWED names that hold no state any more: {stale}"


@pytest.mark.parametrize(
    "line",
    [
        "_cache: dict[str, int] = {}",
        "_seen = set()",
        "_REMEMBERED = collections.OrderedDict()",
        "_lock = threading.Lock()",
        "_compiled = None\ndef compiled():\n    global _compiled\n    _compiled = object()",
        "@functools.lru_cache\ndef lookup(key: str) -> str:\n    return key",
    ],
)
def test_a_new_global_is_caught(tmp_path: Path, line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source = f"import collections, functools, threading\nDEFAULTS = {{'a': 1}}\n{line}\n"
    (tmp_path / "state_probe.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("state_probe")
    try:
        if "def compiled" in line:
            module.compiled()
        assert len(stateful_globals(module)) == 1, stateful_globals(module)
    finally:
        del sys.modules["state_probe"]
