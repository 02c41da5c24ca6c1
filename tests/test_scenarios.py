"""Scenario loading: built-in names, YAML files and bad input (always ``ScenarioError`` naming the field)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simtools import run_episode

from gigdispatch.agents import make_policy
from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.scenarios import ScenarioError, builtin_names, load_scenario


def _write(tmp_path: Path, text: str, name: str = "scenario.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------------------
# good input
# ------------------------------------------------------------------------------------------------
def test_builtin_names():
    names = builtin_names()
    assert "default" in names and "city-1000" in names


@pytest.mark.parametrize("name", ["default", "city-1000"])
def test_builtin_loads_as_written(name):
    """A built-in name loads its YAML file: the scenario has the file's values."""
    from gigdispatch.envs.scenarios import configs_dir

    raw = yaml.safe_load((configs_dir() / "scenarios" / f"{name}.yaml").read_text(encoding="utf-8"))
    sc = load_scenario(name)
    assert sc.name == raw["name"] == name
    assert sc.cfg.fleet.drivers == raw["fleet"]["drivers"]
    assert sc.cfg.demand.orders == raw["demand"]["orders"]
    nx, ny = raw["city"]["size"]
    assert sc.city.n_nodes == nx * ny
    assert sc.city.n_zones == raw["city"]["zones"][0] * raw["city"]["zones"][1]


def test_yaml_path_overrides_defaults(tmp_path):
    p = _write(
        tmp_path,
        "horizon: {start: '09:00', end: '10:30'}\nfleet: {drivers: 7}\ncity: {size: [5, 6], zones: [2, 2]}\n",
        name="tiny.yaml",
    )
    sc = load_scenario(p)
    assert sc.name == "tiny"  # no name field: the file stem
    assert sc.cfg.fleet.drivers == 7
    assert sc.cfg.horizon.start == 9 * 3600 and sc.cfg.horizon.end == 10.5 * 3600
    assert sc.city.n_nodes == 30
    # and it runs
    sim = run_episode(Simulator(sc), seed=1)
    assert sim.drivers.n == 7


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_yaml_is_refused_naming_the_file(tmp_path, text):
    """An empty file is most likely the wrong file: refused in one line that names it and says what to write."""
    p = _write(tmp_path, text, name="empty.yaml")
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    msg = str(ei.value)
    assert "\n" not in msg and str(p) in msg and "the file is empty" in msg and "'{}'" in msg, msg


def test_explicit_empty_mapping_is_all_defaults(tmp_path):
    sc = load_scenario(_write(tmp_path, "{}\n", name="defaults.yaml"))
    assert sc.name == "defaults" and sc.cfg.fleet.drivers == 100


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_unknown_scenario_name_lists_builtins():
    with pytest.raises(ScenarioError) as ei:
        load_scenario("no-such-scenario")
    msg = str(ei.value)
    assert "no-such-scenario" in msg
    for name in builtin_names():
        assert name in msg


def test_missing_yaml_file(tmp_path):
    with pytest.raises(ScenarioError, match="no such file"):
        load_scenario(tmp_path / "absent.yaml")


def test_folder_that_is_not_mdrp(tmp_path):
    with pytest.raises(ScenarioError, match="not an MDRP instance"):
        load_scenario(tmp_path)


