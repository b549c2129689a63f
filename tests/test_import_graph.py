"""The package's import graph: no cycles among dropkit's modules, and the core never imports the lab.

Read from the source with ``ast``, twice: the module-level imports (what loading a module loads), and every
import including function-local ones (a cycle hidden by moving an import into a function is still a cycle of
responsibilities). ``from a.b import c`` counts as an import of ``a.b.c`` when that is a module, else of
``a.b``; a module's own parent packages are not counted (Python loads them, but they are not a dependency the
module chose).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "dropkit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


#: the command line is the lab's front door: it may load the lab's commands (when the parser is built)
FRONT_ENDS = {"dropkit.cli": {"dropkit.lab.cli"}}


def _imports(path: Path, name: str, known: set[str], *, module_level: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body if module_level else [tree]:
        # module level: top-level statements, including imports under a top-level if/try
        walk = ast.walk(node) if not module_level or isinstance(node, (ast.If, ast.Try)) else [node]
        for sub in walk:
            if isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = package.rsplit(".", sub.level - 1)[0] if sub.level > 1 else package
                    base = f"{base}.{sub.module}" if sub.module else base
                else:
                    base = sub.module or ""
                for alias in sub.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in known else base)
    return {m for m in found if m in known and m != name}


def _graph(*, module_level: bool = True) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known, module_level=module_level) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_known_edges():
    graph = _graph()
    assert "dropkit.lab.config" in graph["dropkit.lab.train"]
    assert "dropkit.registry" in graph["dropkit"]


def test_no_import_cycles_among_dropkit_modules():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_no_cycles_even_through_function_local_imports():
    cycle = _find_cycle(_graph(module_level=False))
    assert cycle is None, "import cycle through a function-local import: " + " → ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def _is_lab(name: str) -> bool:
    return name == "dropkit.lab" or name.startswith("dropkit.lab.")


def test_the_core_does_not_import_the_lab():
    offenders = {name: sorted(m for m in deps if _is_lab(m) and m not in FRONT_ENDS.get(name, ()))
                 for name, deps in _graph(module_level=False).items() if not _is_lab(name)}
    assert not {k: v for k, v in offenders.items() if v}
    assert not any(_is_lab(m) for m in _graph()["dropkit.cli"]), "the front end loads the lab only when asked"


def test_config_and_report_load_neither_torch_nor_the_trainer():
    modules, graph = _modules(), _graph()
    for start in ("dropkit.lab.config", "dropkit.lab.report"):
        reached, todo = set(), [start]
        while todo:  # every dropkit module it loads at import time, transitively
            name = todo.pop()
            if name not in reached:
                reached.add(name)
                todo.extend(graph[name])
        assert "dropkit.lab.train" not in reached and "dropkit" not in reached, (start, sorted(reached))
        for name in reached:
            tree = ast.parse(modules[name].read_text())
            top = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
            top |= {n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)}
            assert not {m for m in top if m == "torch" or m.startswith("torch.")}, f"{start} loads torch via {name}"


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("dropkit")):
                offenders += [f"{name}: from {node.module} import {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offenders
