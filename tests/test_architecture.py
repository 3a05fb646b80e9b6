"""The import rules of docs/ARCHITECTURE.md, checked on the source (lazy imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("toolkit", "exporter", "forecaster", "trainer", "demo", "monitoring", "devkit", "tests", "benchmarks",
           "scripts")

# module prefix -> project modules it may never import (a prefix forbids the module and everything below it)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # The shared toolkit knows nothing of the project.
    "toolkit": ("exporter", "forecaster", "trainer", "demo", "monitoring"),
    # The exporter stands for real hosts: it knows nothing of forecasting.
    "exporter": ("forecaster", "trainer", "demo", "monitoring"),
    # The contract is shared by training and serving, so it cannot depend on either.
    "forecaster.contract": ("forecaster.serving", "forecaster.cli", "trainer", "demo", "monitoring", "exporter"),
    # Serving never trains.
    "forecaster": ("trainer", "demo", "monitoring", "exporter"),
    # Training uses the contract, never the online service.
    "trainer": ("forecaster.serving", "forecaster.cli", "demo", "monitoring", "exporter"),
    # The rules and dashboards generator reads signal definitions only.
    "monitoring": ("forecaster.serving", "forecaster.cli", "trainer", "demo", "exporter"),
    # Benchmarks and scripts are tools for users: nothing of theirs comes from the test suite; what tests
    # and benchmarks share (a fake Prometheus) is in devkit/, which serves both and imports neither.
    "devkit": ("tests", "benchmarks", "trainer", "demo", "monitoring"),
    "benchmarks": ("tests",),
    "scripts": ("tests",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str) -> set[str]:
    """Every module an import statement names, wherever it stands; relative imports resolved against ``module``."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from forecaster import serving`
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(module: str, imports: set[str]) -> list[str]:
    rules = [prefix for prefix in FORBIDDEN if _within(module, prefix)]
    return sorted({f"{module} imports {name}" for prefix in rules for name in imports
                   if any(_within(name, bad) for bad in FORBIDDEN[prefix])})


def project_files() -> list[Path]:
    return sorted(p for top in PROJECT if (ROOT / top).is_dir() for p in (ROOT / top).rglob("*.py"))


def test_the_checker_sees_lazy_relative_and_from_imports() -> None:
    source = "def f():\n    from forecaster.serving import store\n    from . import x\nimport trainer.cli\n"
    found = imported_modules(source, "forecaster.contract.model")
    assert {"forecaster.serving.store", "forecaster.contract.x", "trainer.cli"} <= found
    assert violations("forecaster.contract.model", found) == [
        "forecaster.contract.model imports forecaster.serving",
        "forecaster.contract.model imports forecaster.serving.store",
        "forecaster.contract.model imports trainer.cli",
    ]
    assert violations("forecaster.serving.cycle", {"forecaster.contract.panel", "toolkit.http"}) == []


def test_every_package_the_rules_name_exists() -> None:
    for prefix in FORBIDDEN:
        path = ROOT / Path(*prefix.split("."))
        assert path.is_dir(), prefix


def test_no_module_breaks_an_import_rule() -> None:
    broken = [v for path in project_files()
              for v in violations(module_name(path), imported_modules(path.read_text(), module_name(path)))]
    assert not broken, "\n".join(broken)
