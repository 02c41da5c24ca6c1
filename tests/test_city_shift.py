"""Cities where repositioning is the lever: demand centres, home zones, idle behaviour, scenario families.

The hand-built cases use ``LINE5`` (see ``tests/test_handmade.py``): five nodes 300 m apart, one minute a
hop; 2 min of service at each stop, half on arrival and half on departure; orders placed in [t, t + 60) are
seen at the decision epoch t + 60, and an always-accept driver starts driving at once.
"""

from __future__ import annotations

import numpy as np
import pytest
from simtools import ScriptedPolicy, run_episode

from gigdispatch.agents import make_policy
from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.generate import centre_xy, sample_orders
from gigdispatch.envs.core.sim import Decision, Simulator
from gigdispatch.envs.core.types import PH_DRIVING, PH_IDLE, PH_OFFLINE
from gigdispatch.envs.scenarios.errors import ScenarioError
from gigdispatch.envs.scenarios.family import family_member
from gigdispatch.envs.scenarios.fixed import fixed_scenario
from gigdispatch.envs.scenarios.loader import load_scenario, parse_config

MIN = 60.0


# ------------------------------------------------------------------------------ a moving demand centre
def _moving_centre(line_nodes):
    """Demand moves from the west end (node 0) to the east end (node 4): one order each, 15 min apart."""
    orders = [
        {"t_place": 0.0, "pickup": 0, "dropoff": 1, "ready": 0.0},
        {"t_place": 15 * MIN, "pickup": 4, "dropoff": 3, "ready": 15 * MIN},
    ]
    return fixed_scenario(line_nodes, orders, [{"node": 0}], zone_grid=(5, 1))  # a zone per node


def test_driver_who_repositions_early_delivers_sooner(line_nodes):
    """Worked out by hand. Order 0 is seen at 1:00; the driver at node 0 picks up at 2:00, leaves at 3:00,
    reaches node 1 at 4:00, drops off at 5:00 and is idle at node 1 from 6:00. Order 1 (pickup node 4) is
    seen at 16:00.

    * The driver who waits at node 1 drives 3 hops: at node 4 at 19:00, pickup 20:00, leaves 21:00, at node 3
      at 22:00, delivered at **23:00**.
    * The driver repositioned at 7:00 towards the east zone (its centre is node 4) is there at 10:00 and
      waits; at 16:00 it picks up at 17:00, leaves 18:00, at node 3 at 19:00, delivered at **20:00**:
      3 minutes sooner, the 3 hops it drove ahead of the demand."""
    sc = _moving_centre(line_nodes)
    east = int(sc.city.zone_of[4])
    assert sc.city.zone_node[east] == 4
    waits = run_episode(Simulator(sc), policy=make_policy("nearest"))
    moves = run_episode(
        Simulator(sc),
        policy=ScriptedPolicy(
            {7 * MIN: Decision(reposition_driver=np.array([0]), reposition_zone=np.array([east]))},
            fallback=make_policy("nearest"),
        ),
    )
    assert waits.orders.t_delivered[0] == moves.orders.t_delivered[0] == 5 * MIN
    assert waits.orders.t_delivered[1] == 23 * MIN
    assert moves.orders.t_delivered[1] == 20 * MIN
    assert moves.orders.t_pickup[1] - moves.orders.t_assigned[1] == 1 * MIN  # no pickup leg at all
    assert waits.orders.t_pickup[1] - waits.orders.t_assigned[1] == 4 * MIN  # 3 hops + 1 min of service


# ------------------------------------------------------------------------------ idle behaviour
_LONG = {"start": 0.0, "end": 3600.0, "step_seconds": 60.0, "drain_minutes": 0.0}  # the day runs an hour


def _one_delivery(line_nodes, idle: dict, home_node: int = 0):
    """The driver lives at ``home_node``. Order 0 is dropped off at node 1 at 5:00 (as above): its idle clock
    starts then (the last stop served), and it stands idle at node 1 from 6:00."""
    orders = [{"t_place": 0.0, "pickup": 0, "dropoff": 1, "ready": 0.0}]
    return fixed_scenario(
        line_nodes, orders, [{"node": home_node}], config={"fleet": {"idle": idle}, "horizon": _LONG}, zone_grid=(5, 1)
    )


def _trace(sc, policy=None):
    """(t, node, phase) of driver 0 at the end of every step."""
    out: list[tuple[float, int, int]] = []
    run_episode(
        Simulator(sc),
        policy=policy,
        after_step=lambda s: out.append((s.t, int(s.drivers.node[0]), int(s.drivers.phase[0]))),
    )
    return out


