"""pyproject.toml declares every package that vitrain, train.py and benchmarks/ import directly."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

from tests.helpers import ROOT


def imported_top_level_modules() -> set[str]:
    modules = set()
    for path in [ROOT / "train.py", *(ROOT / "vitrain").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"vitrain", "benchmarks", "__future__"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {normalise(re.split(r"[<>=!~\[ ;]", dep)[0]) for dep in project["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(imported_top_level_modules()):
        names = {normalise(d) for d in distributions.get(module, [module])}
        if not names & declared:
            missing[module] = sorted(names)
    assert not missing, f"imported but not in [project] dependencies: {missing}"
    lightning = next(dep for dep in project["dependencies"] if normalise(dep).startswith("lightning"))
    assert ">=2.6" in lightning  # the EMA callback subclasses WeightAveraging (Lightning 2.6)
