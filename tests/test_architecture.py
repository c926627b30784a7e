"""The shape of the code, read from its source with ast: no import cycle (deferred imports included), no library
module importing the command line, a bottom module that imports no package, a thin pipeline.py, no sys.path edits."""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[1]
# The project's packages (every top-level folder with an __init__.py) and the command-line script.
PACKAGES = sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests",))
SCRIPT = "pipeline"
BOTTOM = "common"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> Dict[str, Path]:
    mods = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    mods[SCRIPT] = ROOT / f"{SCRIPT}.py"
    return mods


def _imports(name: str, path: Path, mods: Dict[str, Path]) -> Set[str]:
    """Project modules `name` imports anywhere in its source (top level, in functions, under TYPE_CHECKING)."""
    is_package = path.name == "__init__.py"
    found: Set[str] = set()

    def resolve(dotted: str) -> None:
        while dotted and dotted not in mods:
            dotted = dotted.rpartition(".")[0]
        if dotted and dotted != name:
            found.add(dotted)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:   # `from pkg import module` imports that module
                if f"{module}.{alias.name}" in mods:
                    resolve(f"{module}.{alias.name}")
                else:
                    resolve(module)
    return found


@lru_cache(maxsize=1)
def _graph() -> Dict[str, Set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _is_command_line(module: str) -> bool:
    return module == SCRIPT or module.rsplit(".", 1)[-1] in ("cli", "__main__")


def test_the_walk_finds_the_project_and_its_imports():
    graph = _graph()
    assert {"study", "detector", "classifier", "fusion", "reader", BOTTOM} <= set(PACKAGES)
    assert "reader.core" in graph["pipeline"] or "reader.folder" in graph["pipeline"]
    # deferred imports count: Reader.from_weights imports the stages inside the function
    assert {"classifier.predict", "fusion.model", "release.manifest"} <= graph["reader.core"]


def test_no_import_cycle_deferred_imports_included():
    assert _cycles(_graph()) == []


def test_a_cycle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_library_module_imports_the_command_line():
    graph = _graph()
    offenders = {m: sorted(d for d in deps if _is_command_line(d))
                 for m, deps in graph.items() if not _is_command_line(m) and not m.startswith("bench")}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_the_bottom_module_imports_no_package():
    graph = _graph()
    up = {m: sorted(d for d in deps if not d.startswith(BOTTOM))
          for m, deps in graph.items() if m.split(".")[0] == BOTTOM}
    assert {m: d for m, d in up.items() if d} == {}


def test_pipeline_is_thin():
    assert len((ROOT / f"{SCRIPT}.py").read_text(encoding="utf-8").splitlines()) < 200


def test_no_sys_path_edits_outside_tests():
    edits = []
    for path in [*_modules().values(), *(ROOT / "bench").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend")
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
                    and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"):
                edits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert edits == []
