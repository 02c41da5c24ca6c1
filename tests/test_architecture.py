"""The house's shape, checked: layers (import-linter contracts), no import cycles, one namespace."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# top-level folder -> the package it installs as (pyproject.toml, [tool.setuptools] package-dir)
PACKAGES = {
    "envs": "gigdispatch.envs",
    "agents": "gigdispatch.agents",
    "service": "gigdispatch.service",
    "training": "gigdispatch.training",
}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for folder, pkg in PACKAGES.items():
        for f in sorted((ROOT / folder).rglob("*.py")):
            rel = f.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = f
    return out


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations only, never imported at run time)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (module level and inside functions)."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import a.b.c` where c is an attribute: the module is a.b
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def import_graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        for t in _imports(name, path, set(mods)):
            g.add_edge(name, t)
    return g


def test_no_import_cycles() -> None:
    """No loop among the project's imports, counting those inside functions."""
    g = import_graph()
    assert g.number_of_edges() > 50, "the scan found too few imports to be looking at the project"
    cycles = [c for c in nx.simple_cycles(g, length_bound=20)][:5]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles)


def test_no_upward_imports_even_inside_functions() -> None:
    """import-linter sees module-level imports; this also catches the ones inside functions."""
    order = ["gigdispatch.envs", "gigdispatch.agents", "gigdispatch.service", "gigdispatch.training"]

    def layer(m: str) -> int:
        return max(i for i, p in enumerate(order) if m == p or m.startswith(p + "."))

    g = import_graph()
    up = [(a, b) for a, b in g.edges if layer(b) > layer(a)]
    assert not up, f"upward imports: {up}"
    core_out = [
        (a, b)
        for a, b in g.edges
        if a.startswith("gigdispatch.envs.core") and not b.startswith("gigdispatch.envs.core")
    ]
    assert not core_out, f"envs.core imports outside the core: {core_out}"


def test_the_scan_sees_a_cycle_when_there_is_one(tmp_path: Path) -> None:
    """The cycle test can fail: two modules importing each other inside functions are found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from pkg.b import g\n")
    b.write_text("def g():\n    import pkg.a\n")
    known = {"pkg.a", "pkg.b"}
    g = nx.DiGraph(
        [("pkg.a", t) for t in _imports("pkg.a", a, known)] + [("pkg.b", t) for t in _imports("pkg.b", b, known)]
    )
    assert list(nx.simple_cycles(g)) != []


def test_import_linter_contracts() -> None:
    """`lint-imports` (pyproject.toml [tool.importlinter]) keeps its contracts."""
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    r = subprocess.run([*cmd, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_installed_package_ignores_local_folders_named_like_ours(tmp_path: Path) -> None:
    """A researcher's own envs/, agents/ and training/ folders shadow nothing of gigdispatch's."""
    for name in ("envs", "agents", "training", "service"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    code = (
        "import gigdispatch.envs, gigdispatch.agents, gigdispatch.training.cli\n"
        "from gigdispatch.envs import Simulator, load_scenario\n"
        "from gigdispatch.agents import make_policy\n"
        "sim = Simulator(load_scenario('default')); sim.reset(0); "
        "p = make_policy('nearest'); p.reset(sim, sim.rng['policy'])\n"
        "for _ in range(30): sim.step(p.act(sim))\n"
        "import envs\n"  # the user's folder is still theirs to import
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env, check=False)
    assert "the user folder was imported" in r.stderr and "line 6" in r.stderr, r.stderr[-2000:]
    r = subprocess.run(
        [sys.executable, "-m", "gigdispatch.training.cli", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert r.returncode == 0 and "usage" in r.stdout, r.stderr[-2000:]


@pytest.mark.parametrize("folder", list(PACKAGES))
def test_no_module_imports_its_folder_without_the_namespace(folder: str) -> None:
    bad = []
    for f in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                if node.module.split(".")[0] in PACKAGES:
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Import):
                bad += [f"{f.relative_to(ROOT)}:{node.lineno}" for a in node.names if a.name.split(".")[0] in PACKAGES]
    assert not bad, bad


def _tool(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def test_ruff_lint_and_format() -> None:
    """ruff's rules (pyproject.toml: line length 120, complexity 15) hold over the whole tree."""
    r = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout[-4000:]
    r = subprocess.run(
        [_tool("ruff"), "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stdout[-4000:]


@pytest.mark.slow
def test_mypy_clean_on_envs_agents_service(tmp_path: Path) -> None:
    from typecheck import run_mypy

    r = run_mypy(cache_dir=tmp_path / "mypy-cache")
    assert r.returncode == 0, r.stdout[-6000:]
    assert "Success" in r.stdout