def test_idle_driver_drifts_home_after_the_configured_minutes(line_nodes):
    """Idle from 5:00 with ``drift_home_minutes: 5``: at the end of the step to 10:00 it has waited 5 minutes
    and sets off home (node 0, one hop), where it is at 11:00."""
    trace = dict((t, (node, ph)) for t, node, ph in _trace(_one_delivery(line_nodes, {"drift_home_minutes": 5})))
    assert trace[9 * MIN] == (1, PH_IDLE)  # still waiting at node 1
    assert trace[10 * MIN] == (1, PH_DRIVING)
    assert trace[11 * MIN][0] == 0
    never = dict((t, n) for t, n, _ in _trace(_one_delivery(line_nodes, {})))
    assert never[30 * MIN] == 1  # without the field it waits where it dropped off


def test_idle_driver_logs_off_early(line_nodes):
    """``log_off_minutes: 10``: idle from 5:00, it logs off at 15:00 although its shift runs all day."""
    trace = _trace(_one_delivery(line_nodes, {"log_off_minutes": 10}))
    off = [t for t, _, ph in trace if ph == PH_OFFLINE]
    assert off and off[0] == 15 * MIN


def test_a_platform_move_restarts_the_clocks_it_is_configured_to(line_nodes):
    """Repositioned at 7:00 to the east zone (node 4, 3 hops away: there at 10:00), with
    ``drift_home_minutes: 5`` and ``log_off_minutes: 10``; idle since the drop-off at 5:00. Home is node 0,
    4 minutes from node 4 (a straight leg in this city). A driver logs off when it stands idle past its
    patience.

    * ``nothing``: its drift clock still runs from 5:00, so arriving at 10:00 it is due and heads home at
      once (home at 14:00); it logs off at 15:00, 10 minutes after 5:00.
    * ``drift``: the drift clock restarts at 7:00: it waits at node 4 until 12:00, then heads home (home at
      16:00); its patience ran out at 15:00, on the way, so it logs off on arrival at 16:00.
    * ``all``: both restart at 7:00: heads home at 12:00, home at 16:00, and logs off at 17:00."""
    for renews, heads_home, off_at in (("nothing", 10, 15), ("drift", 12, 16), ("all", 12, 17)):
        sc = _one_delivery(line_nodes, {"drift_home_minutes": 5, "log_off_minutes": 10, "reposition_renews": renews})
        east = int(sc.city.zone_of[4])
        pol = ScriptedPolicy(
            {7 * MIN: Decision(reposition_driver=np.array([0]), reposition_zone=np.array([east]))},
            fallback=make_policy("nearest"),
        )
        trace = _trace(sc, pol)
        at = {t: (node, ph) for t, node, ph in trace}
        assert at[heads_home * MIN] == (4, PH_DRIVING), (renews, at[heads_home * MIN])
        assert at[(heads_home + 3) * MIN][0] == 4 and at[(heads_home + 4) * MIN][0] == 0, renews
        if heads_home > 10:
            assert at[11 * MIN] == (4, PH_IDLE)
        off = [t for t, _, ph in trace if ph == PH_OFFLINE]
        assert off and off[0] == off_at * MIN, renews


def test_owned_drivers_wait_where_they_are(line_nodes):
    orders = [{"t_place": 0.0, "pickup": 0, "dropoff": 1, "ready": 0.0}]
    sc = fixed_scenario(
        line_nodes,
        orders,
        [{"node": 0, "owned": True}],
        config={"fleet": {"idle": {"drift_home_minutes": 1, "log_off_minutes": 2}}, "horizon": _LONG},
    )
    trace = _trace(sc)
    assert all(ph != PH_OFFLINE for t, _, ph in trace if t < 59 * MIN)
    assert trace[-1][1] == 1


# ------------------------------------------------------------------------------ demand centres
def _centres_cfg(**demand) -> GridScenario:
    return parse_config(
        {
            "city": {"size": [20, 20], "zones": [4, 4]},
            "demand": {
                "orders": 3000,
                "use_cases": {"b2c": 1.0},
                "centres": [
                    {"name": "west", "x": 0.1, "y": 0.5, "radius_m": 300, "peaks": [{"center": "11:00"}]},
                    {"name": "east", "x": 0.9, "y": 0.5, "radius_m": 300, "peaks": [{"center": "17:00"}]},
                ],
                **demand,
            },
        },
        "test",
    )


def test_demand_follows_the_centres_over_the_day():
    """Morning pickups cluster at the west centre, evening ones at the east centre."""
    cfg = _centres_cfg()
    sc = load_scenario(cfg)
    o = sample_orders(cfg, sc.city, np.random.default_rng(3))
    x = sc.city.node_xy[o["pickup"], 0]
    west_x, east_x = centre_xy(sc.city, cfg.demand)[:, 0]
    morning, evening = o["t_place"] < 12 * 3600, o["t_place"] > 16 * 3600
    assert np.abs(x[morning] - west_x).mean() < 400 < np.abs(x[morning] - east_x).mean()
    assert np.abs(x[evening] - east_x).mean() < 400 < np.abs(x[evening] - west_x).mean()
    # the placement profile is the centres' sum: two peaks, quiet around 14:00
    hours = np.histogram(o["t_place"] / 3600, bins=np.arange(10, 19))[0]
    assert hours[0] > 2 * hours[4] and hours[7] > 2 * hours[4]