@pytest.mark.parametrize(
    ("text", "must_name", "reason"),
    [
        ("fleet:\n  drivers: 10\n  drivrs: 5\n", "fleet.drivrs", "unknown field"),
        ("pricing:\n  payout:\n    bse: 3\n", "pricing.payout.bse", "unknown field"),
        ("colour: blue\n", "colour", "unknown field"),
        ("fleet:\n  drivers: many\n", "fleet.drivers", "integer"),
        ("fleet:\n  drivers: 10.5\n", "fleet.drivers", "integer"),
        ("fleet:\n  drivers: -5\n", "fleet.drivers", "greater than or equal to 1"),
        ("fleet:\n  drivers: 0\n", "fleet.drivers", "greater than or equal to 1"),
        ("fleet:\n  owned_share: 1.5\n", "fleet.owned_share", "less than or equal to 1"),
        ("horizon:\n  start: '25:99'\n", "horizon.start", "time of day"),
        ("horizon:\n  step_seconds: 0\n", "horizon.step_seconds", "greater than 0"),
        ("horizon:\n  start: '18:00'\n  end: '10:00'\n", "horizon", "end must be after start"),
        ("city:\n  kind: hex\n", "city.kind", "grid"),
        ("city:\n  size: [3, 3]\n  zones: [4, 4]\n", "city.zones", "cannot have more cells"),
        (
            "demand:\n  express: {minutes: 30, share: 0.5}\n",
            "demand",
            "shares (express, standard, same_day) must sum to 1",
        ),
        (
            "fleet:\n  vehicles:\n    bike: {share: 0.5, speed: 0.5, capacity_litres: 40, size_class: 0}\n",
            "fleet",
            "vehicles: shares must sum to 1",
        ),
        ("fleet:\n  max_route_stops: 7\n", "fleet", "max_route_stops must be even"),
        ("demand:\n  ready_minutes: [20, 5]\n", "demand.ready_minutes", "low <= high"),
        ("demand:\n  flash_sales:\n    - {start: '12:00', zone: 99}\n", "demand.flash_sales.0.zone", "not a zone"),
        ("fleet: [1, 2]\n", "fleet", "valid dictionary"),
        # size limits: what one simulator holds in memory
        ("demand:\n  orders: 1e12\n", "demand.orders", "less than or equal to 1000000"),
        ("demand:\n  orders: .inf\n", "demand.orders", "less than or equal to 1000000"),
        ("fleet:\n  drivers: 200001\n", "fleet.drivers", "less than or equal to 200000"),
        ("demand:\n  hotspots: 1000000000000\n", "demand.hotspots", "less than or equal to 6400"),
        ("traffic:\n  incidents_per_hour: 1e12\n", "traffic.incidents_per_hour", "less than or equal to 60"),
        ("horizon:\n  end: 1.0e+15\n", "horizon.end", "below 48:00"),
        ("horizon:\n  drain_minutes: 1e12\n", "horizon.drain_minutes", "less than or equal to 1440"),
        ("demand:\n  peaks:\n    - {center: 172800}\n", "demand.peaks.0.center", "below 48:00"),
        (
            "demand:\n  orders: 900000\n  flash_sales:\n    - {start: '12:00', minutes: 60, multiplier: 4}\n",
            "demand.flash_sales",
            "with demand.orders 900,000 the flash sales can add up to",
        ),
        (
            "demand:\n  flash_sales:\n    - {start: '12:00', multiplier: .inf}\n",
            "demand.flash_sales.0.multiplier",
            "finite",
        ),
    ],
)
def test_bad_field_names_the_field(tmp_path, text, must_name, reason):
    p = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    msg = str(ei.value)
    assert str(p) in msg
    # the field is named as a dotted path at the start of an error line (or inside the validator's text)
    assert re.search(rf"(^|\s){re.escape(must_name)}(:|\s)", msg, flags=re.MULTILINE), msg
    assert reason in msg, msg


@pytest.mark.parametrize(
    "path",
    [
        "fleet.shift_hours",
        "fleet.flex_session_hours",
        "demand.patience_minutes",
        "demand.volume_litres",
        "demand.value",
        "traffic.incident_factor",
        "traffic.incident_minutes",
        "fleet.acceptance.response_seconds",
    ],
)
def test_reversed_range_is_one_line_naming_the_field(tmp_path, path):
    """A (low, high) range with low > high is refused when the scenario loads (it used to pass and crash a
    reset with NumPy's ``high - low < 0``), in one line that names the field."""
    *sections, leaf = path.split(".")
    cfg: dict = {}
    d = cfg
    for k in sections:
        d = d.setdefault(k, {})
    d[leaf] = [2, 1]
    p = _write(tmp_path, yaml.safe_dump(cfg))
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    lines = str(ei.value).splitlines()
    assert lines[0].endswith("1 invalid field(s)")
    assert len(lines) == 2 and lines[1].startswith(f"  {path}: "), lines
    assert "low <= high" in lines[1] and "low 2 above high 1" in lines[1]
    d[leaf] = [1, 1]  # an empty range is a fixed value: fine
    load_scenario(_write(tmp_path, yaml.safe_dump(cfg)))


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("city:\n  layout_seed: -1\n", "city.layout_seed"),  # a count (a seed)
        ("demand:\n  hotspots: -2\n", "demand.hotspots"),  # a count
        ("horizon:\n  drain_minutes: -5\n", "horizon.drain_minutes"),  # a duration
        ("fleet:\n  pickup_service_minutes: -1\n", "fleet.pickup_service_minutes"),  # a duration
        ("fleet:\n  shift_hours: [-1, 4]\n", "fleet.shift_hours.0"),  # a duration range
    ],
)
def test_negative_count_or_duration_names_the_field(tmp_path, text, path):
    with pytest.raises(ScenarioError) as ei:
        load_scenario(_write(tmp_path, text))
    lines = str(ei.value).splitlines()
    assert len(lines) == 2 and lines[1].startswith(f"  {path}: Input should be greater than"), lines


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("fleet: [1, 2\n", r"not valid YAML at line \d+, column \d+"),
        ("fleet:\n\tdrivers: 5\n", r"not valid YAML at line 2"),
        ("- a\n- b\n", "the top level must be a mapping of fields, got list"),
        ("42\n", "the top level must be a mapping of fields, got int"),
        ("just a string\n", "the top level must be a mapping of fields, got str"),
    ],
)
def test_bad_yaml_document(tmp_path, text, reason):
    p = _write(tmp_path, text)
    with pytest.raises(ScenarioError, match=reason) as ei:
        load_scenario(p)
    assert str(p) in str(ei.value)


