"""The layers point down, MLflow has one door, and no package imports itself in a circle.

Every import statement of every module is read with ``ast`` (module-level and inside functions;
imports under ``if TYPE_CHECKING:`` are skipped, as they never run). Layers, from the bottom:

* ``suite``: the core; imports no other package of the project.
* ``tasks``: the families; import the core (not its tracking module), never runners or leaderboard.
* ``runners`` and ``leaderboard``: import the core; neither imports the other, nor ``tasks``
  (runners find tasks through the registry), nor ``cli``.
* ``cli`` and ``benchmarks``: may import every layer.

Only ``suite.tracking`` imports ``mlflow`` (tests may, to inspect a store).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("suite", "tasks", "runners", "leaderboard", "cli", "benchmarks")
TRACKING = "suite.tracking"
# package -> the project's packages it must not import
FORBIDDEN = {
    "suite": {"tasks", "runners", "leaderboard", "cli", "benchmarks"},
    "tasks": {"runners", "leaderboard", "cli", "benchmarks", TRACKING},
    "runners": {"tasks", "leaderboard", "cli", "benchmarks"},
    "leaderboard": {"tasks", "runners", "cli", "benchmarks"},
    "cli": set(),
    "benchmarks": set(),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    name: str  # what it imports, absolute (``suite.task.Task`` for ``from suite.task import Task``)
    line: int


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those only a type checker runs."""
    for node in ast.iter_child_nodes(tree):
        children = node.orelse if isinstance(node, ast.If) and _is_type_checking(node) else [node]
        for child in children:
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            yield from _import_nodes(child)


def _within(name: str, target: str) -> bool:
    return name == target or name.startswith(target + ".")


def _group(module: str) -> str:
    """A top-level package, or one family under ``tasks``: where import cycles are looked for."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "tasks" and len(parts) > 1 else parts[0]


class Project:
    """The modules under ``root`` and their imports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.modules = {self._name(p): p for pkg in PACKAGES if (root / pkg).is_dir()
                        for p in sorted((root / pkg).rglob("*.py"))}
        self.imports = {m: self._imports(m) for m in self.modules}

    def _name(self, path: Path) -> str:
        parts = list(path.relative_to(self.root).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def _imports(self, module: str) -> list[Import]:
        path = self.modules[module]
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        out = []
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [Import(module, alias.name, node.lineno) for alias in node.names]
                continue
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            out.append(Import(module, base, node.lineno))
            out += [Import(module, f"{base}.{alias.name}", node.lineno) for alias in node.names]
        return out

    def resolve(self, name: str) -> str | None:
        """The project module ``name`` refers to (the longest known prefix), or None for a third-party name."""
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in self.modules:
                return ".".join(parts[:i])
        return None

    def where(self, found: list[Import]) -> str:
        return "\n".join(f"  {self.modules[i.module].relative_to(self.root)}:{i.line} imports {i.name}"
                         for i in found)

    def mlflow_imports(self) -> list[Import]:
        return [i for m, found in self.imports.items() if m != TRACKING for i in found if _within(i.name, "mlflow")]

    def layer_violations(self, layer: str) -> list[Import]:
        return [i for m, found in self.imports.items() if m.split(".")[0] == layer for i in found
                if any(_within(i.name, bad) for bad in FORBIDDEN[layer])]

    def groups(self) -> list[str]:
        return sorted({_group(m) for m in self.modules})

    def cycles(self, group: str) -> list[set[str]]:
        """The import cycles (strongly connected components of two or more modules) inside ``group``."""
        edges = {m: {r for i in found if (r := self.resolve(i.name)) and r != m and _group(r) == group}
                 for m, found in self.imports.items() if _group(m) == group}
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        out: list[set[str]] = []

        def visit(v: str) -> None:  # Tarjan's algorithm
            index[v] = low[v] = len(index)
            stack.append(v)
            for w in edges[v]:
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = set()
                while (w := stack.pop()) != v:
                    component.add(w)
                component.add(v)
                if len(component) > 1:
                    out.append(component)

        for m in sorted(edges):
            if m not in index:
                visit(m)
        return out


PROJECT = Project(ROOT)


def test_only_the_tracking_module_imports_mlflow() -> None:
    found = PROJECT.mlflow_imports()
    assert not found, "only suite/tracking.py may import mlflow; use the Tracker's reads instead:\n" + \
        PROJECT.where(found)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_what_lies_below_it(layer: str) -> None:
    found = PROJECT.layer_violations(layer)
    assert not found, f"{layer} must not import {sorted(FORBIDDEN[layer])}:\n" + PROJECT.where(found)


@pytest.mark.parametrize("group", PROJECT.groups())
def test_no_package_imports_itself_in_a_circle(group: str) -> None:
    found = PROJECT.cycles(group)
    assert not found, f"import cycle(s) in {group}: {[sorted(c) for c in found]}"


def test_the_checks_catch_planted_violations(tmp_path: Path) -> None:
    """Each rule fails on a small tree that breaks it: function-level, relative and aliased imports count."""
    files = {
        "suite/__init__.py": "",
        "suite/tracking.py": "import mlflow\n",
        "suite/core.py": "def f():\n    from runners import pool\n",
        "suite/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cli import main\n",
        "runners/__init__.py": "",
        "runners/pool.py": "",
        "leaderboard/__init__.py": "",
        "leaderboard/collect.py": "import mlflow.tracking as t\nfrom tasks.fam import task\n",
        "tasks/__init__.py": "",
        "tasks/fam/__init__.py": "",
        "tasks/fam/task.py": "from . import train\nfrom suite.tracking import Tracker\n",
        "tasks/fam/train.py": "def g():\n    from tasks.fam.task import X\n",
        "cli/__init__.py": "",
        "cli/main.py": "import runners.pool, leaderboard.collect, mlflow\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    planted = Project(tmp_path)
    assert {(i.module, i.name) for i in planted.mlflow_imports()} == {
        ("leaderboard.collect", "mlflow.tracking"), ("cli.main", "mlflow")}
    assert [i.name for i in planted.layer_violations("suite")] == ["runners", "runners.pool"]  # not the typed one
    assert [i.name for i in planted.layer_violations("leaderboard")] == ["tasks.fam", "tasks.fam.task"]
    assert [i.name for i in planted.layer_violations("tasks")] == ["suite.tracking", "suite.tracking.Tracker"]
    assert planted.cycles("tasks.fam") == [{"tasks.fam.task", "tasks.fam.train"}]
    assert planted.cycles("suite") == [] and planted.layer_violations("cli") == []
