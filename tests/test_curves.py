"""``python -m gigdispatch.training.curves`` on a DAgger run: the curve, the reference lines and the refusals.

The run folder and the evaluation folder are fakes written here (a few rounds, a few rows), so the test reads
exactly the files the command reads and runs in about a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gigdispatch.training.curves import figure, main, parse_reference, references_from_eval

HELD_OUT = [5000, 5001]  # eval.seeds[:eval.episodes] of the fake run below
PNG = b"\x89PNG\r\n\x1a\n"


def _dagger_run(root: Path, scenario: str = "tiny-town") -> Path:
    """A finished three-round DAgger run folder (dagger_state.json and config.yaml, nothing else)."""
    run = root / "neural-run"
    run.mkdir()
    history = [
        {
            "round": r,
            "samples": 100 * r,
            "loss": 1.0 / r,
            "accuracy": 0.5 + 0.1 * r,
            "held_out_by_bias": {"0.0": 1000.0 + r, "2.0": 1010.0 + 2 * r},
            "hold_bias": 2.0,
            "eval_profit_mean": 1010.0 + 2 * r,
            "days": [1000 + r],
        }
        for r in (1, 2, 3)
    ]
    best = {"round": 3, "hold_bias": 2.0, "eval_profit_mean": 1016.0}
    (run / "dagger_state.json").write_text(json.dumps({"round": 3, "best": best, "history": history}))
    (run / "config.yaml").write_text(
        f"scenario: {scenario}\nalgo: dagger\neval:\n  seeds: [5000, 5001, 5002, 5003]\n  episodes: 2\n"
    )
    return run


def _eval_dir(root: Path) -> Path:
    """A ``gigdispatch evaluate`` folder: batching on the run's held-out days, cem on other days, the oracle's
    hindsight plan (not a policy), and a row of another scenario."""
    ev = root / "eval"
    ev.mkdir()
    (ev / "summary.csv").write_text(
        "policy,scenario,kind,episodes,reward_mean,reward_ci95\n"
        "batching,tiny-town,policy,2,900.5,10.0\n"
        "cem,tiny-town,policy,2,1005.0,10.0\n"
        "oracle,tiny-town,hindsight plan,2,5000.0,10.0\n"
        "batching,elsewhere,policy,2,123.0,10.0\n"
    )
    (ev / "episodes.csv").write_text(
        "policy,scenario,seed,reward\n"
        + "".join(f"batching,tiny-town,{s},900.5\n" for s in HELD_OUT)
        + "".join(f"cem,tiny-town,{s},1005.0\n" for s in (0, 1))
    )
    return ev


def test_dagger_curve_with_reference_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import matplotlib.pyplot as plt

    run, ev, out = _dagger_run(tmp_path), _eval_dir(tmp_path), tmp_path / "curve.png"
    args = ["--run", str(run), "--reference", "hand=made=950", "--reference-from-eval", str(ev), "--out", str(out)]
    assert main(args) == 0
    assert out.read_bytes()[:8] == PNG
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    refs = [parse_reference("hand=made=950"), *references_from_eval(ev)]
    fig = figure([run], refs)
    top = fig.axes[0]
    assert "tiny-town seeds 5000-5001" in top.get_title()
    lines = {ln.get_label(): ln for ln in top.get_lines()}
    selected = lines["selected decoding (held-out)"]
    assert list(selected.get_xdata()) == [1.0, 2.0, 3.0] and list(selected.get_ydata()) == [1012.0, 1014.0, 1016.0]
    assert list(lines["hold_bias 0.0 (held-out)"].get_ydata()) == [1001.0, 1002.0, 1003.0]
    refs_drawn = {k: v.get_ydata()[0] for k, v in lines.items() if v.get_linestyle() not in ("-", "None")}  # dashed
    assert refs_drawn == {  # the oracle's plan and the other scenario's row are left out
        "hand=made: 950": 950.0,
        "batching: 900 (same days)": 900.5,  # f"{900.5:,.0f}" rounds half to even
        "cem: 1,005 (seeds 0-1: other days)": 1005.0,
    }
    low = fig.axes[1]  # training loss by round, with the samples under the round numbers
    assert [t.get_text() for t in low.get_xticklabels()] == ["1\n100", "2\n200", "3\n300"]
    plt.close(fig)


@pytest.mark.parametrize(
    ("case", "named"),
    [
        ("not-a-run", "--run"),
        ("bad-state", "--run"),
        ("bad-reference", "--reference"),
        ("no-summary", "--reference-from-eval"),
        ("other-scenario", "--reference-from-eval"),
    ],
)
def test_bad_input_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, named: str
) -> None:
    run = _dagger_run(tmp_path, scenario="elsewhere" if case == "other-scenario" else "tiny-town")
    ev = _eval_dir(tmp_path)
    args = ["--run", str(run)]
    if case == "not-a-run":
        args = ["--run", str(ev)]  # an evaluation folder is no training run
    elif case == "bad-state":
        doc = json.loads((run / "dagger_state.json").read_text())
        del doc["history"][1]["eval_profit_mean"]
        (run / "dagger_state.json").write_text(json.dumps(doc))
    elif case == "bad-reference":
        args += ["--reference", "batching:3202"]
    elif case == "no-summary":
        (ev / "summary.csv").unlink()
        args += ["--reference-from-eval", str(ev)]
    else:  # the run is on "elsewhere", the evaluation folder has rows of tiny-town only
        (ev / "summary.csv").write_text("policy,scenario,kind,episodes,reward_mean\nnearest,tiny-town,policy,2,1\n")
        args += ["--reference-from-eval", str(ev)]
    out = tmp_path / "curve.png"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {named} "), err
    assert not out.exists()
