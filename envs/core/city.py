"""The city: nodes with x/y in metres, travel times, zones, and traffic.

Two kinds share one interface (``travel_s``, ``dist_m``, ``zone_of``):

* ``RoadCity`` -- a networkx road graph (edges with ``length`` and ``road`` class). Free-flow car
  travel times and distances between every pair of nodes are computed once per scenario into
  ``(N, N)`` float32 arrays, so a lookup is O(1) and vectorised.
* ``EuclideanCity`` -- the MDRP metric: ``ceil(euclid / meters_per_minute)`` minutes, computed from the
  coordinates on demand (also O(1) per pair); used to replay the Grubhub instances exactly.

``Traffic`` turns the time of day, the zone and random incidents into a slowdown factor >= 1 that
multiplies the free-flow time of whatever a driver drives inside that zone.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import networkx as nx
import numpy as np
from scipy.sparse.csgraph import dijkstra


class City:
    """Interface shared by the city kinds."""

    node_xy: np.ndarray  # (N, 2) float64 metres
    zone_of: np.ndarray  # (N,) int32
    zone_xy: np.ndarray  # (Z, 2) float64 zone centroid
    zone_node: np.ndarray  # (Z,) int32 the node nearest the zone centroid (repositioning target)
    zone_neighbors: np.ndarray  # (Z, 8) int32 adjacent zones, -1 padded
    zone_centrality: np.ndarray  # (Z,) float64 1 at the centre, 0 at the farthest zone
    graph: nx.Graph

    @property
    def n_nodes(self) -> int:
        return int(self.node_xy.shape[0])

    @property
    def n_zones(self) -> int:
        return int(self.zone_xy.shape[0])

    def travel_s(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Free-flow car travel seconds from nodes ``a`` to nodes ``b`` (broadcast)."""
        raise NotImplementedError

    def dist_m(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Road distance in metres from nodes ``a`` to nodes ``b`` (broadcast)."""
        raise NotImplementedError

    def travel_s_from(self, frm: np.ndarray) -> np.ndarray:
        """(len(frm), N) travel seconds from each node of ``frm`` (1-D) to every node."""
        return self.travel_s(frm[:, None], np.arange(self.n_nodes)[None, :])

    def travel_s_to(self, to: np.ndarray, frm: np.ndarray) -> np.ndarray:
        """(len(to), len(frm)) travel seconds from every node of ``frm`` to every node of ``to`` (1-D each):
        ``travel_s(frm[None, :], to[:, None])``."""
        return self.travel_s(frm[None, :], to[:, None])

    def nearest_node(self, xy: np.ndarray) -> np.ndarray:
        d = ((self.node_xy[None, :, :] - np.asarray(xy, dtype=np.float64)[:, None, :]) ** 2).sum(-1)
        return d.argmin(axis=1).astype(np.int32)

    def _finish_zones(self, zone_of: np.ndarray, n_zones: int, zone_grid: tuple[int, int] | None) -> None:
        self.zone_of = zone_of.astype(np.int32)
        counts = np.bincount(zone_of, minlength=n_zones).astype(np.float64)
        sx = np.bincount(zone_of, weights=self.node_xy[:, 0], minlength=n_zones)
        sy = np.bincount(zone_of, weights=self.node_xy[:, 1], minlength=n_zones)
        safe = np.maximum(counts, 1.0)
        self.zone_xy = np.stack([sx / safe, sy / safe], axis=1)
        self.zone_node = self.nearest_node(self.zone_xy)
        centre = self.node_xy.mean(axis=0)
        dc = np.hypot(*(self.zone_xy - centre).T)
        self.zone_centrality = 1.0 - dc / max(dc.max(), 1e-9)
        nb = np.full((n_zones, 8), -1, dtype=np.int32)
        if zone_grid is not None:
            zx, zy = zone_grid
            for z in range(n_zones):  # once per scenario, Z <= a few hundred
                i, j = divmod(z, zy)
                cands = [
                    (i + di) * zy + (j + dj)
                    for di in (-1, 0, 1)
                    for dj in (-1, 0, 1)
                    if (di or dj) and 0 <= i + di < zx and 0 <= j + dj < zy
                ]
                nb[z, : len(cands)] = cands
        self.zone_neighbors = nb


class RoadCity(City):
    """A jittered grid road network with arterial and residential roads."""

    def __init__(self, graph: nx.Graph, zone_grid: tuple[int, int]) -> None:
        self.graph = graph
        n = graph.number_of_nodes()
        self.node_xy = np.array([[graph.nodes[i]["x"], graph.nodes[i]["y"]] for i in range(n)], dtype=np.float64)
        adj_t = nx.to_scipy_sparse_array(graph, nodelist=range(n), weight="time", format="csr")
        adj_d = nx.to_scipy_sparse_array(graph, nodelist=range(n), weight="length", format="csr")
        tt = dijkstra(adj_t, directed=False)
        dd = dijkstra(adj_d, directed=False)
        if not np.isfinite(tt).all():
            raise ValueError("city: the road network is not connected")
        self.tt = tt.astype(np.float32)  # (N, N) free-flow car seconds
        self.dd = dd.astype(np.float32)  # (N, N) metres (shortest distance)
        # zones: a regular grid of cells over the bounding box
        zx, zy = zone_grid
        lo, hi = self.node_xy.min(axis=0), self.node_xy.max(axis=0) + 1e-6
        cell = np.floor((self.node_xy - lo) / (hi - lo) * np.array([zx, zy])).astype(np.int64)
        self._finish_zones(cell[:, 0] * zy + cell[:, 1], zx * zy, zone_grid)

    def travel_s(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.tt[a, b]

    def travel_s_from(self, frm: np.ndarray) -> np.ndarray:
        return self.tt[frm]  # whole rows

    def travel_s_to(self, to: np.ndarray, frm: np.ndarray) -> np.ndarray:
        # one flat gather: about twice as fast as the broadcast 2-D fancy index on large grids
        return self.tt.reshape(-1).take(to[:, None] + frm.astype(np.int64)[None, :] * self.tt.shape[1])

    def dist_m(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.dd[a, b]


def build_grid_graph(
    size: tuple[int, int],
    spacing_m: float,
    jitter_m: float,
    arterial_every: int,
    arterial_mps: float,
    residential_mps: float,
    drop_edges: float,
    rng: np.random.Generator,
) -> nx.Graph:
    """A jittered ``size`` grid; every ``arterial_every``-th row/column is an arterial road."""
    nx_, ny_ = size
    g = nx.Graph()
    jit = rng.uniform(-jitter_m, jitter_m, size=(nx_ * ny_, 2))
    for i in range(nx_):
        for j in range(ny_):
            k = i * ny_ + j
            g.add_node(k, x=float(i * spacing_m + jit[k, 0]), y=float(j * spacing_m + jit[k, 1]))
    for i in range(nx_):
        for j in range(ny_):
            k = i * ny_ + j
            for di, dj in ((1, 0), (0, 1)):
                if i + di >= nx_ or j + dj >= ny_:
                    continue
                m = (i + di) * ny_ + (j + dj)
                arterial = (dj == 0 and j % arterial_every == 0) or (di == 0 and i % arterial_every == 0)
                if not arterial and rng.random() < drop_edges:
                    continue
                a, b = g.nodes[k], g.nodes[m]
                length = float(np.hypot(a["x"] - b["x"], a["y"] - b["y"]))
                speed = arterial_mps if arterial else residential_mps
                g.add_edge(k, m, length=length, road="arterial" if arterial else "residential", time=length / speed)
    # dropping edges may isolate a node: keep the largest component's reachability by re-adding edges
    comps = sorted(nx.connected_components(g), key=len, reverse=True)
    for comp in comps[1:]:
        for k in comp:
            i, j = divmod(k, ny_)
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                if 0 <= i + di < nx_ and 0 <= j + dj < ny_:
                    m = (i + di) * ny_ + (j + dj)
                    a, b = g.nodes[k], g.nodes[m]
                    length = float(np.hypot(a["x"] - b["x"], a["y"] - b["y"]))
                    g.add_edge(k, m, length=length, road="residential", time=length / residential_mps)
    return g


class EuclideanCity(City):
    """MDRP metric: travel time = ceil(euclidean metres / meters_per_minute) whole minutes."""

    def __init__(self, node_xy: np.ndarray, meters_per_minute: float, zone_grid: tuple[int, int] = (6, 6)) -> None:
        self.node_xy = np.asarray(node_xy, dtype=np.float64)
        self.mpm = float(meters_per_minute)
        self.graph = nx.empty_graph(self.n_nodes)  # complete Euclidean metric: no road edges are needed
        for i, (x, y) in enumerate(self.node_xy):
            self.graph.nodes[i]["x"], self.graph.nodes[i]["y"] = float(x), float(y)
        zx, zy = zone_grid
        lo, hi = self.node_xy.min(axis=0), self.node_xy.max(axis=0) + 1e-6
        cell = np.floor((self.node_xy - lo) / (hi - lo) * np.array([zx, zy])).astype(np.int64)
        self._finish_zones(cell[:, 0] * zy + cell[:, 1], zx * zy, zone_grid)

    def dist_m(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pa, pb = self.node_xy[a], self.node_xy[b]
        return np.hypot(pa[..., 0] - pb[..., 0], pa[..., 1] - pb[..., 1])

    def travel_s(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.ceil(self.dist_m(a, b) / self.mpm) * 60.0


@dataclass
class Incidents:
    start: np.ndarray  # (K,) float64
    end: np.ndarray  # (K,) float64
    zone: np.ndarray  # (K,) int32
    factor: np.ndarray  # (K,) float64


class Traffic:
    """Slowdown factor per zone: time-of-day peaks (stronger in central zones) times incidents."""

    def __init__(
        self,
        city: City,
        peaks: list[tuple[float, float, float]],  # (centre s, width s, amplitude)
        centre_weight: float,
        incidents: Incidents | None,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        self.peaks = np.array(peaks, dtype=np.float64).reshape(-1, 3)
        self.zone_weight = 1.0 + centre_weight * city.zone_centrality  # (Z,)
        self.incidents = incidents or Incidents(*(np.zeros(0),) * 2, np.zeros(0, np.int32), np.zeros(0))
        self.n_zones = city.n_zones
        self._c, self._w, self._a = (np.ascontiguousarray(x) for x in self.peaks.T)
        self._indexed: Incidents | None = None  # the incidents that _bounds and _in_force describe

    def _index_incidents(self) -> None:
        """The set of incidents in force is constant between consecutive start/end times: it is cached per
        interval. Rebuilt whenever ``incidents`` is replaced."""
        inc = self._indexed = self.incidents
        self._bounds = sorted(set(inc.start.tolist()) | set(inc.end.tolist()))
        self._in_force: dict[int, tuple[np.ndarray, np.ndarray, bool] | None] = {}

    def factor(self, t: float) -> np.ndarray:
        """(Z,) slowdown >= 1 at time ``t``."""
        if not self.enabled:
            return np.ones(self.n_zones)
        f = self.profile(t)
        self.apply_incidents(f, t)
        return f

    def profile(self, t: float) -> np.ndarray:
        """(Z,) the time-of-day part of ``factor(t)`` (the same for every day of a scenario)."""
        c, w, a = self._c, self._w, self._a
        tod = float((a * np.exp(-0.5 * ((t - c) / w) ** 2)).sum()) if len(c) else 0.0
        return 1.0 + tod * self.zone_weight

    def apply_incidents(self, f: np.ndarray, t: float) -> None:
        """Multiply ``f`` (Z,), in place, by the incidents in force at ``t``: ``factor(t)`` is ``profile(t)`` so
        multiplied."""
        if self._indexed is not self.incidents:
            self._index_incidents()
        i = bisect_right(self._bounds, t)  # _bounds[i - 1] <= t < _bounds[i]
        if i not in self._in_force:
            inc = self.incidents
            on = ((inc.start <= t) & (t < inc.end)).nonzero()[0]
            zones = inc.zone[on]
            self._in_force[i] = (zones, inc.factor[on], len(set(zones.tolist())) == len(zones)) if on.size else None
        hit = self._in_force[i]
        if hit is not None:
            zones, fac, distinct = hit
            if distinct:  # one incident per zone: a plain product (what multiply.at computes then)
                f[zones] *= fac
            else:
                np.multiply.at(f, zones, fac)

    def changed_zones(self, t0: float, t1: float) -> np.ndarray:
        """The zones where an incident starts or ends in (t0, t1], sorted, distinct."""
        inc = self.incidents
        changed = ((inc.start > t0) & (inc.start <= t1)) | ((inc.end > t0) & (inc.end <= t1))
        return np.unique(inc.zone[changed])

    def incident_changes(self, t0: float, t1: float) -> bool:
        """True when an incident starts or ends in (t0, t1]."""
        if self._indexed is not self.incidents:
            self._index_incidents()
        return bisect_right(self._bounds, t0) != bisect_right(self._bounds, t1)  # a start or end time in (t0, t1]


def sample_incidents(
    rng: np.random.Generator,
    start: float,
    end: float,
    n_zones: int,
    per_hour: float,
    factor: tuple[float, float],
    minutes: tuple[float, float],
) -> Incidents:
    k = int(rng.poisson(per_hour * (end - start) / 3600.0))
    t = np.sort(rng.uniform(start, end, size=k))
    dur = rng.uniform(minutes[0], minutes[1], size=k) * 60.0
    return Incidents(
        start=t,
        end=t + dur,
        zone=rng.integers(0, n_zones, size=k).astype(np.int32),
        factor=rng.uniform(factor[0], factor[1], size=k),
    )


class TiledCity(City):
    """``n`` copies of one city side by side, for ``days.DaysSimulator``: node ``v`` of copy ``i`` is node
    ``i * base.n_nodes + v`` and zone ``z`` of copy ``i`` is zone ``i * base.n_zones + z``. Travel times and
    distances are the base city's (copies never reach each other: no entity of one day names a node of
    another), so each day's zones keep their own traffic factors, surge and counts in one array."""

    def __init__(self, base: City, n: int) -> None:
        self.base, self.copies = base, int(n)
        nn, nz_ = base.n_nodes, base.n_zones
        self._n = nn
        self.graph = base.graph
        self.node_xy = np.tile(base.node_xy, (n, 1))
        self.zone_xy = np.tile(base.zone_xy, (n, 1))
        self.zone_of = (base.zone_of[None, :] + nz_ * np.arange(n)[:, None]).reshape(-1).astype(base.zone_of.dtype)
        self.zone_node = (base.zone_node[None, :] + nn * np.arange(n)[:, None]).reshape(-1).astype(np.int32)
        nb = base.zone_neighbors
        shift = nz_ * np.arange(n)[:, None, None]
        self.zone_neighbors = np.where(nb[None] >= 0, nb[None] + shift, -1).reshape(-1, nb.shape[1]).astype(nb.dtype)
        self.zone_centrality = np.tile(base.zone_centrality, n)

    def travel_s(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.base.travel_s(np.asarray(a) % self._n, np.asarray(b) % self._n)

    def dist_m(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.base.dist_m(np.asarray(a) % self._n, np.asarray(b) % self._n)

    def travel_s_from(self, frm: np.ndarray) -> np.ndarray:
        return np.tile(self.base.travel_s_from(np.asarray(frm) % self._n), (1, self.copies))

    def travel_s_to(self, to: np.ndarray, frm: np.ndarray) -> np.ndarray:
        return self.base.travel_s_to(np.asarray(to) % self._n, np.asarray(frm) % self._n)
