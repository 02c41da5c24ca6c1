"""Find and load a scenario: a built-in name, a YAML file, or an MDRP instance folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from gigdispatch.envs.core.config import GridScenario
from gigdispatch.envs.core.scenario import Scenario
from gigdispatch.envs.scenarios.errors import ScenarioError, format_validation_error
from gigdispatch.envs.scenarios.family import family_member, split_member
from gigdispatch.envs.scenarios.mdrp import is_mdrp_folder, load_mdrp


def configs_dir() -> Path:
    """``$GIGDISPATCH_CONFIGS``, else the repository's ``configs/``, else the copy installed with the package."""
    env = os.environ.get("GIGDISPATCH_CONFIGS")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    repo = here.parents[2] / "configs"
    if repo.is_dir():
        return repo
    return here.parents[1] / "_configs"


def builtin_names() -> list[str]:
    d = configs_dir() / "scenarios"
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def parse_config(data: Any, source: str) -> GridScenario:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(f"scenario {source}: the top level must be a mapping of fields, got {type(data).__name__}")
    try:
        return GridScenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(format_validation_error(source, err)) from None


def load_yaml(path: Path) -> GridScenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"scenario {path}: not a UTF-8 text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ScenarioError(f"scenario {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:  # an empty file, or only comments: most likely the wrong file, so not the defaults in silence
        raise ScenarioError(
            f"scenario {path}: the file is empty; write the fields to change (e.g. 'demand: {{orders: 2000}}', "
            "see docs/scenarios.md), or '{}' for all the defaults"
        )
    cfg = parse_config(data, str(path))
    if "name" not in (data or {}):
        cfg = cfg.model_copy(update={"name": path.stem})
    return cfg


def load_scenario(spec: str | os.PathLike[str] | GridScenario) -> Scenario:
    """``spec``: a built-in name (``default``, ``city-1000``), a YAML path, an MDRP folder, a config, or
    ``NAME@F``: member ``F`` of the family of scenario ``NAME`` (``family.py``)."""
    if isinstance(spec, GridScenario):
        return Scenario.from_config(spec)
    s = str(spec)
    path = Path(s)
    if path.is_dir():
        if is_mdrp_folder(path):
            return load_mdrp(path)
        raise ScenarioError(
            f"scenario {s}: a folder, but not an MDRP instance "
            "(it needs orders.txt, couriers.txt, restaurants.txt, instance_parameters.txt)"
        )
    member = None if path.exists() else split_member(s)
    if member is not None:  # NAME@F: member F of the family of scenario NAME
        base = load_scenario(member[0])
        if not isinstance(base.cfg, GridScenario):
            raise ScenarioError(f"scenario {s}: {member[0]!r} is not a synthetic scenario, so it has no family")
        return Scenario.from_config(family_member(base.cfg, member[1]), source=s)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ScenarioError(f"scenario {s}: no such file")
        return Scenario.from_config(load_yaml(path), source=str(path))
    builtin = configs_dir() / "scenarios" / f"{s}.yaml"
    if builtin.is_file():
        return Scenario.from_config(load_yaml(builtin), source=str(builtin))
    names = ", ".join(builtin_names()) or "(none found)"
    raise ScenarioError(
        f"unknown scenario {s!r}: give a built-in name ({names}), a YAML file path, or an MDRP instance folder"
    )
