"""Launch scripts for a fleet: ``llama-server`` command lines and Ollama environments.

The fleet file is the single source of truth, so the script that starts the servers is
generated from it (``kitty-orch fleet script``). Flags follow llama.cpp's current
``tools/server/README.md``:

- ``--model``, ``--alias`` (the id requests send), ``--host``, ``--port``;
- ``-np N`` slots and ``-c`` total context. With an explicit ``-np`` llama.cpp splits ``-c``
  evenly across the slots (each gets ``c / N``) unless ``--kv-unified`` shares one buffer;
- ``-b`` / ``-ub`` batch sizes, ``-t`` threads, ``-ngl`` GPU layers, ``--flash-attn on``;
- ``--metrics`` (Prometheus ``/metrics``), ``--jinja`` (chat templates, needed for tools
  and json_schema), ``--cont-batching`` (both are default-on in current builds; stated so
  older builds behave the same);
- ``-md <draft> --spec-type draft-simple`` for speculative decoding with a draft model.

Ollama endpoints get ``OLLAMA_NUM_PARALLEL``, ``OLLAMA_MAX_QUEUE``, ``OLLAMA_KEEP_ALIVE`` and
``OLLAMA_HOST`` for ``ollama serve``, plus an ``ollama pull`` hint.
"""

from __future__ import annotations

import re
from pathlib import Path

from endpoints.config import EndpointConfig, FleetConfig
from kitty.errors import FleetError

LLAMA_SERVER_BIN = "llama-server"
LOG_DIR = ".logs"
_VAR = re.compile(r"\$(\{)?([A-Za-z_][A-Za-z0-9_]*)(?(1)\})")


