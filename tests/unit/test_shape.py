"""The house's shape: small modules, short functions, no import cycle, a light SDK."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("federation", "site_agent", "policies", "training")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _sources(dirs=PACKAGES + ("tests", "bench", "dev")) -> list[Path]:
    files = [p for d in dirs for p in sorted((ROOT / d).rglob("*.py"))]
    return [p for p in files if "federation/v1/" not in p.as_posix()]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_no_module_is_too_long():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    assert long == []


def test_no_function_is_too_long():
    long = []
    for p in _sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert long == []


def _imports_at_load(tree: ast.Module, modules: set[str], package: str) -> set[str]:
    """Project modules this one imports at its top level, TYPE_CHECKING blocks included (a type-only
    cycle is still two modules that cannot be read apart)."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.If, ast.Try)):
                visit(stmt.body)
                visit(getattr(stmt, "orelse", []))
                for handler in getattr(stmt, "handlers", []):
                    visit(handler.body)
            elif isinstance(stmt, ast.Import):
                found.update(a.name for a in stmt.names if a.name in modules)
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - stmt.level + 1] + [base]).strip(".")
                for alias in stmt.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)
    visit(tree.body)
    return found & modules


def test_no_import_cycle():
    paths = {_module_name(p): p for p in _sources(PACKAGES)}
    modules = set(paths)
    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = _imports_at_load(ast.parse(path.read_text()), modules, package) - {name}
    cycles = []
    state: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # a package's __init__ importing its own submodules is loading, not a cycle
            if node.startswith(nxt + ".") and nxt in graph and node in graph[nxt]:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name, [name])
    assert cycles == []


def test_sdk_imports_no_scheduler_training_or_numpy():
    code = ("import sys, federation; federation.Client; federation.JobSpec; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'policies', 'training', 'numpy', 'ray'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
