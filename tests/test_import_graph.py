"""Dependencies point one way: models <- pipeline <- training / service <- whatsapp / web <- app.py.

Every import in the source, including the ones inside functions, is read with ``ast``: a lazy import is
still a dependency."""

from __future__ import annotations

import ast

import pytest
from conftest import REPO_ROOT

PACKAGES = ("models", "pipeline", "db", "training", "service", "whatsapp", "web")
# what each package may import, besides itself
ALLOWED = {
    "models": set(),
    "db": set(),
    "pipeline": {"models"},
    "training": {"pipeline", "models"},
    "service": {"pipeline", "models", "db"},
    "whatsapp": {"service", "pipeline", "db"},
    "web": {"service", "whatsapp", "pipeline", "db"},
}


def imports_of(package: str) -> dict[str, set[str]]:
    """file -> the project packages it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(REPO_ROOT))] = names & set(PACKAGES)
    return out


@pytest.mark.parametrize("package", list(ALLOWED))
def test_dependencies_point_one_way(package):
    wrong = {f: sorted(deps - ALLOWED[package] - {package}) for f, deps in imports_of(package).items()}
    wrong = {f: d for f, d in wrong.items() if d}
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}: {wrong}"


def test_runtime_never_imports_training_or_integrations():
    for package in ("pipeline", "models", "db"):
        for f, deps in imports_of(package).items():
            assert not deps & {"training", "service", "whatsapp", "web"}, (f, deps)


def test_no_cycles_between_packages():
    graph = {p: set().union(*imports_of(p).values()) - {p} for p in PACKAGES}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph[start])

    assert not [p for p in PACKAGES if reaches(p, p, {p})]
