"""A compiled scenario: validated config + the city (built once) + how to draw an episode."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gigdispatch.envs.core.city import City, Incidents, RoadCity, Traffic, build_grid_graph, sample_incidents
from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.generate import sample_drivers, sample_orders


@dataclass
class Scenario:
    name: str
    cfg: GridScenario
    city: City
    source: str = "<builtin>"
    fixed_orders: dict[str, np.ndarray] | None = None  # replayed instances (MDRP): the same every episode
    fixed_drivers: dict[str, np.ndarray] | None = None
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n_drivers(self) -> int:
        """Drivers in every episode of this scenario (the fixed set of a replay, or ``fleet.drivers``)."""
        return self.cfg.fleet.drivers if self.fixed_drivers is None else len(self.fixed_drivers["vehicle"])

    @classmethod
    def from_config(cls, cfg: GridScenario, source: str = "<builtin>") -> Scenario:
        c = cfg.city
        graph = build_grid_graph(
            c.size,
            c.spacing_m,
            c.jitter_m,
            c.arterial_every,
            c.arterial_mps,
            c.residential_mps,
            c.drop_edges,
            np.random.default_rng(c.layout_seed),
        )
        return cls(name=cfg.name, cfg=cfg, city=RoadCity(graph, c.zones), source=source)

    def sample(self, rngs: dict[str, np.random.Generator]) -> tuple[dict, dict, Traffic]:
        """Static arrays of one episode's orders and drivers, and its traffic."""
        cfg = self.cfg
        if self.fixed_orders is not None and self.fixed_drivers is not None:
            orders = {k: v.copy() for k, v in self.fixed_orders.items()}
            orders["u_convert"] = np.zeros(len(orders["t_place"]))  # every order converts
            drivers = {k: v.copy() for k, v in self.fixed_drivers.items()}
        else:
            orders = sample_orders(cfg, self.city, rngs["demand"])
            drivers = sample_drivers(cfg, self.city, rngs["fleet"])
        tr = cfg.traffic
        incidents: Incidents | None = None
        if tr.enabled and tr.incidents_per_hour > 0:
            incidents = sample_incidents(
                rngs["traffic"],
                cfg.horizon.start,
                cfg.horizon.end,
                self.city.n_zones,
                tr.incidents_per_hour,
                tr.incident_factor,
                tr.incident_minutes,
            )
        traffic = Traffic(
            self.city,
            [(p.center, p.width_hours * 3600.0, p.amplitude) for p in tr.peaks],
            tr.centre_weight,
            incidents,
            enabled=tr.enabled,
        )
        return orders, drivers, traffic
