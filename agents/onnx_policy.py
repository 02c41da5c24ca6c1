"""A Dispatch-v0 / v1 / v2 policy exported by ``gigdispatch export``, run with onnxruntime: no torch, no SB3.

``OnnxDispatchPolicy("dispatch.onnx")`` reads the sidecar ``dispatch.onnx.json`` (the run's ``env`` and its
arguments ``max_orders``, ``k``, ``reward_scale``, ``idle_only``, and ``bundle_k`` for Dispatch-v2, the input
shapes, the action's ``nvec`` and, for a set-policy run with ``decode.json``, ``decode``) and creates ONE
onnxruntime session (``CPUExecutionProvider``, ``threads`` intra-op threads) in ``__init__``. It acts in
the simulator exactly as ``agents.learned.LearnedDispatchPolicy`` does,
with the ONNX graph in place of the torch model: it wraps the simulator in a ``DispatchEnv`` built with
the run's arguments and, at each step, calls ``prepare`` (no order with a candidate: empty ``Decision``),
``observe``, ``action_masks`` and ``decode`` (masked-out choices hold; a driver chosen by two orders goes
to the older one). The graph holds SB3's preprocessing, the masking (MaskablePPO runs) and the argmax, so
its action is the model's deterministic action; ``gigdispatch export`` verifies that on recorded states.
With a sidecar ``decode`` (``{"decode": "match", "hold_bias": b}``), the graph's ``row_log_probs`` output is
decoded jointly by ``agents.set_decode.match_env_rows``, the code ``LearnedDispatchPolicy`` runs on the torch
policy's rows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gigdispatch.agents.learned import DISPATCH_ENVS, EnvDispatchPolicy, dispatch_env_class
from gigdispatch.agents.set_decode import match_env_rows

OBS_KEYS = ("orders", "candidates", "globals")
ROW_LOG_PROBS = "row_log_probs"  # the set policy's second output (gigdispatch export)


class OnnxDispatchPolicy(EnvDispatchPolicy):
    """An exported Dispatch-v0 / v1 policy (``FILE.onnx`` + ``FILE.onnx.json``) acting through onnxruntime."""

    name: ClassVar[str] = "onnx"

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        p = Path(path)
        side = p.with_name(p.name + ".json")
        if p.suffix != ".onnx" or not p.is_file():
            raise ValueError(f"policy {str(path)!r}: no such .onnx file")
        if not side.is_file():
            raise ValueError(
                f"policy {str(path)!r}: its sidecar {side.name!r} is missing (written by gigdispatch export)"
            )
        try:
            self.meta = json.loads(side.read_text(encoding="utf-8"))
            d = self.meta["dispatch"]
            self.max_orders, self.k = int(d["max_orders"]), int(d["k"])
            self.reward_scale, self.idle_only = float(d["reward_scale"]), bool(d["idle_only"])
            self.env_kwargs: dict[str, Any] = {
                "max_orders": self.max_orders,
                "k": self.k,
                "reward_scale": self.reward_scale,
                "idle_only": self.idle_only,
            }
            self.nvec = [int(n) for n in self.meta["action_nvec"]]
            self.env_name = str(self.meta.get("env", "dispatch"))  # files exported before v1 have no "env"
            if self.env_name not in DISPATCH_ENVS:
                raise ValueError(f"env: {self.env_name!r} is not one of {', '.join(DISPATCH_ENVS)}")
            if self.env_name == "dispatch-v2":
                self.env_kwargs["bundle_k"] = int(d["bundle_k"])
            self.hold_bias = _read_decode(self.meta.get("decode"))
            self.shapes = {key: tuple(int(s) for s in self.meta["inputs"][key]["shape"][1:]) for key in OBS_KEYS}
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"policy {str(path)!r}: the sidecar {side.name!r} is not valid ({type(exc).__name__}: {exc})"
            ) from None
        try:
            import onnxruntime as ort
        except ModuleNotFoundError:
            raise ValueError(
                f"policy {str(path)!r}: onnxruntime is not installed (pip install 'gigdispatch[serve]')"
            ) from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(p), sess_options=so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise ValueError(f"policy {str(path)!r}: not a loadable ONNX model ({type(exc).__name__})") from None
        names = [i.name for i in self.session.get_inputs()]
        if names != [*OBS_KEYS, "action_mask"]:
            raise ValueError(
                f"policy {str(path)!r}: the graph's inputs {names} are not (orders, candidates, globals, action_mask)"
            )
        if self.hold_bias is not None and ROW_LOG_PROBS not in [o.name for o in self.session.get_outputs()]:
            raise ValueError(
                f"policy {str(path)!r}: the sidecar asks for joint decoding, but the graph has no {ROW_LOG_PROBS!r}"
                " output"
            )
        self.path = p

    def _make_env(self, scenario: Any) -> Any:
        env = dispatch_env_class(self.env_name)(scenario, **self.env_kwargs)
        if any(env.observation_space[key].shape != self.shapes[key] for key in OBS_KEYS):
            raise ValueError(f"policy {str(self.path)!r}: the model's observation shapes do not fit this scenario")
        if list(env.action_space.nvec) != self.nvec:
            raise ValueError(
                f"policy {str(self.path)!r}: exported with action dims {self.nvec}, this scenario needs "
                f"{list(env.action_space.nvec)} (pricing on/off differs)"
            )
        return env

    def _choose(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
        feed = {key: np.asarray(obs[key], np.float32)[None] for key in OBS_KEYS}
        feed["action_mask"] = np.asarray(mask, bool)[None]
        if self.hold_bias is not None:  # the run's joint decoding, as LearnedDispatchPolicy does with torch's rows
            lp = self.session.run([ROW_LOG_PROBS], feed)[0][0]
            return match_env_rows(lp, self._env, self.hold_bias)
        return self.session.run(["action"], feed)[0][0]


def _read_decode(decode: Any) -> float | None:
    """The ``hold_bias`` of a sidecar's ``decode`` (``{"decode": "match", "hold_bias": b}``), None without one
    (each row's argmax: the graph's ``action``); ``ValueError`` naming the field otherwise."""
    if decode is None:
        return None
    if not isinstance(decode, dict) or decode.get("decode") != "match":
        raise ValueError(f'decode: expected {{"decode": "match", "hold_bias": b}} or null, got {decode!r}')
    b = decode.get("hold_bias")
    if isinstance(b, bool) or not isinstance(b, int | float) or not 0 <= b < float("inf"):
        raise ValueError(f"decode.hold_bias: expected a finite number >= 0, got {b!r}")
    return float(b)