def shell_quote(value: str) -> str:
    """Double-quote ``value`` for bash, keeping ``$VAR`` / ``${VAR}`` expansion.

    Fleet files write model paths as ``$MODELS_DIR/model.gguf``; the script must expand
    them at run time while staying safe for spaces and other special characters.
    """
    if value and re.fullmatch(r"[A-Za-z0-9_./:=,+@%-]+", value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`")
    # A "$" that does not start a variable reference is literal.
    escaped = re.sub(r"\$(?![A-Za-z_{])", r"\\$", escaped)
    return f'"{escaped}"'


def script_model_path(spec: str) -> str:
    """The model path as the script should name it.

    ``pkg:<module>/<file>`` (the embedded fleet's packaged GGUF) is resolved to the installed
    file when possible, since ``llama-server`` knows nothing about Python packages.
    """
    if not spec.startswith("pkg:"):
        return spec
    from ops.embedded import EmbeddedFleetError, resolve_model_path

    try:
        return str(resolve_model_path(spec))
    except EmbeddedFleetError:
        module, _, filename = spec[4:].partition("/")
        return f"$MODELS_DIR/{filename or module}"


def total_ctx(endpoint: EndpointConfig) -> int:
    """Total KV context (``-c``): ``launch.ctx_size`` or ``ctx`` per slot times the slots."""
    return endpoint.launch.ctx_size or endpoint.ctx * (endpoint.slots or 1)


def llama_server_args(endpoint: EndpointConfig, binary: str = LLAMA_SERVER_BIN) -> list[str]:
    """The ``llama-server`` argument vector for one llama.cpp endpoint (unquoted).

    Args:
        endpoint: A ``kind = "llamacpp"`` endpoint.
        binary: Executable to run.

    Raises:
        FleetError: The endpoint is not a llama.cpp endpoint or has no ``launch.model_path``.
    """
    if endpoint.kind != "llamacpp":
        raise FleetError(f"endpoint {endpoint.name!r} is {endpoint.kind}, not llamacpp")
    launch = endpoint.launch
    if not launch.model_path:
        raise FleetError(
            f"endpoint {endpoint.name!r} has no launch.model_path; set it in the fleet file"
        )
    args = [binary, "--model", script_model_path(launch.model_path)]
    args += ["--alias", endpoint.model, "--host", endpoint.host, "--port", str(endpoint.port)]
    if endpoint.slots:
        args += ["-np", str(endpoint.slots)]
    args += ["-c", str(total_ctx(endpoint))]
    if launch.kv_unified:
        args.append("--kv-unified")
    if launch.batch_size:
        args += ["-b", str(launch.batch_size)]
    if launch.ubatch_size:
        args += ["-ub", str(launch.ubatch_size)]
    if launch.threads:
        args += ["-t", str(launch.threads)]
    if launch.n_gpu_layers is not None:
        args += ["-ngl", str(launch.n_gpu_layers)]
    if launch.flash_attn:
        args += ["--flash-attn", "on"]
    args += ["--metrics", "--jinja", "--cont-batching"]
    if launch.chat_template_file:
        args += ["--chat-template-file", script_model_path(launch.chat_template_file)]
    if launch.draft_model:
        args += ["-md", script_model_path(launch.draft_model), "--spec-type", "draft-simple"]
    if launch.mmproj:
        args += ["--mmproj", script_model_path(launch.mmproj)]
    args += list(launch.extra_args)
    return args


def ollama_env(endpoints: list[EndpointConfig]) -> dict[str, str]:
    """Environment of one ``ollama serve`` daemon serving these endpoints (same base URL)."""
    first = endpoints[0]
    return {
        "OLLAMA_HOST": f"{first.host}:{first.port}",
        "OLLAMA_NUM_PARALLEL": str(max(e.slots or 1 for e in endpoints)),
        "OLLAMA_MAX_QUEUE": str(max(e.launch.max_queue for e in endpoints)),
        "OLLAMA_KEEP_ALIVE": first.launch.keep_alive,
    }


def _model_files(endpoint: EndpointConfig) -> list[str]:
    files = [
        endpoint.launch.model_path,
        endpoint.launch.draft_model,
        endpoint.launch.chat_template_file,
        endpoint.launch.mmproj,
    ]
    return [script_model_path(f) for f in files if f]


def _join(args: list[str]) -> str:
    lines = [shell_quote(args[0])]
    i = 1
    while i < len(args):
        part = shell_quote(args[i])
        # Keep a flag and its value on one line.
        if args[i].startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            part += " " + shell_quote(args[i + 1])
            i += 1
        lines.append(part)
        i += 1
    return " \\\n    ".join(lines)


def render_launch_script(fleet: FleetConfig, binary: str = LLAMA_SERVER_BIN) -> str:
    """A bash script that starts every server of ``fleet`` in the background.

    Logs go to ``.logs/<endpoint>.log`` (pids to ``.logs/<endpoint>.pid``) under the
    directory the script runs in. Paths using ``$MODELS_DIR`` are checked before anything
    starts, with a message saying what to set.

    Args:
        fleet: The fleet to launch.
        binary: ``llama-server`` executable (the script also honours ``$LLAMA_SERVER``).
    """
    tiers = fleet.tiers_by_endpoint()
    llama = [e for e in fleet.all_endpoints() if e.kind == "llamacpp"]
    ollama_groups: dict[str, list[EndpointConfig]] = {}
    for endpoint in fleet.all_endpoints():
        if endpoint.kind == "ollama":
            ollama_groups.setdefault(endpoint.base_url, []).append(endpoint)
    model_files = [f for e in llama for f in _model_files(e)]
    model_files += [
        a
        for e in llama
        for flag, a in zip(e.launch.extra_args, e.launch.extra_args[1:], strict=False)
        if flag in {"--mmproj", "-mm"}
    ]
    uses_models_dir = any(_VAR.search(f) and "MODELS_DIR" in f for f in model_files)

    out: list[str] = [
        "#!/usr/bin/env bash",
        f"# Launch script for fleet {fleet.name!r}, generated by `kitty-orch fleet script`.",
        f"# Source: {fleet.source or '(in-memory fleet)'}",
    ]
    if fleet.description:
        out.append(f"# {fleet.description}")
    out += [
        "# Servers run in the background; logs in .logs/<endpoint>.log, pids in .logs/*.pid.",
        "# Stop them with: kill $(cat .logs/*.pid)",
        "set -euo pipefail",
        "",
        f'LLAMA_SERVER="${{LLAMA_SERVER:-{binary}}}"',
        f"mkdir -p {LOG_DIR}",
        "",
    ]
    if uses_models_dir:
        out += [
            'if [[ -z "${MODELS_DIR:-}" ]]; then',
            '    echo "error: MODELS_DIR is not set; export MODELS_DIR=/path/to/your/gguf/models'
            ' (the directory holding the .gguf files named below) and run again" >&2',
            "    exit 2",
            "fi",
            'if [[ ! -d "$MODELS_DIR" ]]; then',
            '    echo "error: MODELS_DIR=$MODELS_DIR is not a directory; point it at your'
            ' GGUF models" >&2',
            "    exit 2",
            "fi",
            "",
        ]
    if llama:
        out += [
            "missing=0",
            "require_file() {",
            '    if [[ ! -f "$1" ]]; then',
            '        echo "error: model file $1 not found (download it or fix model_path'
            ' in the fleet file)" >&2',
            "        missing=1",
            "    fi",
            "}",
        ]
        out += [f"require_file {shell_quote(f)}" for f in dict.fromkeys(model_files)]
        out += [
            'if [[ "$missing" -ne 0 ]]; then exit 2; fi',
            'if ! command -v "$LLAMA_SERVER" >/dev/null 2>&1; then',
            '    echo "error: $LLAMA_SERVER not found; build llama.cpp (cmake --build build'
            ' -t llama-server) and put it on PATH or set LLAMA_SERVER=/path/to/llama-server"'
            " >&2",
            "    exit 2",
            "fi",
            "",
        ]
    if ollama_groups:
        out += [
            "if ! command -v ollama >/dev/null 2>&1; then",
            '    echo "error: ollama not found; install it from https://ollama.com/download" >&2',
            "    exit 2",
            "fi",
            "",
        ]
    for endpoint in llama:
        args = llama_server_args(endpoint, binary="$LLAMA_SERVER")
        slots = endpoint.slots
        per_slot = total_ctx(endpoint) // slots if slots else total_ctx(endpoint)
        out.append(
            f"# {endpoint.name}: tier(s) {', '.join(tiers[endpoint.name])}, "
            f"{slots or 'auto'} slots, model id {endpoint.model!r}"
        )
        if endpoint.launch.kv_unified:
            out.append(
                f"# --kv-unified: all slots share one {total_ctx(endpoint)}-token KV buffer."
            )
        else:
            out.append(
                "# An explicit -np splits -c across the slots unless --kv-unified is set: "
                f"{total_ctx(endpoint)} / {slots or 1} = {per_slot} tokens per slot."
            )
        if endpoint.launch.draft_model:
            out.append(
                "# Speculative decoding: -md names the draft model; builds older than the"
                " --spec-type rework enable it from -md alone (drop --spec-type there)."
            )
        log = f"{LOG_DIR}/{endpoint.name}.log"
        out.append(f"nohup {_join(args)} \\\n    > {shell_quote(log)} 2>&1 &")
        out.append(f"echo $! > {shell_quote(f'{LOG_DIR}/{endpoint.name}.pid')}")
        out.append(f'echo "started {endpoint.name} on {endpoint.base_url} (log: {log})"')
        out.append("")
    for base_url, group in ollama_groups.items():
        env = ollama_env(group)
        name = group[0].name
        log = f"{LOG_DIR}/{name}.log"
        out.append(
            f"# {', '.join(e.name for e in group)}: Ollama at {base_url}, "
            f"tier(s) {', '.join(t for e in group for t in tiers[e.name])}"
        )
        out.append(
            "# OLLAMA_NUM_PARALLEL is per loaded model; requests beyond OLLAMA_MAX_QUEUE "
            "get 503 (server busy)."
        )
        env_prefix = " ".join(f"{k}={shell_quote(v)}" for k, v in env.items())
        out.append(f"{env_prefix} nohup ollama serve > {shell_quote(log)} 2>&1 &")
        out.append(f"echo $! > {shell_quote(f'{LOG_DIR}/{name}.pid')}")
        out.append(f'echo "started ollama for {name} on {base_url} (log: {log})"')
        for endpoint in group:
            out.append(
                f'echo "hint: OLLAMA_HOST={env["OLLAMA_HOST"]} ollama pull {endpoint.model}'
                f'  (first run only)"'
            )
        out.append("")
    from endpoints.config import profiles_dir

    shipped = fleet.source and Path(fleet.source).parent == profiles_dir()
    fleet_arg = fleet.name if shipped or not fleet.source else fleet.source
    out.append(f"echo {shell_quote(f'check with: kitty-orch fleet status --fleet {fleet_arg}')}")
    return "\n".join(out) + "\n"


def write_launch_script(
    fleet: FleetConfig, path: str | Path, binary: str = LLAMA_SERVER_BIN
) -> Path:
    """Write :func:`render_launch_script` to ``path`` and make it executable."""
    target = Path(path)
    target.write_text(render_launch_script(fleet, binary), encoding="utf-8")
    target.chmod(0o755)
    return target


__all__ = [
    "llama_server_args",
    "ollama_env",
    "render_launch_script",
    "shell_quote",
    "total_ctx",
    "write_launch_script",
]
