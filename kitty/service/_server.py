"""Serve the app with uvicorn, loopback first, loud when exposed without a token.

One worker serves the app built here. Several (``workers > 1``) are separate processes
started by uvicorn: each imports :func:`worker_app` and rebuilds the app from the settings
this process hands them in ``$KITTY_SERVICE_WORKER``. They share nothing in memory, so
slot caps, the run limit and thread leases must live in the fleet's Redis slot store, and
checkpoints in one SQLite file (opened in WAL mode) or Postgres. Their Prometheus metrics
meet in files of one directory (``$PROMETHEUS_MULTIPROC_DIR``, made for the service's
lifetime unless the operator set it), so ``GET /metrics`` on any worker counts them all.
"""

from __future__ import annotations

import json
import logging
import os

import uvicorn
from fastapi import FastAPI

from endpoints import LOCAL_STORE, SLOT_STORE_ENV, load_fleet
from graph import MEMORY, default_checkpoint_location, make_checkpointer
from kitty.errors import SettingsError
from kitty.service._app import create_app
from kitty.service._metrics import multiprocess_directory
from kitty.service._security import exposure_warning, is_loopback
from kitty.service._settings import TOKEN_ENV_VAR, ServiceSettings

logger = logging.getLogger("kitty.service")

WORKER_SETTINGS_ENV = "KITTY_SERVICE_WORKER"
# Set by the parent in-process, never by a flag: the token is read from the environment.
_NOT_PASSED = {"api_token", "checkpointer", "checkpointer_factory"}


# Open connections (and in-flight requests) one worker serves; streams count too. Runs are
# bounded separately (--max-concurrent-runs); this bounds everything else.
MAX_CONNECTIONS = 256


def _uvicorn_options(settings: ServiceSettings, log_level: str) -> dict[str, object]:
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": log_level,
        "server_header": False,
        "proxy_headers": False,
        "timeout_graceful_shutdown": 5,
        # Connections beyond this get 503 at once instead of piling up (finding 4).
        "limit_concurrency": MAX_CONNECTIONS,
    }


def _log_exposure(settings: ServiceSettings) -> None:
    warning = exposure_warning(settings.host, settings.api_token)
    if warning:
        logger.warning(warning)
    elif not is_loopback(settings.host):
        logger.info("serving on %s; every route but /healthz needs the bearer token", settings.host)


def make_server(settings: ServiceSettings, *, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for the service (not started; call ``run()`` or ``serve()``).

    Logs a loud warning when binding beyond loopback without an API token.
    """
    _log_exposure(settings)
    app = create_app(settings)
    return uvicorn.Server(uvicorn.Config(app, **_uvicorn_options(settings, log_level)))  # type: ignore[arg-type]


def check_workers(workers: int, fleet: str | None, checkpoint: str | None) -> None:
    """Refuse several workers where they would break the fleet's caps or lose threads.

    Raises:
        SettingsError: ``workers > 1`` with the local slot store (each worker would take
            every slot), or with in-memory checkpoints (each worker its own threads).
    """
    if workers <= 1:
        return
    store = load_fleet(fleet).coordination.store_url()
    if store == LOCAL_STORE:
        raise SettingsError(
            f"--workers {workers} needs a shared slot store: with the local store each "
            "worker counts only its own requests, so every worker would take every slot "
            f"of every server ({workers}x the caps; llama.cpp queues the excess and tasks "
            "time out) and --max-concurrent-runs would allow that many runs per worker. "
            "Start Redis (e.g. `redis-server --port 6379`) and set "
            f"{SLOT_STORE_ENV}=redis://127.0.0.1:6379/0 (or [coordination] slot_store in "
            "the fleet file), or serve with --workers 1"
        )
    if (checkpoint or default_checkpoint_location()) == MEMORY:
        raise SettingsError(
            f"--workers {workers} with --checkpoint memory: each worker would keep its own "
            "threads, so a resume could reach a worker that never saw the run; use a "
            "SQLite file (shared by the workers) or a postgres:// URL"
        )


def _worker_settings(settings: ServiceSettings, checkpoint: str | None) -> str:
    passed = settings.model_dump(exclude=_NOT_PASSED, mode="json")
    return json.dumps({"settings": passed, "checkpoint": checkpoint})


def worker_app() -> FastAPI:
    """The app of one uvicorn worker, from the settings the parent put in the environment.

    Raises:
        SettingsError: ``$KITTY_SERVICE_WORKER`` is missing (start workers with
            ``kitty-orch serve --workers N``).
    """
    text = os.environ.get(WORKER_SETTINGS_ENV)
    if not text:
        raise SettingsError(
            f"{WORKER_SETTINGS_ENV} is not set; start workers with kitty-orch serve --workers N"
        )
    passed = json.loads(text)
    checkpoint = passed["checkpoint"]
    settings = ServiceSettings(
        **passed["settings"], checkpointer_factory=lambda: make_checkpointer(checkpoint)
    )
    return create_app(settings)


def serve(
    settings: ServiceSettings,
    *,
    log_level: str = "info",
    workers: int = 1,
    checkpoint: str | None = None,
) -> None:
    """Run the service until interrupted (blocks).

    Args:
        settings: Service configuration (with ``workers > 1`` its checkpointer is
            rebuilt in each worker from ``checkpoint``).
        log_level: uvicorn log level.
        workers: uvicorn worker processes sharing the port.
        checkpoint: Checkpoint location (as for ``--checkpoint``), for the workers.

    Raises:
        SettingsError: Several workers without a shared slot store or with in-memory
            checkpoints (see :func:`check_workers`).
    """
    if workers <= 1:
        make_server(settings, log_level=log_level).run()
        return
    check_workers(workers, settings.fleet, checkpoint)
    _log_exposure(settings)
    os.environ[WORKER_SETTINGS_ENV] = _worker_settings(settings, checkpoint)
    if settings.api_token:  # workers read it from the environment, like this process
        os.environ[TOKEN_ENV_VAR] = settings.api_token
    # Set before the workers start: prometheus-client picks its mode when imported.
    with multiprocess_directory():
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            workers=workers,
            **_uvicorn_options(settings, log_level),  # type: ignore[arg-type]
        )
