"""Value-augmented Hungarian dispatch: the KDD Cup 2020 (DiDi) recipe, and the training of its value table.

The policy matches open orders to idle drivers with ``linear_sum_assignment`` on each order's top-K
candidates, like ``hungarian``, but maximises a weight in euros per pair::

    w(o, d) = p * [ fee - payout - E[late refund]                                  (immediate profit)
                    + gamma^(dt/1h) * V(drop-off zone, bucket(t_drop)) - V(zone of d, bucket(now)) ]
              - time_value * hungarian's time cost (ETA + lateness + decline delay - waiting time) / 3600

with ``p`` the driver's acceptance probability at the offered payout (``sim.accept_prob``; a declined
offer leaves the driver where it is), ``dt`` the estimated time until the drop-off, ``V`` a
spatio-temporal state-value table (zones x time-of-day buckets): the platform's expected discounted
profit still to come from a driver who is free in that zone at that time, and ``time_value`` the
euros per hour that turn ``hungarian``'s time cost (the "ETA penalty") into money.

**Learning V.** ``train_values`` runs the simulator on *training* seeds (>= 1000 by convention; the
evaluation seeds 0-19 are refused) under a behaviour policy (``hungarian`` with Gaussian noise on the
edge costs, drawn from the episode's ``policy`` stream) and records every driver's transitions:

* idle for one step: ``(zone, t) -> (zone', t + dt)`` with reward 0 (to a terminal state if it logged off);
* served an order: ``(zone at assignment, t_assigned) -> (drop-off zone, t_delivered)`` with the
  order's realised platform profit ``fee - payout - refund`` (euros; the tip passes through).

``V`` is the fixed point of batch TD(0) on these transitions: synchronous sweeps
``V(s) <- mean over transitions from s of [r + gamma^(dt/1h) V(s')]`` (``gamma`` is per hour), until
the largest change is below ``tol``; states never visited take their bucket's mean. Deterministic for
given seeds.

**Tuning.** gamma (0.7 per hour), the bucket size (30 min), ``time_value`` (24 EUR/h) and
``value_weight`` were chosen on training seeds only: tables trained on 1000-1009 (``default``)
and 1000-1004 / 1000-1009 (``city-1000``), policies compared on 1010-1029 (``default``) and 1010-1019
(``city-1000``). The evaluation seeds 0-19 were used once, for the final comparison. ``value_weight``
was 1 until the surge rule changed to ``requests``; re-tuned then on the same training seeds (a grid of
0.25-1 x 12-36 EUR/h against ``hungarian``): 0.5 gained +82.5 +- 41 EUR/day over ``hungarian`` on
``default`` (1 gained +48.7 +- 37) and +2,553 +- 1,095 on ``city-1000`` (1: +2,368 +- 1,482; 95 % half-widths).

**Files.** ``python -m gigdispatch.agents.value_hungarian --scenario default --seeds 1000-1009 --out
checkpoints/values/default.npz`` trains and saves a table (a few KB; the npz records the scenario,
seeds, bucket size, gamma, the shape and the command). The policy loads ``values_path`` if given, else
``<values dir>/<scenario name>.npz`` (``$GIGDISPATCH_VALUES``, else the repository's
``checkpoints/values/``). If there is no such file -- a new scenario, an MDRP instance -- it trains a
small table at ``reset`` on ``train_episodes`` training seeds (the slow path: a few simulated days
before the first step, cached per scenario for the rest of the process).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np

from gigdispatch.agents.base import Policy, escalation_levels
from gigdispatch.agents.heuristics import HungarianPolicy, match_min_cost, sorted_decision, trip_seconds
from gigdispatch.envs.core.atomic import atomic_write_bytes, check_out_file, ensure_out_dir
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.core.seeding import parse_seeds
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.core.types import ORDER_DELIVERED, PH_OFFLINE

EVAL_SEEDS = range(0, 20)  # never train or tune on these
DEFAULT_TRAIN_SEEDS = tuple(range(1000, 1010))
FORMAT_VERSION = 1


def values_dir() -> Path:
    """``$GIGDISPATCH_VALUES``, else the repository's ``checkpoints/values/``, else the copy in the wheel."""
    env = os.environ.get("GIGDISPATCH_VALUES")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1] / "checkpoints" / "values"
    if repo.is_dir():
        return repo
    return Path(__file__).resolve().parent / "_values"  # the copy installed with the package (wheel)


