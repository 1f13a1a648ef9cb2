"""The shape of ablate/ itself (docs/architecture.md): no import cycle, small modules, short functions.

How to run:
    .venv/bin/python -m pytest -q tests/test_architecture.py     # a second: ast only, nothing imported

Every module of ablate/ is parsed (never imported) and these rules are checked:
- Layers: ablate/'s subpackages are floors (LAYERS, bottom first) and a module imports only its own
  floor and those below it, imports inside functions included; so no cycle between packages either.
- Training stays behind workflows/ and cli/: scoring/, optimize/ and fidelity/ read what training left in the
  pool and speak the study's vocabulary (ablate/study/), but never import ablate.train.
- No import cycle between ablate modules, counting imports inside functions too: an import
  inside a function is for start-up time (torch behind the CLI), never to hide a cycle.
  An edge is what the statement names: `import a.b` and `from a.b import x` depend on a.b;
  `from a import b` depends on a and, if a.b is a module, on a.b.
- No private name (`_x`) imported from another ablate module: what a module lends is public.
- Faces: each subpackage's __init__.py is its docstring only (no __all__, no imports): names are imported
  from the module that defines them.
- No module over MAX_MODULE_LINES lines.
- No function (methods and nested functions included) over MAX_FUNCTION_LINES lines, from its
  `def` line to its last line, unless it says why: a comment line starting with `# long:`
  between its `def` line and its first statement after the docstring, e.g.
      def run_training(...):
          \"\"\"...\"\"\"
          # long: one loop read top to bottom; its steps are already helpers
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ablate"
# The floors of ablate/, bottom first (docs/architecture.md says what each holds). The root package (its
# version) and __main__ (the entry point) stand outside them.
LAYERS = ("core", "store", "data", "models", "study", "train", "scoring", "optimize", "fidelity", "workflows", "cli")
OUTSIDE = ("ablate", "ablate.__main__")
# Floors above train that must not import it: they score, rank and judge members; workflows/ and cli/ train them.
TRAINING_FREE = ("scoring", "optimize", "fidelity")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_MARK = "# long:"


def _modules() -> dict[str, Path]:
    """{dotted module name: file} for every .py under ablate/ (a package is its __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """The dotted names an import statement names (not yet filtered to ablate's modules)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's package (a package's __init__ is its own package)
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """{module: the ablate modules it imports anywhere in its file, functions included}."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for target in _imported(name, path.name == "__init__.py", node):
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> str | None:
    """The floor a module lives on (`ablate.scoring.proxies.base` -> scoring); None outside the floors."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (floor) -> b (higher floor)' for every import that climbs; a module on no floor is reported too."""
    out = []
    for module, targets in sorted(graph.items()):
        if module in OUTSIDE:
            continue
        here = layer_of(module)
        if here is None:
            out.append(f"{module}: on no floor (put it in one of {', '.join(LAYERS)})")
            continue
        for target in sorted(targets):
            there = layer_of(target)
            if there is not None and LAYERS.index(there) > LAYERS.index(here):
                out.append(f"{module} ({here}) -> {target} ({there})")
    return out


def training_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a (floor) -> ablate.train.x' for every import of training from a floor that must not train."""
    return [f"{module} ({layer_of(module)}) -> {target}" for module, targets in sorted(graph.items())
            if layer_of(module) in TRAINING_FREE for target in sorted(targets) if layer_of(target) == "train"]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path a -> ... -> a) per strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_in(graph, group) for group in groups]


def _path_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the group's first module, staying inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return sorted(group)  # unreachable for a strongly connected group


