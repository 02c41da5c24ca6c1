"""Policies by name (lazy: a policy's module is imported only when it is made)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from gigdispatch.agents.base import Policy
from gigdispatch.envs.core.errors import InputError

# name -> "module:Class"; every class takes keyword arguments with defaults
POLICIES: dict[str, str] = {
    "random": "gigdispatch.agents.heuristics:RandomPolicy",
    "nearest": "gigdispatch.agents.nearest:NearestPolicy",
    "hungarian": "gigdispatch.agents.heuristics:HungarianPolicy",
    "hungarian-eta": "gigdispatch.agents.heuristics:HungarianEtaPolicy",
    "batching": "gigdispatch.agents.heuristics:BatchingPolicy",
    "sla-priority": "gigdispatch.agents.heuristics:SlaPriorityPolicy",
    "auction": "gigdispatch.agents.heuristics:AuctionPolicy",
    "reposition": "gigdispatch.agents.heuristics:DemandRepositionPolicy",
    "value-hungarian": "gigdispatch.agents.value_hungarian:ValueHungarianPolicy",
    "oracle": "gigdispatch.agents.oracle:OraclePolicy",
    "mdrp-rolling": "gigdispatch.agents.mdrp_rolling:RollingHorizonPolicy",  # Reyes et al.'s rolling horizon
    # untrained: value-hungarian's weights with the auction lever
    "scored-match": "gigdispatch.agents.scored:ScoredMatchPolicy",
    "learned-reposition": "gigdispatch.agents.reposition:CoverageRepositionPolicy",  # untrained: its default parameters
}


class UnknownPolicyError(InputError):
    """A policy name, folder or file that names no policy that can be made; the message says which and why."""


def policy_names() -> list[str]:
    return list(POLICIES)


def _from_policy_json(path: Path) -> Policy:
    """The policy a ``policy.json`` (or a folder holding one) describes, by its ``format``."""
    import json

    f = path / "policy.json" if path.is_dir() else path
    try:
        fmt = json.loads(f.read_text()).get("format")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        fmt = None  # the loader below reports what is wrong with the file
    from gigdispatch.agents.mdrp_rolling import FORMAT as MDRP_FORMAT
    from gigdispatch.agents.reposition import FORMAT as REPOSITION_FORMAT

    if fmt == MDRP_FORMAT:
        from gigdispatch.agents.mdrp_rolling import RollingHorizonPolicy

        return RollingHorizonPolicy.from_file(path)
    if fmt == REPOSITION_FORMAT:
        from gigdispatch.agents.reposition import CoverageRepositionPolicy

        return CoverageRepositionPolicy.from_file(path)
    from gigdispatch.agents.scored import ScoredMatchPolicy

    return ScoredMatchPolicy.from_file(path)


def make_policy(name: str, **kwargs: Any) -> Policy:
    """A policy by registry name, or from a path: an exported ``.onnx``, a ``policy.json`` (or a folder holding one),
    a training run folder or a checkpoint ``.zip``."""
    spec = POLICIES.get(name)
    if spec is None:
        path = Path(name)
        if path.suffix == ".onnx" and path.is_file():
            from gigdispatch.agents.onnx_policy import OnnxDispatchPolicy  # an exported policy (gigdispatch export)

            try:
                return OnnxDispatchPolicy(name, **kwargs)
            except ValueError as exc:
                raise UnknownPolicyError(str(exc)) from None
        if (path.is_dir() and (path / "policy.json").is_file()) or (path.name == "policy.json" and path.is_file()):
            try:
                return _from_policy_json(path)  # a scored-match or repositioning policy (algo: cem)
            except ValueError as exc:
                raise UnknownPolicyError(str(exc)) from None
        if path.is_dir() or (path.suffix == ".zip" and path.is_file()):
            # a run folder of gigdispatch train, or a .zip: a dispatch policy, or with env: fleet a driver policy
            from gigdispatch.agents.learned import LearnedDispatchPolicy, run_env

            try:
                if run_env(name) == "fleet":
                    from gigdispatch.agents.fleet_learned import LearnedFleetPolicy

                    return LearnedFleetPolicy(name, make_platform=make_policy, **kwargs)
                return LearnedDispatchPolicy(name, **kwargs)
            except ValueError as exc:
                raise UnknownPolicyError(str(exc)) from None
        raise UnknownPolicyError(
            f"unknown policy {name!r}: choose one of {', '.join(POLICIES)}, "
            "or give a training run folder, a checkpoint .zip or an exported .onnx"
        )
    module, cls = spec.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise UnknownPolicyError(f"policy {name!r} is not available ({module} is missing)") from None
        raise
    return getattr(mod, cls)(**kwargs)
