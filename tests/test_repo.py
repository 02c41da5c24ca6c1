"""Repository promises: the README's two commands, CI running the second, generated docs current."""

from __future__ import annotations

import re
from pathlib import Path

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
