"""``launch.mmproj``: the embedded fleet and launch scripts start a server that can see."""

from __future__ import annotations

from pathlib import Path

from endpoints.config import EndpointConfig, load_fleet
from ops.embedded import _server_params
from ops.launch import llama_server_args, render_launch_script


def _endpoint(mmproj: str | None) -> EndpointConfig:
    return EndpointConfig.model_validate(
        {
            "name": "vision",
            "kind": "llamacpp",
            "base_url": "http://127.0.0.1:28999",
            "model": "vlm",
            "supports_vision": True,
            "launch": {"model_path": "/models/vlm.gguf", "mmproj": mmproj},
        }
    )


def test_the_script_passes_mmproj_and_checks_the_file() -> None:
    args = llama_server_args(_endpoint("$MODELS_DIR/mmproj-vlm.gguf"))
    at = args.index("--mmproj")
    assert args[at + 1] == "$MODELS_DIR/mmproj-vlm.gguf"
    assert "--mmproj" not in llama_server_args(_endpoint(None))
    script = render_launch_script(load_fleet("m3-ultra"))
    assert 'require_file "$MODELS_DIR/mmproj-gemma-3-27b-f16.gguf"' in script
    assert '--mmproj "$MODELS_DIR/mmproj-gemma-3-27b-f16.gguf"' in script
    assert script.count("--mmproj") == 1  # from launch.mmproj, not also from extra_args


def test_the_m3_ultra_gemma_endpoint_declares_its_projector() -> None:
    gemma = load_fleet("m3-ultra").tier("vision").endpoints[0]
    assert gemma.supports_vision
    assert gemma.launch.mmproj == "$MODELS_DIR/mmproj-gemma-3-27b-f16.gguf"


def test_the_embedded_fleet_gives_xllamacpp_the_projector(tmp_path: Path) -> None:
    projector = tmp_path / "mmproj-vlm.gguf"
    projector.write_bytes(b"GGUF")
    model = tmp_path / "vlm.gguf"
    params = _server_params(_endpoint(str(projector)), model, verbose=False)
    assert params.mmproj.path == str(projector)
    assert _server_params(_endpoint(None), model, verbose=False).mmproj.path == ""
