"""crossjax's own imports form no cycle (import arrows point one way, see DESIGN.md).

Walks every module under crossjax/ with `ast`: module-level and function-level
`import crossjax...` and `from crossjax... import name` (relative imports resolved),
where `from pkg import name` imports `pkg.name` when that is a module, else `pkg`.
Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "crossjax"
MAX_CYCLES = 200


def module_files(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """{"crossjax.x.y": path} for every .py file under `root` (packages by __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """The crossjax modules that module `name` (file `path`) imports anywhere in its body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "crossjax":
                    out.add(_existing(alias.name, modules))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "crossjax":
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in modules else _existing(base, modules))
    out.discard(name)
    return out


def _existing(name: str, modules: set[str]) -> str:
    """The longest prefix of the dotted `name` that is a crossjax module."""
    parts = name.split(".")
    while parts and ".".join(parts) not in modules:
        parts.pop()
    return ".".join(parts) or name


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    names = set(files)
    return {name: imports_of(name, path, names) for name, path in files.items()}


def find_cycles(graph: dict[str, set[str]], limit: int = MAX_CYCLES) -> list[list[str]]:
    """Elementary cycles of `graph`, each as [a, b, ..., a] starting at its smallest
    node (so each is listed once), shortest first; at most `limit`."""
    cycles: list[list[str]] = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack and len(cycles) < limit:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ()), reverse=True):
                if nxt == start:
                    cycles.append([*path, start])
                elif nxt > start and nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return sorted(cycles, key=lambda c: (len(c), c))


def test_find_cycles_reports_each_cycle_once():
    graph = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "a"], ["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_imports_of_resolves_from_imports_and_relative_imports(tmp_path):
    pkg = tmp_path / "crossjax"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "a.py", "sub/__init__.py", "sub/b.py"):
        (pkg / f).write_text("")
    (pkg / "sub" / "b.py").write_text(
        "from crossjax import a\nfrom . import c\n"
        "def f():\n    from crossjax.sub import THING\n    import crossjax.a.x\n"
        "if TYPE_CHECKING:\n    import crossjax.sub.c\n"
    )
    (pkg / "sub" / "c.py").write_text("from .b import g\n")
    graph = import_graph(pkg)
    assert graph["crossjax.sub.b"] == {"crossjax.a", "crossjax.sub.c", "crossjax.sub"}
    assert graph["crossjax.sub.c"] == {"crossjax.sub.b"}
    assert find_cycles(graph) == [["crossjax.sub.b", "crossjax.sub.c", "crossjax.sub.b"]]


def test_crossjax_imports_have_no_cycle():
    cycles = find_cycles(import_graph())
    if cycles:
        shown = "\n".join(" -> ".join(c) for c in cycles)
        pytest.fail(f"{len(cycles)} import cycle(s) in crossjax:\n{shown}", pytrace=False)
