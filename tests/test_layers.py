"""The layers of the whole package, read from the source with ``ast``.

* No module imports from a layer above its own (anywhere in its code, functions included),
  layers bottom up: engine, converters, data (and the bundled sample), kernels, explainers,
  integrations and metrics, evaluation, audit, cli. The package's ``__init__``/``__main__``
  (the public names, the command) sit on top.
* The module-level imports (``if TYPE_CHECKING:`` blocks aside) have no cycle.
* No comparison with a method's name outside the methods' own modules (fastfem/explainers/):
  callers read the `fastfem.explainers.method.Method` record and the explainer instead.
* No module above ``MAX_MODULE_LINES`` lines: a module longer than that does more than one job.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from fastfem.explainers.registry import METHODS

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {
    "engine": 0,
    "converters": 1,
    "data": 2,
    "sample": 2,
    "kernels": 3,
    "explainers": 4,
    "integrations": 5,
    "metrics": 5,
    "evaluation": 6,
    "audit": 7,
    "cli": 8,
}
TOP = 9  # fastfem/__init__.py, __main__.py
MAX_MODULE_LINES = 500


def module_files() -> dict[str, Path]:
    """Module name -> file, for fastfem/ and converters/ (installed as fastfem.converters)."""
    out = {}
    for folder, package in (
        (ROOT / "fastfem", "fastfem"),
        (ROOT / "converters", "fastfem.converters"),
    ):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((package, *parts))] = path
    return out


def layer(module: str) -> int:
    parts = module.split(".")
    return TOP if len(parts) < 2 or parts[1] == "__main__" else LAYERS[parts[1]]


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if path.name == "__init__.py" else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imports(module: str, path: Path, module_level: bool, known: set[str] = frozenset()) -> set[str]:
    """The fastfem modules ``module`` imports (only at module level, out of TYPE_CHECKING
    blocks, with ``module_level``). ``from fastfem import __version__`` is no dependency."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes: list[ast.AST] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if _type_checking(node):
            continue
        nodes.append(node)
        if not module_level or isinstance(node, (ast.If, ast.Try)):
            todo.extend(ast.iter_child_nodes(node))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            if base == "fastfem" and all(a.name == "__version__" for a in node.names):
                continue
            # `from fastfem.audit import reliance` imports the module fastfem.audit.reliance
            found.update(
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            )
    return {name for name in found if name == "fastfem" or name.startswith("fastfem.")}


def test_no_module_imports_from_a_layer_above():
    upward = []
    for module, path in module_files().items():
        for target in imports(module, path, module_level=False):
            if layer(target) > layer(module):
                upward.append(f"{module} -> {target}")
    assert upward == [], upward


def test_module_level_imports_have_no_cycle():
    files = module_files()
    graph = {
        m: {t for t in imports(m, p, True, set(files)) if t in files and t != m}
        for m, p in files.items()
    }
    assert "fastfem.explainers.fam.steps" in graph["fastfem.explainers.fam.explainer"]
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        raise AssertionError("import cycle: " + " -> ".join(err.args[1])) from None


def method_name_comparisons(path: Path, names: set[str]) -> list[str]:
    """``file:line`` of every comparison with a method name: ``x == "fam"``, ``"fem" in y``...
    ``mean`` is also a fusion rule and a baseline: for it only comparisons of an expression
    that names a method (``args.method != "mean"``) count."""
    source = path.read_text()
    hits = []
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        consts = [o for o in operands if isinstance(o, ast.Constant) and o.value in names]
        for const in consts:
            others = " ".join(ast.get_source_segment(source, o) or "" for o in operands)
            if const.value != "mean" or "method" in others:
                hits.append(f"{path}:{node.lineno}")
    return hits


def test_no_method_name_comparison_outside_the_methods():
    names = {m.name for m in METHODS}
    assert {"fem", "mlfem", "fam"} <= names
    explainers = ROOT / "fastfem" / "explainers"
    hits = [
        hit
        for path in module_files().values()
        if explainers not in path.parents
        for hit in method_name_comparisons(path, names)
    ]
    assert hits == [], hits


def test_method_name_comparisons_are_found(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(
        'if args.method == "fam": pass\nif "fem" != m: pass\n'
        'if fusion == "mean": pass\nif plan.method != "mean": pass\n'
    )
    hits = method_name_comparisons(path, {"fam", "fem", "mean"})
    assert [h.rsplit(":", 1)[1] for h in hits] == ["1", "2", "4"]


def test_no_module_is_longer_than_the_limit():
    lengths = {m: len(p.read_text().splitlines()) for m, p in module_files().items()}
    assert len(lengths) > 100 and max(lengths.values()) > MAX_MODULE_LINES // 2
    assert {m: n for m, n in lengths.items() if n > MAX_MODULE_LINES} == {}