def _says_why(lines: list[str], fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    body = fn.body
    first = body[1] if (len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                        and isinstance(body[0].value.value, str)) else body[0]
    return any(line.strip().startswith(LONG_MARK) for line in lines[fn.lineno - 1:first.lineno - 1])


def long_functions() -> list[str]:
    """'module.function: N lines' for every function over the limit that does not say why."""
    out = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and not _says_why(lines, node):
                    out.append(f"{name}.{node.name} ({path.name}:{node.lineno}): {n} lines")
    return sorted(out)


def test_no_import_cycle_between_ablate_modules():
    found = cycles(import_graph())
    assert not found, "import cycles (imports inside functions included):\n" + "\n".join(
        " -> ".join(c) for c in found)


def test_imports_only_go_down_the_floors():
    found = upward_imports(import_graph())
    assert not found, f"imports that climb the floors {' < '.join(LAYERS)}:\n" + "\n".join(found)


def test_scoring_optimize_and_fidelity_never_import_training():
    found = training_imports(import_graph())
    assert not found, f"{', '.join(TRAINING_FREE)} import ablate.train (move the name to ablate/study/):\n" + "\n".join(found)


def _defines(path: Path, name: str) -> bool:
    """Whether a module binds `name` at its top level (def, class, assignment or import)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)) and any((a.asname or a.name) == name for a in node.names):
            return True
    return False


def face(layer: str) -> tuple[str | None, list[str]]:
    """A floor's __init__: its docstring, and every statement after it (unparsed)."""
    tree = ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    rest = tree.body[1:] if doc else tree.body
    return doc, [ast.unparse(node) for node in rest]


def test_every_floor_has_a_face_that_only_says_what_it_holds():
    """Each subpackage's __init__ is a docstring (its concern, what it may import) and nothing else: no __all__,
    no imports, no names. Nothing imported names through a face (0 uses of 201 names, issue 42), so callers
    import each name from the module that defines it (`from ablate.store.pool import Pool`), and loading a
    floor's one module never loads the rest of the floor (`ablate --help` stays free of torch and duckdb)."""
    for layer in LAYERS:
        doc, rest = face(layer)
        assert doc, f"ablate/{layer}/__init__.py has no docstring"
        assert not rest, (f"ablate/{layer}/__init__.py does more than say what the floor holds (import names from "
                          f"their modules instead): {rest}")


def private_imports() -> list[str]:
    """'module: from other import _name' for every private name an ablate module takes from another one."""
    modules = _modules()
    out = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = _imported(name, path.name == "__init__.py", node)[0]
            for alias in node.names:
                if (base in modules and base != name and alias.name.startswith("_")
                        and not alias.name.startswith("__")):
                    out.append(f"{name}: from {base} import {alias.name}")
    return sorted(out)


def test_no_private_name_crosses_modules():
    found = private_imports()
    assert not found, "private names imported across modules (make them public or keep them home):\n" + "\n".join(found)


def test_no_module_over_the_size_limit():
    big = [f"{name}: {n} lines" for name, path in _modules().items()
           if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(big)


def test_no_long_function_without_a_reason():
    long = long_functions()
    assert not long, (f"functions over {MAX_FUNCTION_LINES} lines without a `{LONG_MARK} <reason>` comment "
                      f"before their first statement:\n" + "\n".join(long))


def test_the_checks_see_what_they_must():
    """The rules catch what they are for: a cycle hidden in a function, a relative import, a long function."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    tree = ast.parse("def f():\n    from . import base\n    from .. import errors\n")
    names = [t for node in ast.walk(tree) for t in _imported("ablate.scoring.proxies.x", False, node)]
    assert "ablate.scoring.proxies.base" in names and "ablate.scoring.errors" in names
    planted = {"ablate.scoring.score": {"ablate.fidelity.calibrate", "ablate.core.errors"},
               "ablate.core.config": {"ablate.store.pool"}, "ablate.stray": set(), "ablate.__main__": {"ablate.cli.app"}}
    assert upward_imports(planted) == [
        "ablate.core.config (core) -> ablate.store.pool (store)",
        "ablate.scoring.score (scoring) -> ablate.fidelity.calibrate (fidelity)",
        "ablate.stray: on no floor (put it in one of " + ", ".join(LAYERS) + ")"]
    assert training_imports({"ablate.scoring.score": {"ablate.train.loop", "ablate.study.context"},
                             "ablate.workflows.steps": {"ablate.train.loop"}}) == [
        "ablate.scoring.score (scoring) -> ablate.train.loop"]
    body = "\n".join(f"    x = {i}" for i in range(70))
    marked, plain = (ast.parse(f'def f():\n    """doc"""\n{c}{body}\n').body[0]
                     for c in ("    # long: a reason\n", ""))
    assert _says_why(f'def f():\n    """doc"""\n    # long: a reason\n{body}'.splitlines(), marked)
    assert not _says_why(f'def f():\n    """doc"""\n{body}'.splitlines(), plain)
