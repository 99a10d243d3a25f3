"""core/ is the engine: it must never import streamlit or the dashboard."""
import ast
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

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
    modules = sorted("core." + p.stem for p in CORE.glob("*.py") if p.stem not in ("__init__", "__main__"))
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
