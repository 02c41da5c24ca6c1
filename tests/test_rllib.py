"""RLlib: ``gigdispatch train --backend rllib`` -- the fleet env through RLlib's PettingZoo
wrapper, one shared action-masked policy, a local two-iteration run (``configs/train/rllib-smoke.yaml``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.rllib")

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs/train/rllib-smoke.yaml"


@pytest.fixture(scope="module")
def run_and_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    import contextlib
    import io

    from gigdispatch.training.cli import main

    out = tmp_path_factory.mktemp("rllib")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["train", "--backend", "rllib", "--config", str(SMOKE), "--out", str(out), "--no-progress"]) == 0
    (run_dir,) = out.iterdir()
    return run_dir, buf.getvalue()


@pytest.fixture(scope="module")
def run(run_and_output: tuple[Path, str]) -> Path:
    return run_and_output[0]


def test_a_run_says_its_folder_then_one_line_per_iteration(run_and_output: tuple[Path, str]) -> None:
    run, out = run_and_output
    lines = out.splitlines()
    assert lines[0] == f"run folder: {run}"
    assert [ln.split("] ", 1)[1].split(":")[0] for ln in lines if "] iteration" in ln] == [
        "iteration 1/2",
        "iteration 2/2",
    ]
    assert lines[-1].startswith("RLlib PPO: 2 iterations")


def test_two_iterations_write_a_run_folder(run: Path) -> None:
    prog = json.loads((run / "progress.json").read_text())
    assert prog["backend"] == "rllib" and prog["done"] and prog["iteration"] == 2
    assert [h["iteration"] for h in prog["history"]] == [1, 2]
    assert prog["history"][1]["env_steps"] > prog["history"][0]["env_steps"] > 0
    assert prog["history"][1]["episode_return_mean"] is not None  # whole (truncated) episodes ran
    for name in ("config.yaml", "command.txt", "git_revision.txt", "seed"):
        assert (run / name).is_file()
    assert (run / "checkpoints/rllib/rllib_checkpoint.json").is_file()
    assert not list((run / "checkpoints").glob("*.tmp")) and list((run / "tb").iterdir())


def test_the_shared_policy_never_picks_a_masked_action(run: Path) -> None:
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    from gigdispatch.envs.fleet_core import OBS_DIM

    module = RLModule.from_checkpoint(str(run / "checkpoints/rllib/learner_group/learner/rl_module/shared"))
    rng = np.random.default_rng(0)
    n = 512
    mask = (rng.random((n, 10)) < 0.3).astype(np.int8)
    mask[:, 0] = 1  # the no-op is always valid
    mask[: n // 2, 1:] = 0  # half the rows: only the no-op
    obs = {
        "observation": torch.as_tensor(rng.uniform(-1, 1, (n, OBS_DIM)), dtype=torch.float32),  # obs_version 1
        "action_mask": torch.as_tensor(mask),
    }
    with torch.no_grad():
        logits = module.forward_inference({"obs": obs})["action_dist_inputs"].numpy()
    greedy = logits.argmax(-1)
    assert (greedy[: n // 2] == 0).all()
    assert mask[np.arange(n), greedy].all()
    sampled = torch.distributions.Categorical(logits=torch.as_tensor(logits)).sample((20,)).numpy()
    assert mask[np.arange(n)[None, :], sampled].all()
    assert (greedy[n // 2 :] != 0).any()  # the unmasked rows are free to choose: the check has teeth


def test_resume_of_a_finished_run_keeps_its_iterations(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gigdispatch.training.cli import main

    before = (run / "progress.json").read_bytes()
    assert main(["train", "--backend", "rllib", "--resume", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out == f"--resume {run}: the run is finished (2 of 2 RLlib iterations); nothing left to do\n"
    assert (run / "progress.json").read_bytes() == before  # Ray was not even started


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--config", str(ROOT / "configs/train/smoke.yaml")], "trains the fleet env (env: fleet), not env: dispatch"),
        (["--config", str(SMOKE), "rllib.iterations=0"], "rllib.iterations"),
        (["--config", str(SMOKE), "rllib.bogus=1"], "rllib.bogus"),
    ],
)
def test_bad_rllib_requests_are_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gigdispatch.training.cli import main

    assert main(["train", "--backend", "rllib", *argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_address_needs_the_rllib_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gigdispatch.training.cli import main

    assert main(["train", "--config", str(SMOKE), "--address", "auto", "--out", str(tmp_path)]) == 2
    assert "--address" in capsys.readouterr().err