def test_drivers_live_in_their_home_zones():
    cfg = parse_config({"fleet": {"drivers": 200, "home_zones": [0, 5]}}, "test")
    sim = Simulator(load_scenario(cfg))
    sim.reset(1)
    zones = sim.city.zone_of[sim.drivers.home]
    assert set(np.unique(zones)) == {0, 5}
    assert (sim.drivers.node == sim.drivers.home).all()  # logged on from home


def test_the_new_fields_are_off_by_default():
    """``default`` written with the new fields at their defaults plays the same day as ``default``."""
    import yaml

    from gigdispatch.envs.scenarios.loader import configs_dir

    data = yaml.safe_load((configs_dir() / "scenarios" / "default.yaml").read_text())
    data.setdefault("fleet", {}).update({"home_zones": [], "idle": {"drift_home_minutes": None}})
    data.setdefault("demand", {})["centres"] = []
    data.setdefault("pricing", {}).setdefault("payout", {})["pickup_paid"] = True
    a = Simulator(load_scenario("default")).run(make_policy("reposition"), seed=0)
    b = Simulator(load_scenario(parse_config(data, "x"))).run(make_policy("reposition"), seed=0)
    assert a == b


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"demand": {"centres": [{"x": 1.5, "peaks": [{"center": "12:00"}]}]}}, "demand.centres.0.x"),
        ({"demand": {"centres": [{"radius_m": 0, "peaks": [{"center": "12:00"}]}]}}, "demand.centres.0.radius_m"),
        ({"demand": {"centres": [{"peaks": []}]}}, "demand.centres.0"),
        ({"demand": {"centres": [{"weight": 0, "baseline": 1}]}}, "demand.centres:"),
        ({"demand": {"centres": [{"baseline": 1, "colour": "red"}]}}, "demand.centres.0.colour"),
        ({"fleet": {"home_zones": [99]}}, "fleet.home_zones.0"),
        ({"fleet": {"home_zones": [-1]}}, "fleet.home_zones.0"),
        ({"fleet": {"idle": {"drift_home_minutes": 0}}}, "fleet.idle.drift_home_minutes"),
        ({"fleet": {"idle": {"log_off_minutes": -5}}}, "fleet.idle.log_off_minutes"),
        ({"fleet": {"idle": {"reposition_renews": "sometimes"}}}, "fleet.idle.reposition_renews"),
        ({"fleet": {"idle": {"reposition_renews": True}}}, "fleet.idle.reposition_renews"),
        ({"family": {"time_shift_hours": 7}}, "family.time_shift_hours"),
        ({"family": {"centre_shift": 0.9}}, "family.centre_shift"),
        ({"pricing": {"payout": {"pickup_paid": "no idea"}}}, "pricing.payout.pickup_paid"),
    ],
)
def test_bad_values_get_one_line_naming_the_field(data, field):
    with pytest.raises(ScenarioError) as err:
        parse_config(data, "bad.yaml")
    msg = str(err.value)
    assert field in msg, msg
    assert "Traceback" not in msg


# ------------------------------------------------------------------------------ the family
def test_city_shift_members_are_distinct_but_alike():
    base = load_scenario("city-shift").cfg
    a, a2, b = family_member(base, 3), family_member(base, 3), family_member(base, 4)
    assert a == a2  # a family seed is one city
    assert a.name == "city-shift@3"
    assert a.city.layout_seed != b.city.layout_seed
    for m in (a, b):
        assert m.fleet == base.fleet and m.pricing == base.pricing and m.horizon == base.horizon
        assert [c.name for c in m.demand.centres] == [c.name for c in base.demand.centres]
        for c, c0 in zip(m.demand.centres, base.demand.centres, strict=True):
            assert abs(c.x - c0.x) <= base.family.centre_shift + 1e-12
            assert all(base.horizon.start <= p.center <= base.horizon.end for p in c.peaks)
    assert [c.x for c in a.demand.centres] != [c.x for c in b.demand.centres]
    sc = load_scenario("city-shift@3")
    assert sc.cfg == a and sc.name == "city-shift@3"


def test_member_of_a_scenario_without_family_is_one_clear_line():
    with pytest.raises(ScenarioError, match="has no family section"):
        load_scenario("default@2")


def test_city_shift_tests_repositioning_on_training_days():
    """The scenario's purpose, on two training days: idle drivers wait far from the moving demand, so
    demand-following repositioning shortens click-to-door against nearest on each day."""
    sc = load_scenario("city-shift")
    for seed in (1000, 1001):
        near = Simulator(sc).run(make_policy("nearest"), seed=seed)
        rep = Simulator(sc).run(make_policy("reposition"), seed=seed)
        assert rep["click_to_door_mean_min"] < near["click_to_door_mean_min"] - 0.3, seed
