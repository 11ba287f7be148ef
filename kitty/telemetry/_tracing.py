"""Where a process's spans go: the provider installed for it, else OpenTelemetry's global one.

A :class:`Tracing` lives in the process runtime (``endpoints.calls.process_tracing()``), not
in OpenTelemetry's global provider, which can be set once per process: a test installs an
SDK provider with an in-memory exporter here, and ``reset_runtime()`` takes it away again,
so tests never share spans. With nothing installed, spans go to OpenTelemetry's global
provider, as an instrumentation library's do: an application that set one up (or
``opentelemetry-instrument``) gets kitty's spans in its traces, and without one every span
is a no-op.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from opentelemetry import trace

INSTRUMENTATION_NAME = "kitty-orchestrator"
"""The instrumentation scope of every kitty span."""


def _version() -> str | None:
    try:
        return version("kitty-orchestrator")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return None


class Tracing:
    """The tracer provider of this process's runs (``None``: OpenTelemetry's global one).

    Attributes:
        provider: The installed provider, if any.
    """

    def __init__(self) -> None:
        self.provider: trace.TracerProvider | None = None
        self._tracer: trace.Tracer | None = None

    def install(self, provider: trace.TracerProvider | None) -> trace.TracerProvider | None:
        """Send spans to ``provider`` from now on (``None``: the global one); return the old."""
        previous, self.provider = self.provider, provider
        self._tracer = None
        return previous

    def tracer(self) -> trace.Tracer:
        """The tracer spans are started with (a no-op one when nothing is configured).

        The global provider's tracer is a proxy: it follows a provider set up later.
        """
        if self._tracer is None:
            provider = self.provider or trace.get_tracer_provider()
            self._tracer = provider.get_tracer(INSTRUMENTATION_NAME, _version())
        return self._tracer


__all__ = ["INSTRUMENTATION_NAME", "Tracing"]
