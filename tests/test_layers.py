"""The architecture (ARCHITECTURE.md) holds: the layering contracts of pyproject.toml pass, and
no module imports itself back through others.

The parts live in top-level folders mapped onto `p11spy.*`, which import-linter cannot follow,
so the check runs on a copy of the sources laid out as installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.conftest import REPO

PARTS = {"common": "p11spy", "facts": "p11spy/facts", "spy": "p11spy/spy",
         "decoder": "p11spy/decoder", "tui": "p11spy/tui", "cli": "p11spy/cli"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    for folder, dest in PARTS.items():
        shutil.copytree(REPO / folder, root / dest, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c"))
    shutil.copy(REPO / "pyproject.toml", root)
    return root


def test_layering_contracts_hold(installed: Path) -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run([str(lint), "--no-cache"], cwd=installed, capture_output=True, text=True,
                         env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def _cycle(graph: grimp.ImportGraph) -> list[str] | None:
    """One import cycle between modules, or None (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    sys.setrecursionlimit(10000)
    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return found[0] if found else None


def test_no_module_imports_itself_back(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(installed))
    for name in [m for m in sys.modules if m == "p11spy" or m.startswith("p11spy.")]:
        monkeypatch.delitem(sys.modules, name)
    graph = grimp.build_graph("p11spy", cache_dir=None)
    assert len(graph.modules) > 80, "the copy holds the whole package"
    assert _cycle(graph) is None
