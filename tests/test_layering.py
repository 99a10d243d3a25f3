"""Layering: core never imports Streamlit or the dashboard, no import cycles, the engine imports nothing above it,
only the entry point imports the CLI."""
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO_ROOT

CORE = REPO_ROOT / "core"
FORBIDDEN = ("streamlit", "dashboard")


def core_files():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 10, "core/ should hold the engine's modules"
    return files


def imported_modules(tree: ast.AST, package: str) -> list[str]:
    """Absolute names of every module an import in the tree names; relative ones resolved against package."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.append(module)
            names += [f"{module}.{alias.name}" if module else alias.name for alias in node.names]
        elif isinstance(node, ast.Call):  # importlib.import_module("...") / __import__("...")
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names.append(str(node.args[0].value))
    return names


def is_forbidden(module: str) -> bool:
    return module.split(".")[0] in FORBIDDEN


def test_import_parser_catches_forbidden_imports():
    # the check below must be able to fail: feed it each way of importing streamlit or the dashboard
    bad = ["import streamlit", "import streamlit as st", "from streamlit import session_state",
           "import dashboard.app", "from dashboard import app", "from .. import dashboard",
           "from ..dashboard.app import main", "import importlib\nimportlib.import_module('streamlit')",
           "def f():\n    import streamlit.components.v1"]
    for source in bad:
        names = imported_modules(ast.parse(source), "core")
        assert any(is_forbidden(n) for n in names), source
    fine = ["import torch", "from .config import RunConfig", "from . import data", "import json"]
    for source in fine:
        assert not any(is_forbidden(n) for n in imported_modules(ast.parse(source), "core")), source


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_core_module_does_not_import_streamlit_or_dashboard(path):
    package = ".".join(path.relative_to(REPO_ROOT).parent.parts)  # the package the file's relative imports start in
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [name for name in imported_modules(tree, package) if is_forbidden(name)]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports {bad}"


def test_importing_every_core_module_loads_no_streamlit():
    modules = sorted(module_name(p) for p in CORE.rglob("*.py") if p.stem != "__main__")
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('streamlit', 'dashboard'))))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('core'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    forbidden_line, core_line = result.stdout.splitlines()[-2:]
    assert json.loads(forbidden_line) == []
    assert set(modules) <= set(json.loads(core_line))  # the imports really happened


# -- no import cycles -----------------------------------------------------------------------------------
PROJECT_PACKAGES = ("core", "dashboard")
CLI_MODULE = "core.cli"
CLI_IMPORTERS = {"core.__main__"}  # `python -m core`: the only module that may import the CLI


def module_name(path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_sources() -> dict[str, tuple[ast.AST, str]]:
    """Every module of core/ and dashboard/: its syntax tree and the package its relative imports start in."""
    sources = {}
    for folder in PROJECT_PACKAGES:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            package = ".".join(path.relative_to(REPO_ROOT).parent.parts)
            sources[module_name(path)] = (ast.parse(path.read_text(), filename=str(path)), package)
    return sources


def project_module(name: str, modules) -> str | None:
    """The longest project module an imported name starts with ("core.config.RunConfig" -> "core.config")."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return None


