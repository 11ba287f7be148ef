"""Turning tracing on: an OpenTelemetry SDK provider that exports spans over OTLP/HTTP.

Off unless configured, as OpenTelemetry's own SDK is: with no endpoint (the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` variables or the
``--otlp-endpoint`` option) nothing is installed and spans cost next to nothing. A flag
beats the variables; the traces variable is used as given, while a base URL (the generic
variable, the flag) gets ``/v1/traces`` added, as the OTLP exporter specification says.
The exporter reads its other standard variables itself (``OTEL_EXPORTER_OTLP_HEADERS``,
``..._TIMEOUT``, ``..._COMPRESSION``); ``OTEL_SERVICE_NAME`` names the service.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from kitty.errors import SettingsError
from kitty.telemetry._tracing import Tracing

TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
"""The standard variable naming the collector's traces URL, used as given."""
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
"""The standard variable naming the collector's base URL (``/v1/traces`` is added)."""
SERVICE_NAME_ENV = "OTEL_SERVICE_NAME"
DEFAULT_SERVICE_NAME = "kitty-orchestrator"
TRACES_PATH = "/v1/traces"
_PROTOCOL_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
# Export at exit waits this long at most: a collector that is down must not hold the exit.
FLUSH_TIMEOUT_MS = 5000


def _checked_url(url: str, origin: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(
            f"{origin} is {url!r}, which is not an http(s) URL; give the collector's OTLP/HTTP "
            "address, e.g. http://127.0.0.1:4318 (Jaeger, Tempo and the OpenTelemetry "
            "Collector listen there)"
        )
    return url.strip()


def traces_url(base_url: str, origin: str = "--otlp-endpoint") -> str:
    """The traces URL of a collector's OTLP/HTTP base URL (``/v1/traces`` added).

    Raises:
        SettingsError: ``base_url`` is not an http(s) URL; ``origin`` names where it came from.
    """
    return _checked_url(base_url, origin).rstrip("/") + TRACES_PATH


def otlp_traces_endpoint(environ: Mapping[str, str], endpoint: str | None = None) -> str | None:
    """Where spans go: ``endpoint`` (a base URL), else the standard variables; ``None``: off.

    Args:
        environ: The process environment (``os.environ``).
        endpoint: The collector's OTLP/HTTP base URL from a flag or setting; it wins.

    Raises:
        SettingsError: A URL that is not http(s), or the gRPC protocol asked for (only
            OTLP over HTTP, port 4318, is exported).
    """
    if endpoint:
        return traces_url(endpoint)
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    url: str | None = None
    if environ.get(TRACES_ENDPOINT_ENV, "").strip():
        url = _checked_url(environ[TRACES_ENDPOINT_ENV], TRACES_ENDPOINT_ENV)
    elif environ.get(ENDPOINT_ENV, "").strip():
        url = traces_url(environ[ENDPOINT_ENV], ENDPOINT_ENV)
    if url is not None:
        for name in _PROTOCOL_ENVS:
            protocol = environ.get(name, "").strip()
            if protocol and protocol != "http/protobuf":
                raise SettingsError(
                    f"{name}={protocol!r}: kitty-orchestrator exports traces over OTLP/HTTP "
                    "only; unset it (or set http/protobuf) and point the endpoint at the "
                    "collector's HTTP port (4318)"
                )
    return url


def make_provider(traces_endpoint: str, environ: Mapping[str, str]) -> TracerProvider:
    """An SDK provider batching spans to ``traces_endpoint`` over OTLP/HTTP."""
    name = environ.get(SERVICE_NAME_ENV, "").strip() or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_endpoint)))
    return provider


def stop_provider(provider: TracerProvider) -> None:
    """Export what is still buffered (within :data:`FLUSH_TIMEOUT_MS`), then shut down."""
    provider.force_flush(FLUSH_TIMEOUT_MS)
    provider.shutdown()


@contextmanager
def tracing_session(
    tracing: Tracing, environ: Mapping[str, str], endpoint: str | None = None
) -> Iterator[TracerProvider | None]:
    """Export this process's spans while the block runs, when tracing is configured.

    Configured (see :func:`otlp_traces_endpoint`): an SDK provider is installed in
    ``tracing`` for the block, flushed and shut down at its end, and the provider that
    was there before comes back. Not configured: nothing changes, and ``None`` is yielded.

    Args:
        tracing: The process's tracing (``endpoints.calls.process_tracing()``).
        environ: The process environment (``os.environ``).
        endpoint: The collector's OTLP/HTTP base URL (``--otlp-endpoint``); it wins.

    Raises:
        SettingsError: A bad endpoint or protocol (before anything is installed).
    """
    url = otlp_traces_endpoint(environ, endpoint)
    if url is None:
        yield None
        return
    provider = make_provider(url, environ)
    previous = tracing.install(provider)
    try:
        yield provider
    finally:
        tracing.install(previous)
        stop_provider(provider)


__all__ = [
    "DEFAULT_SERVICE_NAME",
    "ENDPOINT_ENV",
    "SERVICE_NAME_ENV",
    "TRACES_ENDPOINT_ENV",
    "make_provider",
    "otlp_traces_endpoint",
    "stop_provider",
    "traces_url",
    "tracing_session",
]
