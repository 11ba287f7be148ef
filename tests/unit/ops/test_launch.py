"""Launch-script generation (llama-server flags, Ollama environment)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from endpoints.config import EndpointConfig, FleetConfig, load_fleet
from ops.launch import (
    llama_server_args,
    ollama_env,
    render_launch_script,
    shell_quote,
    total_ctx,
    write_launch_script,
)


@pytest.fixture(scope="module")
def m3() -> FleetConfig:
    return load_fleet("m3-ultra")


@pytest.fixture(scope="module")
def m3_script(m3: FleetConfig) -> str:
    return render_launch_script(m3)


def endpoint(fleet: FleetConfig, name: str) -> EndpointConfig:
    return next(e for e in fleet.all_endpoints() if e.name == name)


def flag_value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_athene_args(m3: FleetConfig) -> None:
    args = llama_server_args(endpoint(m3, "athene-q4"))
    assert args[0] == "llama-server"
    assert flag_value(args, "--model") == "$MODELS_DIR/athene-v2-agent-q4_k_m.gguf"
    assert flag_value(args, "--alias") == "kitty-q4"
    assert flag_value(args, "--host") == "localhost"
    assert flag_value(args, "--port") == "8083"
    assert flag_value(args, "-np") == "6"
    assert flag_value(args, "-c") == "98304"
    assert flag_value(args, "-b") == "4096"
    assert flag_value(args, "-ub") == "1024"
    assert flag_value(args, "-t") == "8"
    assert flag_value(args, "-ngl") == "999"
    assert flag_value(args, "--flash-attn") == "on"
    for flag in ("--metrics", "--jinja", "--cont-batching"):
        assert flag in args
    assert "--kv-unified" not in args
    assert "-md" not in args


def test_extra_args_verbatim(m3: FleetConfig) -> None:
    args = llama_server_args(endpoint(m3, "gemma3-27b-vision"))
    assert args[-2:] == ["--mmproj", "$MODELS_DIR/mmproj-gemma-3-27b-f16.gguf"]


def test_ctx_defaults_to_ctx_times_slots() -> None:
    fleet = FleetConfig.model_validate(
        {
            "name": "t",
            "tiers": {
                "tools": {
                    "endpoints": [
                        {
                            "name": "e",
                            "kind": "llamacpp",
                            "base_url": "http://0.0.0.0:9000",
                            "model": "m",
                            "slots": 3,
                            "ctx": 4096,
                            "launch": {
                                "model_path": "/models/a b.gguf",
                                "kv_unified": True,
                                "draft_model": "/models/draft.gguf",
                                "extra_args": ["--cache-type-k", "q8_0"],
                            },
                        }
                    ]
                }
            },
        }
    )
    e = fleet.all_endpoints()[0]
    assert total_ctx(e) == 12288
    args = llama_server_args(e)
    assert flag_value(args, "-c") == "12288"
    assert "--kv-unified" in args
    assert flag_value(args, "-md") == "/models/draft.gguf"
    assert flag_value(args, "--spec-type") == "draft-simple"
    assert args[-2:] == ["--cache-type-k", "q8_0"]
    assert "--flash-attn" not in args
    assert "-ngl" not in args
    script = render_launch_script(fleet)
    assert '"/models/a b.gguf"' in script  # quoted for the space
    assert "--kv-unified" in script
    assert "MODELS_DIR" not in script  # no check when no path uses it


def test_ollama_env(m3: FleetConfig) -> None:
    env = ollama_env([endpoint(m3, "gpt-oss-120b")])
    assert env == {
        "OLLAMA_HOST": "localhost:11434",
        "OLLAMA_NUM_PARALLEL": "2",
        "OLLAMA_MAX_QUEUE": "512",
        "OLLAMA_KEEP_ALIVE": "30m",
    }


def test_ollama_endpoint_has_no_llama_args(m3: FleetConfig) -> None:
    with pytest.raises(ValueError, match="not llamacpp"):
        llama_server_args(endpoint(m3, "gpt-oss-120b"))


def test_script_header_and_checks(m3_script: str) -> None:
    lines = m3_script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines
    assert "mkdir -p .logs" in lines
    assert 'if [[ -z "${MODELS_DIR:-}" ]]; then' in m3_script
    assert "MODELS_DIR is not set" in m3_script
    assert 'require_file "$MODELS_DIR/qwen2.5-coder-32b-instruct-q8_0.gguf"' in m3_script
    assert 'require_file "$MODELS_DIR/mmproj-gemma-3-27b-f16.gguf"' in m3_script
    # Checks come before any server starts.
    assert m3_script.index("MODELS_DIR is not set") < m3_script.index("nohup")
    assert m3_script.index("ollama not found") < m3_script.index("nohup")


def test_script_llama_lines(m3_script: str, m3: FleetConfig) -> None:
    for e in m3.all_endpoints():
        if e.kind != "llamacpp":
            continue
        assert f"> .logs/{e.name}.log 2>&1 &" in m3_script
        assert f"--alias {e.model}" in m3_script
        assert f"--port {e.port}" in m3_script
    assert "-np 6" in m3_script
    assert "-c 98304" in m3_script
    assert "--flash-attn on" in m3_script
    assert "splits -c across the slots unless --kv-unified" in m3_script
    assert "98304 / 6 = 16384 tokens per slot" in m3_script
    assert m3_script.count("--metrics") == 4
    assert m3_script.count("--jinja") == 4
    assert m3_script.count("--cont-batching") == 4


def test_script_ollama_lines(m3_script: str) -> None:
    assert (
        "OLLAMA_HOST=localhost:11434 OLLAMA_NUM_PARALLEL=2 OLLAMA_MAX_QUEUE=512 "
        "OLLAMA_KEEP_ALIVE=30m nohup ollama serve > .logs/gpt-oss-120b.log 2>&1 &"
    ) in m3_script
    assert "ollama pull gpt-oss:120b" in m3_script


def test_script_is_valid_bash(m3_script: str, tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    path = tmp_path / "launch.sh"
    path.write_text(m3_script)
    subprocess.run([bash, "-n", str(path)], check=True)


def test_script_refuses_without_models_dir(m3_script: str, tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    path = write_launch_script(load_fleet("m3-ultra"), tmp_path / "launch.sh")
    assert os.access(path, os.X_OK)
    env = {k: v for k, v in os.environ.items() if k != "MODELS_DIR"}
    result = subprocess.run(
        [bash, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "MODELS_DIR is not set" in result.stderr
    # Missing model files are named, and nothing is started.
    env["MODELS_DIR"] = str(tmp_path)
    result = subprocess.run(
        [bash, str(path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert f"model file {tmp_path}/athene-v2-agent-q4_k_m.gguf not found" in result.stderr
    assert not list((tmp_path / ".logs").glob("*.pid"))


def test_embedded_script_resolves_packaged_model() -> None:
    script = render_launch_script(load_fleet("embedded"))
    assert "pkg:" not in script
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in script
    assert "-np 4" in script
    assert "ollama" not in script


@pytest.mark.parametrize(
    "value",
    ["plain", "$MODELS_DIR/a.gguf", "${MODELS_DIR}/x y.gguf", 'we"ird', "cost$", "a`b`"],
)
def test_shell_quote_round_trip(value: str) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    env = {"MODELS_DIR": "/m", "PATH": os.environ.get("PATH", "")}
    out = subprocess.run(
        [bash, "-c", f"printf %s {shell_quote(value)}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    expected = value.replace("${MODELS_DIR}", "/m").replace("$MODELS_DIR", "/m")
    assert out == expected
    assert shlex.split(shell_quote("plain")) == ["plain"]