def values_file_name(scenario_name: str) -> str:
    """The table's file name for a scenario name (characters other than letters, digits, ``-_.`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", scenario_name) + ".npz"


def n_buckets(sim_or_scenario: Simulator | Scenario, bucket_s: float) -> int:
    """Number of time buckets covering the episode, from ``horizon.start`` to the end of the drain."""
    h = sim_or_scenario.cfg.horizon
    return max(1, int(np.ceil((h.end + h.drain_minutes * 60.0 - h.start) / bucket_s)))


def bucket_of(t: np.ndarray | float, t0: float, bucket_s: float, n_b: int) -> np.ndarray:
    """Time bucket index of time(s) ``t`` (clipped to the table)."""
    return np.clip(((np.asarray(t, dtype=np.float64) - t0) // bucket_s).astype(np.int64), 0, n_b - 1)


class ExploringHungarian(HungarianPolicy):
    """The behaviour policy for training: ``hungarian`` with N(0, ``noise_s``) seconds added to each pair's cost.

    The noise comes from the ``rng`` given to ``reset`` (the episode's ``policy`` stream).
    """

    def __init__(self, noise_s: float = 120.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.noise_s = float(noise_s)
        self.rng: np.random.Generator | None = None

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.rng = rng

    def pair_cost(self, sim: Simulator, orders: np.ndarray, ids: np.ndarray, eta: np.ndarray) -> np.ndarray:
        cost = super().pair_cost(sim, orders, ids, eta)
        if self.rng is None:
            raise RuntimeError(
                "exploring hungarian: call reset(sim, rng) before act(sim); its noise comes from that rng"
            )
        if self.noise_s > 0:
            cost = cost + self.noise_s * self.rng.standard_normal(cost.shape)
        return cost


def _check_seeds(seeds) -> list[int]:
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError):
        raise ValueError(f"seeds: expected integers, got {seeds!r}") from None
    if not out:
        raise ValueError("seeds: at least one training seed is needed")
    bad = sorted({s for s in out if s in EVAL_SEEDS})
    if bad:
        raise ValueError(f"seeds: {bad} are evaluation seeds (0-19); train on other seeds (e.g. 1000-1009)")
    return out


def collect_transitions(
    scenario: Scenario, seeds, bucket_s: float, behaviour: Policy | None = None
) -> dict[str, np.ndarray]:
    """Run ``behaviour`` (default ``ExploringHungarian()``) on each seed and return the drivers' transitions.

    Returns arrays ``s``, ``s2`` (state = zone * B + bucket; ``s2 == Z * B`` is terminal), ``r`` (euros),
    ``dt`` (seconds) and ``w`` (how many identical transitions each row stands for).
    """
    seeds = _check_seeds(seeds)
    sim = Simulator(scenario)
    city = scenario.city
    Z, B = city.n_zones, n_buckets(scenario, bucket_s)
    t0 = scenario.cfg.horizon.start
    term = Z * B
    policy = behaviour if behaviour is not None else ExploringHungarian()
    parts: dict[str, list[np.ndarray]] = {"s": [], "s2": [], "r": [], "dt": [], "w": []}
    for seed in seeds:
        sim.reset(seed)
        policy.reset(sim, sim.rng["policy"])
        dr, od = sim.drivers, sim.orders
        idle_keys: list[np.ndarray] = []
        a_order: list[np.ndarray] = []
        a_state: list[np.ndarray] = []
        while not sim.done:
            t = sim.t
            idle = sim.eligible(idle_only=True).nonzero()[0]
            z_before = sim.driver_zone(heading=True)
            sim.step(policy.act(sim))
            sl = sim.active_orders()
            new = sl.start + (od.t_assigned[sl] == t).nonzero()[0]
            if new.size:
                a_order.append(new)
                a_state.append(z_before[od.driver[new]] * B + bucket_of(t, t0, bucket_s, B))
            # drivers idle at t that were neither given an order nor logged off: one idle step
            still = idle[(dr.route_len[idle] == 0) & (dr.offer_order[idle] < 0)]
            off = dr.phase[still] == PH_OFFLINE
            s_now = z_before[still] * B + bucket_of(t, t0, bucket_s, B)
            z_after = sim.driver_zone(still, heading=True)
            s_next = np.where(off, term, z_after * B + bucket_of(sim.t, t0, bucket_s, B))
            idle_keys.append(s_now * (term + 1) + s_next)
        # idle steps, aggregated
        keys, counts = np.unique(np.concatenate(idle_keys) if idle_keys else np.zeros(0, np.int64), return_counts=True)
        parts["s"].append(keys // (term + 1))
        parts["s2"].append(keys % (term + 1))
        parts["r"].append(np.zeros(len(keys)))
        parts["dt"].append(np.full(len(keys), sim.dt))
        parts["w"].append(counts.astype(np.float64))
        # served orders: the last assignment of each delivered order
        if a_order:
            o = np.concatenate(a_order)
            s = np.concatenate(a_state)
            last = np.zeros(len(o), bool)
            last[len(o) - 1 - np.unique(o[::-1], return_index=True)[1]] = True
            ok = last & (od.status[o] == ORDER_DELIVERED)
            o, s = o[ok], s[ok]
            s2 = city.zone_of[od.dropoff[o]] * B + bucket_of(od.t_delivered[o], t0, bucket_s, B)
            profit = (od.fee[o] - od.payout[o] - od.refund[o]) / 100.0
            parts["s"].append(s)
            parts["s2"].append(s2)
            parts["r"].append(profit.astype(np.float64))
            parts["dt"].append(od.t_delivered[o] - od.t_assigned[o])
            parts["w"].append(np.ones(len(o)))
    return {k: np.concatenate(v) for k, v in parts.items()}


def solve_td0(
    tr: dict[str, np.ndarray], n_states: int, gamma: float, tol: float = 1e-6, max_sweeps: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed point of batch TD(0) over transitions ``tr`` (see ``collect_transitions``).

    Synchronous sweeps ``V(s) <- sum_i w_i [r_i + gamma^(dt_i / 3600) V(s2_i)] / sum_i w_i`` over the
    transitions leaving ``s`` (the terminal state ``n_states`` is worth 0) until the largest change is
    below ``tol``. Returns ``(V, visits)``: values (n_states,) and the weight of transitions from each state.
    """
    from scipy.sparse import csr_matrix

    s, s2, r, dt, w = tr["s"], tr["s2"], tr["r"], tr["dt"], tr["w"]
    visits = np.bincount(s, weights=w, minlength=n_states)
    seen = visits > 0
    norm = np.where(seen, visits, 1.0)
    disc = gamma ** (np.maximum(dt, 0.0) / 3600.0)
    P = csr_matrix((w * disc / norm[s], (s, s2)), shape=(n_states, n_states + 1))
    R = np.bincount(s, weights=w * r, minlength=n_states) / norm
    V = np.zeros(n_states + 1)
    for _ in range(max_sweeps):
        nv = R + P @ V
        delta = float(np.abs(nv - V[:n_states]).max()) if n_states else 0.0
        V[:n_states] = nv
        if delta < tol:
            break
    return V[:n_states], visits


def train_values(
    scenario: Scenario | str,
    seeds=DEFAULT_TRAIN_SEEDS,
    bucket_minutes: float = 30.0,
    gamma: float = 0.7,
    behaviour: Policy | None = None,
    return_meta: bool = False,
):
    """Learn the (zones, buckets) state-value table of ``scenario`` from runs on training ``seeds``.

    ``scenario``: a ``Scenario`` or anything ``envs.load_scenario`` accepts. ``gamma`` is the discount
    per hour. Seeds 0-19 (evaluation) raise ``ValueError``. Returns the float32 table (Z, B), or
    ``(table, meta)`` with ``return_meta``.
    """
    if isinstance(scenario, str | os.PathLike):
        from gigdispatch.envs.scenarios import load_scenario

        scenario = load_scenario(scenario)
    if not bucket_minutes > 0:
        raise ValueError(f"bucket_minutes: must be positive, got {bucket_minutes!r}")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma: must be in (0, 1], got {gamma!r}")
    seeds = _check_seeds(seeds)
    bucket_s = float(bucket_minutes) * 60.0
    Z, B = scenario.city.n_zones, n_buckets(scenario, bucket_s)
    tr = collect_transitions(scenario, seeds, bucket_s, behaviour)
    V, visits = solve_td0(tr, Z * B, gamma if gamma < 1.0 else 1.0 - 1e-9)
    V, visits = V.reshape(Z, B), visits.reshape(Z, B)
    seen = visits > 0
    col_mean = np.where(seen.any(axis=0), (V * seen).sum(axis=0) / np.maximum(seen.sum(axis=0), 1), 0.0)
    V = np.where(seen, V, col_mean[None, :]).astype(np.float32)
    meta = {
        "scenario": scenario.name,
        "seeds": np.asarray(seeds, np.int64),
        "bucket_s": bucket_s,
        "gamma": float(gamma),
        "t0": float(scenario.cfg.horizon.start),
        "transitions": int(tr["w"].sum()),
    }
    return (V, meta) if return_meta else V


def save_values(path: str | os.PathLike, V: np.ndarray, meta: dict, command: str = "") -> Path:
    """Write a value table and its provenance to an ``.npz`` file (atomically, with the mode the umask gives;
    its folder must exist)."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        V=np.asarray(V, np.float32),
        scenario=np.str_(meta["scenario"]),
        seeds=np.asarray(meta["seeds"], np.int64),
        bucket_s=np.float64(meta["bucket_s"]),
        gamma=np.float64(meta["gamma"]),
        t0=np.float64(meta["t0"]),
        transitions=np.int64(meta.get("transitions", 0)),
        command=np.str_(command),
        version=np.int64(FORMAT_VERSION),
    )
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_values(path: str | os.PathLike) -> dict:
    """Read a table written by ``save_values``; a missing or malformed file raises ``ValueError``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"values_path: no such file {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as exc:
        raise ValueError(f"values_path: {str(path)!r} is not a value table ({type(exc).__name__}: {exc})") from None
    need = ("V", "scenario", "bucket_s", "gamma", "t0")
    missing = [k for k in need if k not in out]
    if missing:
        raise ValueError(f"values_path: {str(path)!r} lacks field(s) {', '.join(missing)}")
    V = np.asarray(out["V"], np.float64)
    if V.ndim != 2 or not np.isfinite(V).all():
        raise ValueError(f"values_path: {str(path)!r}: V must be a finite 2-D table, got shape {V.shape}")
    return {
        "V": V,
        "scenario": str(out["scenario"]),
        "bucket_s": float(out["bucket_s"]),
        "gamma": float(out["gamma"]),
        "t0": float(out["t0"]),
        "seeds": out.get("seeds"),
        "command": str(out.get("command", "")),
    }


_TRAINED: dict[tuple[str, str], dict] = {}  # slow-path tables trained in this process, by (scenario name, source)


class ValueHungarianPolicy(Policy):
    """Hungarian matching with value-augmented edge weights (see the module docstring for the weight).

    Per epoch the orders, candidates and time costs are ``hungarian``'s (``HungarianPolicy`` with the
    same ``k``, ``max_orders``, ``window_factor``, ``slack_weight``, ``age_weight``, ``decline_cost_s``):
    the oldest ``min(max_orders, 2 x idle drivers + 16)`` open orders, their top-``k`` idle candidates,
    and a time cost in seconds per pair (pickup ETA + lateness + expected decline delay - waiting
    time), here converted to euros at ``time_value`` euros per hour. One ``linear_sum_assignment`` then
    serves as many orders as the candidate graph allows and, among those matchings, maximises the total
    weight. Offers at ``agents.base.escalation_levels``. With ``value_weight = 0`` the weight is the
    expected immediate profit minus the time cost; with ``value_weight = 0`` and ``profit_weight = 0`` the
    policy matches exactly like ``hungarian``.

    ``values_path``: a table from ``save_values``; default ``<values dir>/<scenario name>.npz``, or a
    table trained at ``reset`` on ``train_episodes`` training seeds when that file does not exist.
    """

    name = "value-hungarian"

    def __init__(
        self,
        values_path: str | os.PathLike | None = None,
        k: int = 8,
        max_orders: int = 200,
        window_factor: float = 2.0,
        slack_weight: float = 1.0,
        age_weight: float = 1.0,
        decline_cost_s: float = 300.0,
        time_value: float = 24.0,
        profit_weight: float = 1.0,
        value_weight: float = 0.5,
        train_episodes: int = 3,
    ) -> None:
        if train_episodes < 1:
            raise ValueError(f"train_episodes: must be >= 1, got {train_episodes!r}")
        if time_value < 0:
            raise ValueError(f"time_value: must be >= 0 (euros per hour), got {time_value!r}")
        self.values_path = None if values_path is None else Path(values_path)
        if self.values_path is not None and not self.values_path.is_file():
            raise ValueError(f"values_path: no such file {str(self.values_path)!r}")
        self.base = HungarianPolicy(
            k=k,
            max_orders=max_orders,
            window_factor=window_factor,
            slack_weight=slack_weight,
            age_weight=age_weight,
            decline_cost_s=decline_cost_s,
        )
        self.time_value, self.profit_weight, self.value_weight = (
            float(time_value),
            float(profit_weight),
            float(value_weight),
        )
        self.train_episodes = int(train_episodes)
        self.table: dict | None = None
        self.source = ""

    # ---------------------------------------------------------------------------------- the table
    def _table_for(self, sim: Simulator) -> dict:
        if self.values_path is not None:
            tab = load_values(self.values_path)
            self.source = str(self.values_path)
        else:
            path = values_dir() / values_file_name(sim.scenario.name)
            if path.is_file():
                tab = load_values(path)
                self.source = str(path)
            else:
                key = (sim.scenario.name, sim.scenario.source)
                if key not in _TRAINED:
                    seeds = tuple(range(1000, 1000 + self.train_episodes))
                    V, meta = train_values(sim.scenario, seeds, return_meta=True)
                    _TRAINED[key] = {**meta, "V": V.astype(np.float64)}
                tab = _TRAINED[key]
                self.source = f"trained at reset on seeds {tab['seeds'].tolist()}"
        Z, B = sim.city.n_zones, n_buckets(sim, tab["bucket_s"])
        if tab["V"].shape != (Z, B):
            raise ValueError(
                f"values_path: the table {self.source} has shape {tab['V'].shape}, but scenario {sim.scenario.name!r} "
                f"needs (zones, buckets) = {(Z, B)} at {tab['bucket_s'] / 60:g}-minute buckets"
            )
        return tab

    def reset(self, sim: Simulator, rng: np.random.Generator) -> None:
        self.table = self._table_for(sim)

    def value(self, sim: Simulator, zones: np.ndarray, t: np.ndarray | float) -> np.ndarray:
        """V(zone, bucket of t) from the table (times past its last bucket read the last bucket, worth ~0)."""
        tab = self.table
        assert tab is not None  # set by reset or act, which run before any value is read
        V = tab["V"]
        b = bucket_of(t, tab["t0"], tab["bucket_s"], V.shape[1])
        return V[zones, b]

    # --------------------------------------------------------------------------------- the weights
    def pair_weight(self, sim: Simulator, orders: np.ndarray, ids: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """(n, k) weight in euros of each candidate pair (the module docstring's formula)."""
        od, city = sim.orders, sim.city
        w = -self.time_value / 3600.0 * self.base.pair_cost(sim, orders, ids, eta)
        if not (self.profit_weight or self.value_weight):
            return w
        d = np.maximum(ids, 0)
        o = np.broadcast_to(orders[:, None], ids.shape)
        lv = np.broadcast_to(escalation_levels(sim, orders)[:, None], ids.shape)
        pay = sim.payout_cents(o, d, lv)
        p = sim.accept_prob(o, d, pay)
        e = np.where(np.isfinite(eta), eta, 0.0)
        t_pick = np.maximum(sim.t + e + sim.pickup_svc / 2.0, od.t_ready[o])
        t_drop = t_pick + sim.pickup_svc / 2.0 + trip_seconds(sim, o, d) + sim.drop_svc / 2.0
        refund = np.where(t_drop > od.deadline[o], np.round(od.fee[o] * sim.cfg.sla.late_refund_share), 0.0)
        gain = self.profit_weight * (od.fee[o] - pay - refund) / 100.0
        if self.value_weight and self.table is not None:
            g = self.table["gamma"] ** ((t_drop - sim.t) / 3600.0)
            here = sim.driver_zone(d, heading=True)
            gain = gain + self.value_weight * (
                g * self.value(sim, city.zone_of[od.dropoff[o]], t_drop) - self.value(sim, here, sim.t)
            )
        return w + p * gain

    def act(self, sim: Simulator) -> Decision:
        if self.table is None:
            self.table = self._table_for(sim)
        orders = sim.open_orders()
        idle = sim.eligible(idle_only=True)
        free = int(idle.sum())
        if orders.size == 0 or free == 0:
            return Decision()
        window = self.base.window(sim, orders, free)
        ids, eta = sim.candidates(window, self.base.k, among=idle)
        ids = sim.drop_last_decliners(window, ids)
        w = self.pair_weight(sim, window, ids, eta)
        rows, d = match_min_cost(ids, np.where(ids >= 0, -w, np.inf))
        o = window[rows]
        return sorted_decision(o, d, escalation_levels(sim, o))


# ---------------------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m gigdispatch.agents.value_hungarian",
        description="Train the spatio-temporal value table of value-hungarian by TD(0) on training seeds "
        "and save it as .npz.",
    )
    ap.add_argument("--scenario", required=True, help="built-in name (default, city-1000), YAML path or MDRP folder")
    ap.add_argument(
        "--seeds", default="1000-1009", help="training seeds, e.g. 1000-1009 (0-19 are evaluation seeds and refused)"
    )
    ap.add_argument(
        "--out",
        default=None,
        help="output .npz, in an existing folder (default: checkpoints/values/<scenario name>.npz)",
    )
    ap.add_argument(
        "--bucket-minutes", type=float, default=30.0, help="time-of-day bucket size in minutes (default 30)"
    )
    ap.add_argument("--gamma", type=float, default=0.7, help="discount per hour (default 0.7)")
    ap.add_argument(
        "--noise-s",
        type=float,
        default=120.0,
        help="exploration: sd of the noise on the behaviour policy's costs, seconds",
    )
    args = ap.parse_args(argv)
    try:
        from gigdispatch.envs.scenarios import ScenarioError, load_scenario

        seeds = parse_seeds(args.seeds)
        try:
            scenario = load_scenario(args.scenario)
        except ScenarioError as exc:
            raise ValueError(str(exc)) from None
        if args.noise_s < 0:
            raise ValueError(f"--noise-s: must be >= 0, got {args.noise_s:g}")
        out = Path(args.out) if args.out else values_dir() / values_file_name(scenario.name)
        if out.suffix != ".npz":
            raise ValueError(f"--out: must end in .npz, got {str(out)!r}")
        if args.out:  # a file: its folder must exist
            check_out_file(out, "--out")
        else:  # the values folder ($GIGDISPATCH_VALUES or the shipped one)
            ensure_out_dir(out.parent, "the values folder")
        V, meta = train_values(
            scenario,
            seeds,
            args.bucket_minutes,
            args.gamma,
            behaviour=ExploringHungarian(noise_s=args.noise_s),
            return_meta=True,
        )
        cmd = "python -m gigdispatch.agents.value_hungarian " + " ".join(
            shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
        )
        save_values(out, V, meta, command=cmd)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {out}: V {V.shape[0]} zones x {V.shape[1]} buckets of {meta['bucket_s'] / 60:g} min, "
        f"gamma {meta['gamma']:g}/h, "
        f"{meta['transitions']} transitions from seeds {args.seeds}; V range [{V.min():.2f}, {V.max():.2f}] EUR"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
