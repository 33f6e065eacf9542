"""The import graph of ``converters/`` (installed as ``fastfem.converters``), read from the source.

Every import statement of every module is parsed with ``ast`` (module level and inside
functions), resolved to a module name, and checked:

* the graph of imports between converters modules has no cycle;
* the shared Keras helpers (`fastfem.converters.keras`), Keras 2 loading (`keras2`) and the CPU
  convolution forms (`cpu_convs`) import no other converters module (beyond, for `cpu_convs`,
  its own modules), and only `load` imports more than one front-end;
* no converters module imports the explainers, the audit or the evaluation code.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "fastfem.converters"
FORBIDDEN = ("fastfem.explainers", "fastfem.audit", "fastfem.evaluate", "fastfem.evaluation")

#: Front-end modules: each takes one kind of model; only `load` may import several of them.
FRONT_ENDS = {"keras_jax", "tf_models", "savedmodel", "flax", "export"}


def module_files() -> dict[str, Path]:
    """``fastfem.converters[.sub].name`` -> its file, for every module under converters/."""
    out = {}
    for path in sorted((ROOT / "converters").rglob("*.py")):
        parts = path.relative_to(ROOT / "converters").with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join((PACKAGE, *parts))] = path
    return out


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name a ``from ... import`` names (before its imported names)."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if _is_package(path) else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Imports(ast.NodeVisitor):
    """Every imported module name, with the name of the function it is imported in (or None)."""

    def __init__(self, module: str, path: Path, known: set[str]):
        self.module, self.path, self.known = module, path, known
        self.found: list[tuple[str, str | None]] = []
        self._function: list[str] = []

    def _visit_function(self, node: ast.AST) -> None:
        self._function.append(node.name)
        self.generic_visit(node)
        self._function.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def _add(self, name: str) -> None:
        self.found.append((name, self._function[0] if self._function else None))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.module, self.path, node)
        for alias in node.names:
            # `from . import keras` imports the module fastfem.converters.keras
            full = f"{base}.{alias.name}"
            self._add(full if full in self.known else base)


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, str | None]]:
    visitor = _Imports(module, path, known)
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor.found


def import_graph() -> dict[str, set[str]]:
    """converters module -> the converters modules it imports (anywhere in its code)."""
    files = module_files()
    known = set(files)
    graph = {}
    for module, path in files.items():
        targets = {name for name, _ in imports_of(module, path, known)}
        graph[module] = {t for t in targets if t in known and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def short(module: str) -> str:
    """``fastfem.converters.x.y`` -> ``x.y``; the package itself -> ``__init__``."""
    return "__init__" if module == PACKAGE else module.removeprefix(PACKAGE + ".")


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_function_level_and_relative_imports_are_read(tmp_path):
    pkg = tmp_path / "sub"
    pkg.mkdir()
    path = pkg / "mod.py"
    path.write_text(
        "from ..keras import x\nfrom . import other\n"
        "def f():\n    from ...explainers.fem import FEM\n    import fastfem.audit\n"
    )
    known = {f"{PACKAGE}.keras", f"{PACKAGE}.sub.other"}
    found = imports_of(f"{PACKAGE}.sub.mod", path, known)
    assert found == [
        (f"{PACKAGE}.keras", None),
        (f"{PACKAGE}.sub.other", None),
        ("fastfem.explainers.fem", "f"),
        ("fastfem.audit", "f"),
    ]


def test_the_graph_is_read_from_the_real_modules():
    graph = import_graph()
    assert f"{PACKAGE}.cpu_convs.conv_forms" in graph
    assert f"{PACKAGE}.cpu_convs.depthwise" in graph[f"{PACKAGE}.cpu_convs.conv_forms"]
    assert f"{PACKAGE}.keras_jax" in graph[f"{PACKAGE}.load"]


def test_converters_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in converters/: " + " -> ".join(map(short, cycle))


def test_shared_modules_import_no_other_converters_module():
    graph = import_graph()
    for name in ("keras", "keras2"):
        assert graph[f"{PACKAGE}.{name}"] == set(), (name, graph[f"{PACKAGE}.{name}"])
    for module, targets in graph.items():
        if short(module).startswith("cpu_convs"):
            outside = {t for t in targets if not short(t).startswith("cpu_convs")}
            assert outside == set(), (module, outside)


def test_only_load_dispatches_between_front_ends():
    graph = import_graph()
    for module, targets in graph.items():
        if short(module) in ("load", "__init__"):  # the dispatcher; the package's public names
            continue
        fronts = {short(t) for t in targets} & FRONT_ENDS
        assert fronts == set(), f"{short(module)} imports front-end(s) {sorted(fronts)}"


def test_converters_never_import_explainers_audit_or_evaluation():
    files = module_files()
    bad = []
    for module, path in files.items():
        for name, function in imports_of(module, path, set(files)):
            hit = name in FORBIDDEN or name.startswith(tuple(f + "." for f in FORBIDDEN))
            if hit:
                bad.append(f"{short(module)}:{function or '<module>'} imports {name}")
    assert bad == [], bad