def import_graph(sources: dict[str, tuple[ast.AST, str]]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, at the top or inside a function alike."""
    graph = {}
    for name, (tree, package) in sources.items():
        targets = {project_module(imported, sources) for imported in imported_modules(tree, package)}
        graph[name] = {target for target in targets if target is not None and target != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module: each is an import cycle."""
    reach = {node: reachable(graph, node) for node in graph}
    components = {frozenset({node} | {other for other in reach[node] if node in reach.get(other, ())})
                  for node in graph}
    return sorted(sorted(component) for component in components if len(component) > 1)


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest loop through the component's first module, e.g. [a, b, a]."""
    start, members = component[0], set(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for target in sorted(graph[path[-1]] & members):
            if target == start:
                return path + [start]
            if target not in seen:
                seen.add(target)
                paths.append(path + [target])
    return component


def cycles_message(graph: dict[str, set[str]]) -> str:
    return "; ".join(f"import cycle among {', '.join(c)}: {' -> '.join(cycle_path(graph, c))}"
                     for c in import_cycles(graph))


def test_cycle_check_finds_a_cycle():
    # the check below must be able to fail: a tiny graph with a loop (and a module outside it that imports it)
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "x"}, "d": {"a"}, "x": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert cycles_message(graph) == "import cycle among a, b, c: a -> b -> c -> a"
    assert import_cycles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
    # and from source, the way the check reads the project: a function-level import closes the loop
    sources = {"core": (ast.parse(""), "core"),
               "core.engine.memory": (ast.parse("def check():\n    from .train import TrainingError\n"), "core.engine"),
               "core.engine.train": (ast.parse("from .memory import check_fits\nimport torch\n"), "core.engine"),
               "core.cli": (ast.parse("from core.engine import train\nfrom core.config import RunConfig\n"), "core")}
    graph = import_graph(sources)
    assert graph["core.cli"] == {"core", "core.engine.train"}  # core.config is not a module of this fake project
    assert import_cycles(graph) == [["core.engine.memory", "core.engine.train"]]


def test_no_import_cycles_in_core_or_dashboard():
    graph = import_graph(project_sources())
    assert {"core.cli", "core.engine.train", "dashboard.app"} <= set(graph)
    assert not import_cycles(graph), cycles_message(graph)


def test_only_the_entry_point_imports_the_cli():
    # CLI commands (options and printing) live in core.cli; the engine and the pages never reach back into it
    graph = import_graph(project_sources())
    importers = {module for module, targets in graph.items() if CLI_MODULE in targets}
    assert importers <= CLI_IMPORTERS, f"{sorted(importers - CLI_IMPORTERS)} import {CLI_MODULE}"


# Command lines are parsed in core.cli; the worker's own entry (`python -m core.runs.worker --fd ...`, started by
# core.runs.manager) is a process boundary, not a command people type. Studies take plain values.
ARGPARSE_IMPORTERS = {"core.cli", "core.runs.worker"}


def test_only_the_cli_and_the_worker_entry_parse_command_lines():
    importers = {name for name, (tree, package) in project_sources().items()
                 if any(n == "argparse" or n.startswith("argparse.") for n in imported_modules(tree, package))}
    assert "core.cli" in importers  # the check can see an import of argparse
    assert importers <= ARGPARSE_IMPORTERS, f"{sorted(importers - ARGPARSE_IMPORTERS)} import argparse"


ENGINE = "core.engine"
ABOVE_ENGINE = ("core.runs", "core.studies", "core.exchange", "core.cli")


def test_the_engine_imports_nothing_above_it():
    # engine <- runs <- studies, exchange <- cli: the training loop must not know how runs are kept or compared
    graph = import_graph(project_sources())
    engine = [module for module in graph if module == ENGINE or module.startswith(ENGINE + ".")]
    assert len(engine) >= 10
    bad = {module: sorted(t for t in graph[module] if t.startswith(ABOVE_ENGINE)) for module in engine}
    assert not any(bad.values()), {m: t for m, t in bad.items() if t}


RUNS = "core.runs"
ABOVE_RUNS = ("core.studies", "core.exchange", "core.cli")


def test_runs_import_nothing_from_studies_or_exchange():
    # engine <- runs <- studies, exchange: keeping runs (store, workers, history) must not know how they are
    # compared or carried away; the checks both a stored row and a weights file obey live in core.runs.records
    graph = import_graph(project_sources())
    runs = [module for module in graph if module == RUNS or module.startswith(RUNS + ".")]
    assert len(runs) >= 8
    bad = {module: sorted(t for t in graph[module] if t.startswith(ABOVE_RUNS)) for module in runs}
    assert not any(bad.values()), {m: t for m, t in bad.items() if t}


def sys_path_edits(tree: ast.AST) -> list[int]:
    """Lines that change sys.path: sys.path.insert/append/extend(...), sys.path = ..., sys.path[...] = ...."""
    def is_sys_path(node) -> bool:
        node = node.value if isinstance(node, ast.Subscript) else node
        return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys")
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            lines.append(node.lineno)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            lines += [node.lineno for t in targets if is_sys_path(t)]
    return sorted(lines)


def test_sys_path_edit_finder_finds_each_form():
    source = "import sys\nsys.path.insert(0, 'x')\nsys.path[:0] = ['y']\nsys.path += ['z']\nprint(sys.path)\n"
    assert sys_path_edits(ast.parse(source)) == [2, 3, 4]


def test_no_module_edits_sys_path():
    # pyproject.toml makes the project a package (installed editable by requirements.txt) and puts tests/ on
    # pytest's path: an import that needs a sys.path edit is a missing install step. Scripts that reuse the
    # browser tests' helpers are not part of the package and may add tests/.
    files = [p for top in ("core", "dashboard", "tests") for p in sorted((REPO_ROOT / top).rglob("*.py"))]
    edits = {str(p.relative_to(REPO_ROOT)): lines for p in files
             if (lines := sys_path_edits(ast.parse(p.read_text())))}
    assert not edits, edits


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed (requirements-test.txt has it)")
    result = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
