"""Repository promises: the README's two commands, CI running the second, the README's Python snippet runs,
generated docs current."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    sec = text.split("## Quickstart", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", sec, re.S)
    assert block, "the Quickstart section must open with a fenced code block"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def test_quickstart_has_exactly_two_commands_and_ci_runs_the_second() -> None:
    cmds = quickstart_commands()
    assert len(cmds) == 2
    assert "torch==2.13.0" in cmds[0] and "torch==2.13.0" in cmds[1]
    assert cmds[0].index("torch==2.13.0") < cmds[0].index('-e ".[dev]"')  # torch first
    ci = [
        ln
        for ln in (ROOT / ".ci/run").read_text().splitlines()
        if ln.strip() and not ln.startswith(("#", "set ", "cd "))
    ]
    assert ci == [cmds[1]]
    # the browser test needs Debian's chromium: the test command installs it when it is missing
    assert cmds[1].startswith("(command -v chromium") and "apt-get install -y -qq chromium" in cmds[1]


def test_scenario_docs_are_current() -> None:
    from gigdispatch.envs.scenarios.docgen import render

    assert (ROOT / "docs/scenarios.md").read_text() == render(), (
        "run: python -m gigdispatch.envs.scenarios.docgen > docs/scenarios.md"
    )


def test_core_imports_no_rl_or_http_libraries() -> None:
    banned = ("gymnasium", "pettingzoo", "torch", "fastapi", "uvicorn", "stable_baselines3", "requests", "http")
    for f in (ROOT / "envs/core").glob("*.py"):
        src = f.read_text()
        for b in banned:
            assert not re.search(rf"^\s*(import|from)\s+{b}\b", src, re.M), f"{f.name} imports {b}"


def readme_python_block(after: str, at_once: bool = False) -> str:
    """The first python code block of README.md after the text ``after`` (``at_once``: right after it)."""
    text = (ROOT / "README.md").read_text()
    sec = text.split(after, 1)[1]
    block = re.match(r"\s*```python\n(.*?)```", sec, re.S) if at_once else re.search(r"```python\n(.*?)```", sec, re.S)
    assert block, f"the README's {after!r} paragraph must be followed by a python code block"
    return block.group(1)


def readme_python_snippet() -> str:
    """The code block of the README's "From Python:" paragraph."""
    return readme_python_block("From Python:", at_once=True)


@pytest.mark.parametrize("policy", ["nearest", "oracle"])
def test_readme_python_snippet_runs(policy: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's snippet as written (and with the hindsight oracle, whose plan is made in ``reset``): the
    one-call day and the step-by-step day give the same KPIs."""
    src = readme_python_snippet()
    assert src.count('make_policy("nearest")') == 2 and "policy.reset(sim" in src and "compute_kpis" in src
    src = src.replace('make_policy("nearest")', f'make_policy("{policy}")')
    ns: dict = {}
    exec(compile(src, "README.md", "exec"), ns)  # the README's own code, run as a user would
    kpis, day = ns["kpis"], ns["day"]
    assert kpis.keys() == day.keys() and kpis["orders_delivered"] > 0
    for k, v in kpis.items():
        assert v == day[k] or (math.isnan(v) and math.isnan(day[k])), k
    assert "on time" in capsys.readouterr().out


def test_an_oracle_not_reset_says_what_to_call() -> None:
    from gigdispatch.agents import make_policy
    from gigdispatch.envs import Simulator, load_scenario
    from gigdispatch.envs.core.errors import GigdispatchError

    sim = Simulator(load_scenario("default"))
    sim.reset(seed=0)
    oracle = make_policy("oracle")
    call = r"call policy\.reset\(sim, sim\.rng\['policy'\]\) after sim\.reset\(seed\)$"
    expected = "^oracle: the policy was never reset: " + call
    with pytest.raises(GigdispatchError, match=expected):
        oracle.act(sim)
    oracle.reset(sim, sim.rng["policy"])
    oracle.act(sim)
    sim.reset(seed=1)
    with pytest.raises(GigdispatchError, match=r"reset for another day \(seed 0\): call policy\.reset"):
        oracle.act(sim)


def test_simulator_doc_lists_every_kpi_in_order() -> None:
    from gigdispatch.envs.core import KPI_DOC

    section = (ROOT / "docs/simulator.md").read_text().split("\n## KPIs\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \|([^|]*)\|", section, re.M)
    assert [name for name, _ in rows] == list(KPI_DOC)
    assert [unit.strip() for _, unit in rows] == [unit for unit, _ in KPI_DOC.values()]


def readme_training_snippet() -> str:
    """The code block after the README's "Training a neural dispatcher on it" paragraph."""
    return readme_python_block("Training a neural dispatcher on it")


@pytest.mark.parametrize("algo", ["MaskablePPO", "PPO"])
def test_readme_training_snippet_trains_the_set_policy_with_ppo(algo: str) -> None:
    """The README's few lines, as written (MaskablePPO, 8 days at once) and with plain PPO (the policy masks
    itself from the observation), train: the rollouts of 8 x 128 steps end in updates of the set policy."""
    import torch

    src = readme_training_snippet()
    assert "MaskablePPO(DispatchSetPolicy, env" in src and "make_vec(" in src
    if algo == "PPO":
        src = src.replace("from sb3_contrib import MaskablePPO", "from stable_baselines3 import PPO as MaskablePPO")
    torch.set_num_threads(1)
    ns: dict = {}
    exec(compile(src, "README.md", "exec"), ns)
    model = ns["model"]
    assert model.num_timesteps == 2048 and model.n_envs == 8
    assert type(model.policy).__name__ == "DispatchSetPolicy"
    assert type(model).__name__ == algo and model._n_updates > 0
