"""Policies by name (lazy: a policy's module is imported only when it is made)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from agents.base import Policy

# name -> "module:Class"; every class takes keyword arguments with defaults
POLICIES: dict[str, str] = {
    "random": "agents.heuristics:RandomPolicy",
    "nearest": "agents.nearest:NearestPolicy",
    "hungarian": "agents.heuristics:HungarianPolicy",
    "hungarian-eta": "agents.heuristics:HungarianEtaPolicy",
    "batching": "agents.heuristics:BatchingPolicy",
    "sla-priority": "agents.heuristics:SlaPriorityPolicy",
    "auction": "agents.heuristics:AuctionPolicy",
    "reposition": "agents.heuristics:DemandRepositionPolicy",
    "value-hungarian": "agents.value_hungarian:ValueHungarianPolicy",
    "oracle": "agents.oracle:OraclePolicy",
    "scored-match": "agents.scored:ScoredMatchPolicy",  # untrained: value-hungarian's weights with the auction lever
    "learned-reposition": "agents.reposition:CoverageRepositionPolicy",  # untrained: its default parameters
}


class UnknownPolicyError(ValueError):
    pass


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
    from agents.reposition import FORMAT as REPOSITION_FORMAT

    if fmt == REPOSITION_FORMAT:
        from agents.reposition import CoverageRepositionPolicy

        return CoverageRepositionPolicy.from_file(path)
    from agents.scored import ScoredMatchPolicy

    return ScoredMatchPolicy.from_file(path)


def make_policy(name: str, **kwargs: Any) -> Policy:
    """A policy by registry name, or from a checkpoint folder path (learned policies, later)."""
    spec = POLICIES.get(name)
    if spec is None:
        path = Path(name)
        if path.suffix == ".onnx" and path.is_file():
            from agents.onnx_policy import OnnxDispatchPolicy  # an exported policy (gigdispatch export)

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
            from agents.learned import LearnedDispatchPolicy  # a training run folder or a checkpoint file

            try:
                return LearnedDispatchPolicy(name, **kwargs)
            except ValueError as exc:
                raise UnknownPolicyError(str(exc)) from None
        raise UnknownPolicyError(
            f"unknown policy {name!r}: choose one of {', '.join(POLICIES)}, or give a training run folder, a checkpoint .zip or an exported .onnx"
        )
    module, cls = spec.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise UnknownPolicyError(f"policy {name!r} is not implemented yet ({module} is missing)") from None
        raise
    return getattr(mod, cls)(**kwargs)
