"""The architecture the tree promises: the core imports no adapter (nor smp, nor albumentations),
the packages have no import circle (module-level or inside functions), and no file is over 600
lines."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tavaal_seg", "tavaal_cls")
MAX_LINES = 600
# what `import tavaal_seg.core` must not load
FORBIDDEN = ("tavaal_cls", "tavaal_seg.segmentation", "tavaal_seg.studies", "segmentation_models_pytorch",
             "albumentations")


def package_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside ``if TYPE_CHECKING:`` (never runs, so it makes no circle)."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``name`` imports anywhere in its file (module level, functions,
    methods), relative and absolute imports resolved. ``from pkg import x`` counts as importing
    ``pkg.x`` when that is a module, else ``pkg`` itself."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` names a.b.c; keep the longest prefix that is one of our modules
            parts = target.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                found.add(".".join(parts))
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path a -> b -> ... -> a, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_core_imports_no_adapter_in_a_fresh_interpreter():
    code = ("import json, sys; import tavaal_seg.core, tavaal_seg; "
            f"bad = [m for m in sys.modules if m.startswith({FORBIDDEN!r})]; "
            "print(json.dumps([sorted(bad), 'tavaal_seg.core' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "NO_ALBUMENTATIONS_UPDATE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    loaded, core_loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert core_loaded and loaded == [], f"importing tavaal_seg.core loaded {loaded}"


def test_the_boundary_check_sees_an_adapter_import():
    """The graph the boundary relies on: the segmentation adapter does import smp, and the core
    reaches none of the forbidden modules through any chain of imports."""
    modules = package_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert "tavaal_seg.segmentation.models.deeplab" in graph["tavaal_seg.segmentation.models"]
    reached, todo = set(), [m for m in modules if m.startswith("tavaal_seg.core")] + ["tavaal_seg"]
    while todo:
        node = todo.pop()
        if node not in reached:
            reached.add(node)
            todo.extend(graph[node])
    assert not [m for m in reached if m.startswith(FORBIDDEN)]


def test_no_import_circles():
    modules = package_modules()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 40 and "tavaal_seg.core.validation" in graph["tavaal_seg.core"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_function_level_and_relative_circles(tmp_path):
    """The checker itself: a circle closed by an import inside a function, written relatively."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py", "pkg.c": pkg / "c.py"}
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == set()
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_file_over_600_lines(package):
    long = {str(p.relative_to(REPO)): n for p in (REPO / package).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
