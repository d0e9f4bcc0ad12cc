"""House rules of the product packages (data_prep, trainables, sweeps, analysis), checked with `ast`.

1. Size: no file over 400 lines, no function over 60 lines. The two training loops (train_gan,
   train_classifier) are allowed longer on purpose: each reads top to bottom as one epoch loop.
   TEMPORARY_OFFENDERS names what sweeps/ and analysis/ still hold over the limits while they are
   rewritten; the test fails when an entry there no longer offends, so that list can only shrink
   (ALLOWED_LONG is permanent: a loop may shrink under the limit and stay listed).
2. No import circle among product modules. Counted: every `import` / `from ... import` anywhere in a
   module (top level, inside functions and classes, under `if TYPE_CHECKING`), relative ones resolved
   against the module's package. `from pkg import name` is an edge to `pkg.name` when that is a product
   module, else to `pkg`. Running a parent package's __init__ is not counted as an edge (every
   submodule would otherwise "import" its own package).
3. Tables with one home: the metric-name lists are one list (trainables.metric_names.METRIC_NAMES, which
   analysis.schema re-exports), and the arms and metric-name tables are importable without torch.
4. The training side (data_prep, trainables) never imports the analysis side.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_prep", "trainables", "sweeps", "analysis")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# long by design: one epoch loop each, read top to bottom (see their docstrings)
ALLOWED_LONG = {"trainables/gan/loop.py::train_gan", "trainables/classifier/loop.py::train_classifier"}
# TEMPORARY: sweeps/ and analysis/ are being rewritten (issue 14); whoever shrinks one removes its entry.
# A file entry is "path", a function entry "path::Qualified.name".
TEMPORARY_OFFENDERS: set[str] = set()
# TEMPORARY: copies of the metric-name list still to be replaced by analysis.schema.METRIC_NAMES itself
TEMPORARY_METRIC_COPIES: set[str] = set()


def _product_files():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function, nested ones included (Class.method, outer.inner)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}.{node.name}" if prefix else node.name
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, name)
        else:
            yield from _functions(node, prefix)


def offenders() -> dict[str, int]:
    """'path' -> lines of each file over the limit, 'path::qualname' -> lines of each function over it."""
    out: dict[str, int] = {}
    for path in _product_files():
        src = path.read_text()
        n = len(src.splitlines())
        if n > MAX_FILE_LINES:
            out[_rel(path)] = n
        for name, node in _functions(ast.parse(src)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out[f"{_rel(path)}::{name}"] = n
    return out


def test_no_file_or_function_over_the_limits():
    found = offenders()
    new = {k: v for k, v in found.items() if k not in ALLOWED_LONG | TEMPORARY_OFFENDERS}
    assert not new, (f"over {MAX_FILE_LINES} lines per file / {MAX_FUNCTION_LINES} per function "
                     f"(split at a seam): {new}")


def test_temporary_allowlist_only_shrinks():
    stale = sorted(TEMPORARY_OFFENDERS - set(offenders()))
    assert not stale, f"no longer over the limits: remove from TEMPORARY_OFFENDERS in tests/test_house.py: {stale}"
    assert all(k.startswith(("sweeps/", "analysis/")) for k in TEMPORARY_OFFENDERS)


# ---- imports ----------------------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Product module -> the product modules it imports (anywhere in the file; see the module docstring)."""
    files = {_module_name(p): p for p in _product_files()}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:  # `import a.b.c` of a non-product c: the nearest product module
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_circle_among_product_modules():
    graph = import_graph()
    assert graph["trainables.classifier.config"], "the graph builder found no imports: it is broken"
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_nothing_imports_upwards():
    """sweeps -> trainables -> data_prep; analysis apart (it may read the data and trainables' pure tables)."""
    order = {"data_prep": 0, "trainables": 1, "sweeps": 2}
    bad = [(m, t) for m, ts in import_graph().items() for t in ts
           if m.split(".")[0] in order and t.split(".")[0] in order and order[t.split(".")[0]] > order[m.split(".")[0]]]
    assert not bad, bad


# ---- tables with one home ---------------------------------------------------------------------------------
def _no_torch(code: str) -> None:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; bad = [m for m in ('torch', 'ray') "
                          "if m in sys.modules]; assert not bad, bad"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_arms_and_metric_name_tables_are_pure_python():
    _no_torch("import trainables.arms, trainables.metric_names")


def test_the_training_side_never_imports_the_analysis_side():
    bad = [(m, t) for m, ts in import_graph().items() for t in ts
           if m.split(".")[0] in ("data_prep", "trainables") and t.split(".")[0] == "analysis"]
    assert not bad, bad


def test_metric_name_lists_are_the_schema_list():
    import importlib

    from analysis import schema
    from trainables.metric_names import METRIC_NAMES
    from trainables.metrics import classification

    assert classification.METRIC_KEYS is METRIC_NAMES and schema.METRIC_NAMES is METRIC_NAMES
    for dotted in sorted(TEMPORARY_METRIC_COPIES):
        mod, _, name = dotted.rpartition(".")
        copy = getattr(importlib.import_module(mod), name)
        assert list(copy) == METRIC_NAMES, dotted
        assert copy is not METRIC_NAMES, f"{dotted} is the schema's list now: remove it from TEMPORARY_METRIC_COPIES"