def test_non_utf8_yaml(tmp_path):
    p = tmp_path / "binary.yaml"
    p.write_bytes(b"\xff\xfe\x00fleet")
    with pytest.raises(ScenarioError, match="not a UTF-8 text file"):
        load_scenario(p)


def test_size_limits_hold_city_1000_and_the_limit_itself(tmp_path):
    """The limits sit well above the built-in city-1000, and a scenario at a limit loads (it is a bound, not a
    fence below it)."""
    from gigdispatch.envs.core.config import MAX_DRIVERS, MAX_ORDERS, max_expected_orders

    big = load_scenario("city-1000").cfg
    assert max_expected_orders(big) * 20 < MAX_ORDERS and big.fleet.drivers * 100 <= MAX_DRIVERS
    p = _write(tmp_path, f"demand: {{orders: {MAX_ORDERS}}}\nfleet: {{drivers: {MAX_DRIVERS}}}\n")
    cfg = load_scenario(p).cfg
    assert cfg.demand.orders == MAX_ORDERS and cfg.fleet.drivers == MAX_DRIVERS


def test_several_bad_fields_are_all_reported(tmp_path):
    p = _write(tmp_path, "fleet:\n  drivers: -1\n  owned_share: 2\nhorizon:\n  step_seconds: -60\n")
    with pytest.raises(ScenarioError) as ei:
        load_scenario(p)
    msg = str(ei.value)
    assert "3 invalid field(s)" in msg
    for field in ("fleet.drivers", "fleet.owned_share", "horizon.step_seconds"):
        assert field in msg


# ------------------------------------------------------------------------------------------------
# fuzz: any YAML either loads and runs, or raises ScenarioError -- never another exception
# ------------------------------------------------------------------------------------------------
def test_hypothesis_runs_derandomised_by_default():
    """tests/conftest.py loads the ``ci`` profile unless HYPOTHESIS_PROFILE names another: the fuzz below
    draws the same examples on every run, with no example database carried between runs."""
    import os

    if os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci":
        pytest.skip("another hypothesis profile was chosen")
    assert settings.default.derandomize is True
    assert settings.default.database is None


_VALUES = st.one_of(
    st.integers(-3, 40),
    st.floats(-1.0, 30.0, allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.lists(st.integers(0, 30), max_size=3),
    st.sampled_from(["10:00", "23:59", "47:00", "bike"]),
)
_PATHS = st.sampled_from(
    [
        ("horizon", "start"),
        ("horizon", "end"),
        ("horizon", "step_seconds"),
        ("horizon", "drain_minutes"),
        ("city", "size"),
        ("city", "spacing_m"),
        ("city", "zones"),
        ("city", "drop_edges"),
        ("city", "arterial_every"),
        ("demand", "orders"),
        ("demand", "hotspots"),
        ("demand", "ready_minutes"),
        ("demand", "patience_minutes"),
        ("demand", "volume_litres"),
        ("fleet", "drivers"),
        ("fleet", "owned_share"),
        ("fleet", "flex_share"),
        ("fleet", "shift_hours"),
        ("fleet", "max_route_stops"),
        ("fleet", "geofence_m"),
        ("fleet", "pickup_service_minutes"),
        ("traffic", "incidents_per_hour"),
        ("traffic", "incident_factor"),
        ("pricing", "enabled"),
        ("sla", "late_refund_share"),
        ("same_pickup_bundles",),
    ]
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(st.lists(st.tuples(_PATHS, _VALUES), max_size=4))
def test_fuzzed_yaml_loads_or_raises_scenario_error(tmp_path, items):
    cfg: dict = {
        "horizon": {"start": "10:00", "end": "10:30"},
        "demand": {"orders": 30},
        "fleet": {"drivers": 6},
        "city": {"size": [5, 5], "zones": [2, 2]},
    }
    for path, value in items:
        d = cfg
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = value
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    try:
        sc = load_scenario(p)
    except ScenarioError:
        return
    sim = Simulator(sc)
    run_episode(sim, seed=0, policy=make_policy("nearest"), max_steps=sim.n_steps + 1)
    assert sim.done
