"""Test-only fake servers (a real Ollama daemon cannot run in the test environment)."""

from tests.fakes.ollama_server import FakeOllama, RecordedRequest

__all__ = ["FakeOllama", "RecordedRequest"]
