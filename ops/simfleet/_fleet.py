"""A whole SIMULATED fleet: the llama.cpp endpoints of a fleet profile, served on loopback."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI

from endpoints.config import EndpointConfig, FleetConfig, TierConfig, load_fleet
from kitty.errors import SimFleetError
from ops.simfleet._background import BackgroundServers
from ops.simfleet._calibration import SIM_ENDPOINT_PARAMS
from ops.simfleet._engine import SimEngine
from ops.simfleet._server import create_sim_app
from ops.simfleet._spec import SimEndpointSpec

logger = logging.getLogger("kitty.simfleet")

DEFAULT_SIM_FLEET = "m3-ultra-sim"


def _spec_for_endpoint(
    endpoint: EndpointConfig,
    *,
    time_scale: float = 1.0,
    overrides: Mapping[str, Any] | None = None,
) -> SimEndpointSpec:
    """The SIMULATED spec of a fleet endpoint: its slots/ctx/port + simulation parameters.

    Parameters come from :data:`SIM_ENDPOINT_PARAMS` by endpoint name (defaults: the
    gemma-3-4b M2 Ultra calibration), then ``overrides``.
    """
    params: dict[str, Any] = {
        "name": endpoint.name,
        "model_alias": endpoint.model,
        "host": endpoint.host,
        "port": endpoint.port,
        "slots": endpoint.slots or 4,
        "n_ctx": endpoint.ctx,
        "time_scale": time_scale,
    }
    params.update(SIM_ENDPOINT_PARAMS.get(endpoint.name, {}))
    params.update(overrides or {})
    return SimEndpointSpec(**params)


class SimFleet:
    """SIMULATED llama.cpp endpoints served on loopback ports by one background thread.

    Example:
        >>> with SimFleet.from_fleet("m3-ultra-sim", time_scale=0.1) as sim:  # doctest: +SKIP
        ...     fleet = sim.fleet  # the FleetConfig, pointing at the simulated servers
    """

    def __init__(
        self,
        specs: Sequence[SimEndpointSpec],
        *,
        fleet: FleetConfig | None = None,
        log_level: str = "warning",
    ) -> None:
        """Prepare the servers (nothing listens before :meth:`start`).

        Args:
            specs: One spec per endpoint; ``port=0`` picks a free port.
            fleet: The fleet the specs came from; :attr:`fleet` rewrites its URLs.
            log_level: uvicorn log level.
        """
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise SimFleetError(f"endpoint names must be unique, got {names}")
        self._specs = list(specs)
        self._source_fleet = fleet
        self._log_level = log_level
        self._servers: BackgroundServers | None = None
        self.apps: dict[str, FastAPI] = {}
        self.specs: dict[str, SimEndpointSpec] = {spec.name: spec for spec in specs}
        self.skipped: list[str] = []

    @classmethod
    def from_fleet(
        cls,
        fleet: str | FleetConfig | None = DEFAULT_SIM_FLEET,
        *,
        time_scale: float = 1.0,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        log_level: str = "warning",
    ) -> SimFleet:
        """Simulate every llama.cpp endpoint of a fleet on its own host and port.

        Args:
            fleet: Profile name, path or loaded config (default ``m3-ultra-sim``).
            time_scale: Wall seconds per simulated second for every endpoint.
            overrides: Endpoint name -> :class:`SimEndpointSpec` fields to change.
            log_level: uvicorn log level.

        Returns:
            A fleet ready to :meth:`start`. Ollama endpoints are not simulated (the simulator
            speaks llama.cpp's API); their names are in :attr:`skipped`.
        """
        config = load_fleet(fleet)
        specs: list[SimEndpointSpec] = []
        skipped: list[str] = []
        for endpoint in config.all_endpoints():
            if endpoint.kind != "llamacpp":
                skipped.append(endpoint.name)
                continue
            specs.append(
                _spec_for_endpoint(
                    endpoint,
                    time_scale=time_scale,
                    overrides=(overrides or {}).get(endpoint.name),
                )
            )
        if skipped:
            logger.warning("not simulated (Ollama endpoints): %s", ", ".join(skipped))
        sim = cls(specs, fleet=config, log_level=log_level)
        sim.skipped = skipped
        return sim

    @property
    def urls(self) -> dict[str, str]:
        """Endpoint name -> base URL (actual ports once started)."""
        return {name: spec.base_url for name, spec in self.specs.items()}

    @property
    def fleet(self) -> FleetConfig | None:
        """The source fleet as served: URLs on the bound ports, slots/ctx from the specs.

        Pass this to the orchestrator so its limiter and budgets match the simulation
        (also after ``overrides`` changed ``slots`` or ``n_ctx``).
        """
        if self._source_fleet is None:
            return None
        tiers: dict[str, TierConfig] = {}
        for tier_name, tier in self._source_fleet.tiers.items():
            endpoints = [
                ep.model_copy(update=self._served(self.specs[ep.name]))
                if ep.name in self.specs
                else ep
                for ep in tier.endpoints
            ]
            tiers[tier_name] = tier.model_copy(update={"endpoints": endpoints})
        return self._source_fleet.model_copy(update={"tiers": tiers})

    @staticmethod
    def _served(spec: SimEndpointSpec) -> dict[str, Any]:
        return {"base_url": spec.base_url, "slots": spec.slots, "ctx": spec.n_ctx}

    def engine(self, name: str) -> SimEngine:
        """The timing engine of one endpoint (for inspection in tests and notebooks)."""
        engine: SimEngine = self.apps[name].state.engine
        return engine

    def start(self, timeout_s: float = 15.0) -> SimFleet:
        """Start every server; returns self once all accept connections.

        Raises:
            SimFleetError: A port is taken (the message names it) or a server failed.
        """
        if self._servers is not None and self._servers.running:
            return self
        self.apps = {spec.name: create_sim_app(spec) for spec in self._specs}
        servers = BackgroundServers(
            [(self.apps[s.name], s.host, s.port) for s in self._specs],
            name="kitty-simfleet",
            log_level=self._log_level,
        )
        ports = servers.start(timeout_s)
        self._servers = servers
        self.specs = {
            spec.name: spec.model_copy(update={"port": port})
            for spec, port in zip(self._specs, ports, strict=True)
        }
        return self

    def stop(self) -> None:
        """Stop every server (in-flight requests get HTTP 503)."""
        if self._servers is not None:
            self._servers.stop()
            self._servers = None

    def __enter__(self) -> SimFleet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
