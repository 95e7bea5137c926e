"""The one-way ladder, read from the source (ast), imports inside functions included.

Lowest first: jobs, core, audit, notifications, subscriptions, payments,
billing, maintenance; config above them all wires them together. Each app
imports only apps below it, so no two apps import each other, directly or
through others; `jobs` imports none of them (business apps register into it).
Production code never imports the test fakes, benchmarks or drills.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LADDER = [
    "jobs",
    "core",
    "audit",
    "notifications",
    "subscriptions",
    "payments",
    "billing",
    "maintenance",
]
TOP = "config"
NOT_PRODUCTION = {"tests", "bench", "reliability"}
# jobs/ is reworked on another branch; its function-level imports (django_q's
# modules that set Django up on import) are checked for direction only.
LAZY_COMMENT_EXEMPT = {"jobs"}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str
    in_function: bool

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module}"


def _imports(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(id(node) for node in ast.walk(fn) if node is not fn)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found += [Import(path, node.lineno, m, id(node) in inside) for m in modules]
    return found


def _sources(app: str) -> list[Path]:
    return sorted((ROOT / app).rglob("*.py"))


ALL = {app: [i for p in _sources(app) for i in _imports(p)] for app in [TOP, *LADDER]}


def _project_app(module: str) -> str:
    return module.split(".")[0]


def test_the_ladder_names_every_app_with_source():
    apps = {p.parent.name for p in ROOT.glob("*/apps.py")} - {TOP} | {"core"}
    assert apps == set(LADDER)
    assert all(ALL[app] for app in [TOP, *LADDER])  # the parser sees each app's imports


@pytest.mark.parametrize("app", LADDER)
def test_an_app_imports_only_apps_below_it(app):
    below = set(LADDER[: LADDER.index(app)])
    upward = [str(i) for i in ALL[app] if _project_app(i.module) in {TOP, *LADDER} - {app} - below]
    assert upward == [], f"{app} may import only {sorted(below) or 'no project app'}"


def test_jobs_imports_no_business_app():
    others = {TOP, *LADDER} - {"jobs"}
    assert [str(i) for i in ALL["jobs"] if _project_app(i.module) in others] == []


def test_no_two_apps_import_each_other():
    edges = {
        (app, _project_app(i.module))
        for app, found in ALL.items()
        for i in found
        if _project_app(i.module) in ALL and _project_app(i.module) != app
    }
    assert sorted((a, b) for a, b in edges if (b, a) in edges) == []


def test_production_never_imports_test_fakes_benchmarks_or_drills():
    found = [
        str(i) for found in ALL.values() for i in found if _project_app(i.module) in NOT_PRODUCTION
    ]
    assert found == []


def _says_lazy(imp: Import, lines: list[str]) -> bool:
    """A comment with "lazy" on the import's line, or on the comment and import
    lines right above it (one comment for a block of imports)."""
    index = imp.line - 1
    if "#" in lines[index] and "lazy" in lines[index].split("#", 1)[1].lower():
        return True
    index -= 1
    while index >= 0:
        text = lines[index].strip()
        if text.startswith("#"):
            if "lazy" in text.lower():
                return True
        elif not text.startswith(("from ", "import ")):
            return False
        index -= 1
    return False


def test_an_import_inside_a_function_says_why_it_is_lazy():
    unexplained = []
    for app, found in ALL.items():
        if app in LAZY_COMMENT_EXEMPT:
            continue
        for i in found:
            if i.in_function and not _says_lazy(i, i.path.read_text().splitlines()):
                unexplained.append(str(i))
    assert unexplained == [], "a real lazy load says so (# Lazy: why); no import dodges a circle"


def test_function_level_imports_are_seen():
    """The rule above is not vacuous: weasyprint's lazy import is found in a function."""
    pdf = [i for i in ALL["billing"] if i.path.name == "pdf.py" and i.in_function]
    assert {i.module for i in pdf} >= {"weasyprint"}
