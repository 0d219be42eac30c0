"""The import rule of docs/architecture.md, checked on the source (ast), so that it stays true.

    schemas  <-  core  <-  registry  <-  feedback | lake | callqueue
             <-  trainer | streamer | monitor  <-  callscore

A package may import its own modules and any package to its left; packages of one layer never
import each other (trainer, streamer and monitor; feedback, lake and callqueue); nothing in the
product imports the scaffolding (tests/, bench/, testkit/), nor imports a module by name; and
inside a package, its modules and subpackages import each other without a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: dict[str, int] = {
    "schemas": 0,
    "core": 1,
    "registry": 2,
    "feedback": 3,
    "lake": 3,
    "callqueue": 3,
    "trainer": 4,
    "streamer": 4,
    "monitor": 4,
    "callscore": 5,
}
OUTSIDE_THE_PRODUCT = ("tests", "bench", "testkit")
BY_NAME = {"import_module", "__import__"}


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, nested ones included."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join([*base, node.module or ""]).strip(".")))
            else:
                found.append((node.lineno, node.module or ""))
    return found


def imports_by_name(path: Path) -> list[int]:
    """Lines calling importlib.import_module or __import__ (an import no reader can follow)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in BY_NAME:
                lines.append(node.lineno)
    return lines


def violations(files: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in files:
        where = path.relative_to(root)
        own = where.parts[0]
        for line, module in imported_modules(path, root):
            target = module.split(".")[0]
            if target == own:
                continue
            if target in OUTSIDE_THE_PRODUCT:
                found.append(f"{where}:{line} imports {module}: the product never imports it")
            elif target in LAYERS and LAYERS[target] >= LAYERS[own]:
                found.append(
                    f"{where}:{line} imports {module}: {own} (layer {LAYERS[own]}) may only "
                    f"import packages of lower layers, not {target} (layer {LAYERS[target]})"
                )
        found += [f"{where}:{line} imports a module by name" for line in imports_by_name(path)]
    return found


def _unit(module: str) -> str | None:
    """The part of its package a module belongs to: `callscore.demo.view` -> `callscore.demo`."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else None


def package_cycles(files: list[Path], root: Path = ROOT) -> list[str]:
    """Import cycles between the modules and subpackages of one package (each drawn once)."""
    edges: dict[str, set[str]] = {}
    for path in files:
        own = _unit(".".join(path.relative_to(root).with_suffix("").parts))
        if own is None or own.endswith(".__init__"):
            continue
        for _line, module in imported_modules(path, root):
            target = _unit(module)
            if target and target != own and target.split(".")[0] == own.split(".")[0]:
                edges.setdefault(own, set()).add(target)
    cycles: list[str] = []
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> None:
        for target in sorted(edges.get(unit, ())):
            if target in path:
                cycle = [*path[path.index(target) :], target]
                if not any(set(cycle) <= set(c.split(" -> ")) for c in cycles):
                    cycles.append(" -> ".join(cycle))
            elif target not in done:
                visit(target, [*path, target])
        done.add(unit)

    for unit in sorted(edges):
        if unit not in done:
            visit(unit, [unit])
    return cycles


def product_files() -> list[Path]:
    return sorted(p for package in LAYERS for p in (ROOT / package).rglob("*.py"))


def test_imports_run_one_way():
    files = product_files()
    assert len(files) > 40  # the walk found the product
    assert violations(files) == []


def test_no_import_cycle_inside_a_package():
    assert package_cycles(product_files()) == []


def test_bench_does_not_import_tests():
    problems = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] == "tests"
    ]
    assert problems == []


def test_the_checker_sees_wrong_way_and_by_name_imports(tmp_path):
    """The rule itself can fail: a wrong-way, a sideways and a by-name import are all reported."""
    for package, source in {
        "core": "from registry.artifact import ModelArtifact\n",
        "trainer": "def f():\n    from streamer import app\n",
        "streamer": "import importlib\nimportlib.import_module('trainer.cli')\n",
        "registry": "from . import artifact\nfrom schemas import FEATURES\n",
    }.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "mod.py").write_text(source)
    found = violations(sorted(tmp_path.rglob("*.py")), root=tmp_path)
    assert len(found) == 3, found
    assert any("core/mod.py:1 imports registry.artifact" in v for v in found)
    assert any("trainer/mod.py:2 imports streamer" in v for v in found)
    assert any("streamer/mod.py:2 imports a module by name" in v for v in found)


def test_the_checker_sees_scaffolding_imports_and_cycles(tmp_path):
    """A product module importing the test scaffolding is reported, and so is a cycle between
    the parts of one package (the CLI -> commands -> demo -> CLI kind)."""
    for rel, source in {
        "streamer/mod.py": "from testkit.harness import StreamWorker\n",
        "callscore/cli.py": "from callscore.commands import demo\n",
        "callscore/commands/demo.py": "from callscore.demo import run\n",
        "callscore/demo/run.py": "def f():\n    from callscore.cli import main\n",
        "callscore/demo/view.py": "from callscore.demo import run\n",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(source)
    files = sorted(tmp_path.rglob("*.py"))
    found = violations(files, root=tmp_path)
    assert found == ["streamer/mod.py:1 imports testkit.harness: the product never imports it"]
    assert package_cycles(files, root=tmp_path) == [
        "callscore.cli -> callscore.commands -> callscore.demo -> callscore.cli"
    ]
