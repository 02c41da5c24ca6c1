"""The shipped neural dispatchers (``checkpoints/neural-*``): they load, act, and their ONNX files act as they do;
a set network is rebuilt for a scenario whose spaces differ from its training env's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sb3_contrib")
pytest.importorskip("onnxruntime")

from gigdispatch.agents.learned import LearnedPolicyError
from gigdispatch.agents.registry import make_policy
from gigdispatch.envs.core.sim import Simulator
from gigdispatch.envs.scenarios.loader import load_scenario

ROOT = Path(__file__).resolve().parents[1]
NEURAL = ROOT / "checkpoints" / "neural-default"


def test_the_shipped_neural_policy_and_its_onnx_file_play_the_same_day() -> None:
    import torch

    torch.set_num_threads(1)
    scenario = load_scenario("default")
    torch_kpis = Simulator(scenario).run(make_policy(str(NEURAL)), seed=1000)
    onnx_kpis = Simulator(scenario).run(make_policy(str(NEURAL / "policy.onnx")), seed=1000)
    assert torch_kpis == onnx_kpis
    nearest = Simulator(scenario).run(make_policy("nearest"), seed=1000)
    assert torch_kpis["platform_margin"] > nearest["platform_margin"]


@pytest.mark.parametrize("folder", ["neural-default", "neural-city-1000"])
def test_each_shipped_card_states_its_decoding_and_files(folder: str) -> None:
    d = ROOT / "checkpoints" / folder
    for name in ("CARD.md", "config.yaml", "decode.json", "checkpoints/best.zip", "policy.onnx", "policy.onnx.json"):
        assert (d / name).is_file(), name
    import json

    decode = json.loads((d / "decode.json").read_text())
    assert decode["decode"] == "match"
    assert f"`hold_bias` {decode['hold_bias']}" in (d / "CARD.md").read_text()


def test_a_set_network_is_rebuilt_for_a_scenario_without_pricing() -> None:
    import torch

    torch.set_num_threads(1)
    base = load_scenario("default")
    cfg = base.cfg.model_copy(update={"pricing": base.cfg.pricing.model_copy(update={"enabled": False})})
    scenario = load_scenario(cfg)
    policy = make_policy(str(NEURAL))
    sim = Simulator(scenario)
    sim.reset(1000)
    policy.reset(sim, sim.rng["policy"])
    assert policy._policy is not policy.model.policy  # rebuilt: no payout-level rows in this action space
    assert policy._policy.layout.n_levels == 0
    assert policy.model.policy.layout.n_levels > 0
    # the kept weights are the trained ones: the hold and candidate logits of both networks agree
    trained, rebuilt = policy.model.policy.order_head, policy._policy.order_head
    keep = rebuilt.weight.shape[0]
    assert torch.equal(trained.weight[:keep], rebuilt.weight) and torch.equal(trained.bias[:keep], rebuilt.bias)
    offers = 0
    while not sim.done and sim.t < sim.t_start + 2 * 3600:
        dec = policy.act(sim)
        offers += len(dec.order)
        assert dec.level is None or not np.any(dec.level)
        sim.step(dec)
    assert offers > 50


def test_a_network_whose_features_do_not_fit_is_refused_in_one_line() -> None:
    policy = make_policy(str(NEURAL))
    policy.env_name = "dispatch-v1"  # v1's observation has fewer features than the network read
    policy.env_kwargs = {k: v for k, v in policy.env_kwargs.items() if k != "bundle_k"}
    sim = Simulator(load_scenario("default"))
    sim.reset(1000)
    with pytest.raises(LearnedPolicyError, match="observation features do not fit") as info:
        policy.reset(sim, sim.rng["policy"])
    assert "\n" not in str(info.value)


def test_checkpoints_without_pair_size_load_with_the_width_of_their_weights(tmp_path: Path) -> None:
    """The shipped networks were saved before ``pair_size`` existed (their pair encoder is ``hidden_size``
    wide, the class default is now 32): ``load_model`` reads the width off the saved weights, for them and for
    a model built with the class defaults, whose saved kwargs lack it too."""
    import gymnasium as gym
    from sb3_contrib import MaskablePPO

    import gigdispatch.envs  # noqa: F401 - registers the ids
    from gigdispatch.agents.learned import load_model
    from gigdispatch.agents.setnet import PAIR_SIZE, DispatchSetPolicy

    shipped = load_model("dagger", ROOT / "checkpoints/neural-default/checkpoints/best.zip")
    assert shipped.policy.pair_size == shipped.policy.hidden_size == 64
    env = gym.make("gigdispatch/Dispatch-v1", scenario="default")
    fresh = MaskablePPO(DispatchSetPolicy, env, n_steps=64, batch_size=64, policy_kwargs={"hidden_size": 16})
    fresh.save(tmp_path / "fresh.zip")
    again = load_model("maskable_ppo", tmp_path / "fresh.zip")
    assert again.policy.pair_size == PAIR_SIZE and again.policy.hidden_size == 16
    for a, b in zip(fresh.policy.parameters(), again.policy.parameters(), strict=True):
        assert a.shape == b.shape and bool((a == b).all())
    env.close()
