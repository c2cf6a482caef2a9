"""The package's layering rules, read from its imports (function-body imports included).

Every import points down a short stack (``LAYERS``, bottom first) or sideways within a
layer, never up; no two sub-packages or top-level modules import each other, directly or
round a longer cycle; no module imports itself back through others; the foundation
imports nothing above it; no module is over ``MAX_LINES`` lines unless ``LONG_MODULES``
says why. Imports under ``if __name__ == "__main__":`` are a script's way in (the
dispatcher, :mod:`virtual_ihc.cli`), and ``if TYPE_CHECKING:`` imports never run: neither
counts.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("virtual_ihc", "data_prep")

#: units (sub-packages and top-level modules) by layer, bottom first
LAYERS = [
    # foundation: file and slide I/O, tile-grid geometry, pixel conversions, errors, command runtime
    {"virtual_ihc.errors", "virtual_ihc.runtime", "virtual_ihc.io", "virtual_ihc.grid", "virtual_ihc.pixels"},
    # settings and the histology domain core
    {"virtual_ihc.config", "virtual_ihc.weights", "virtual_ihc.histology"},
    # networks, losses, export
    {"virtual_ihc.models", "virtual_ihc.losses", "virtual_ihc.export"},
    # slides before training, the training input
    {"virtual_ihc.data", "virtual_ihc.slides"},
    # training, inference, evaluation, the NST baseline, the viewer, the readout of a virtual slide
    {"virtual_ihc.training", "virtual_ihc.inference", "virtual_ihc.evaluation", "virtual_ihc.nst",
     "virtual_ihc.viewer", "virtual_ihc.readout"},
    # experiments and data preparation commands
    {"virtual_ihc.experiments", "data_prep"},
    # the dispatcher and the script entries
    {"virtual_ihc.cli", "virtual_ihc.stain", "virtual_ihc"},
]
MAX_LINES = 450
#: modules allowed over MAX_LINES, with the one concept that needs the length
LONG_MODULES = {
    "virtual_ihc/data/synthetic.py": "the procedural tissue model: one layout of nuclei, stroma and glass, "
                                     "stained as H&E and as Ki-67; its parts only make sense together",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _skipped(node: ast.If) -> bool:
    """``if __name__ == "__main__":`` (a script's way in) and ``if TYPE_CHECKING:`` (never runs)."""
    test = ast.unparse(node.test)
    return test in ('__name__ == "__main__"', "__name__ == '__main__'", "TYPE_CHECKING")


def imports_of(name: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, in a function body)`` for every package import of module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _skipped(child):
                continue
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets = []
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - child.level + 1] + ([base] if base else []))
                # "from package import module" imports the module
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in child.names]
            for target in targets:
                if target.split(".")[0] in PACKAGES:
                    while target not in MODULES:  # "import a.b.c" where c is a name: the module a.b
                        target = target.rpartition(".")[0]
                    found.append((target, child.lineno, in_function))
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def unit_of(name: str) -> str:
    """The sub-package or top-level module a module belongs to (``virtual_ihc.data.index`` -> ``virtual_ihc.data``)."""
    parts = name.split(".")
    if parts[0] == "data_prep":
        return "data_prep"
    return ".".join(parts[:2]) if len(parts) > 1 else name


def layer_of(unit: str) -> int:
    return next(index for index, units in enumerate(LAYERS) if unit in units)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node, or a node importing itself (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_every_unit_has_a_layer():
    units = {unit_of(name) for name in MODULES}
    assert units <= set().union(*LAYERS), units - set().union(*LAYERS)


def test_imports_point_down_or_sideways_never_up():
    upward = [f"{name}:{line} imports {target}" for name, edges in GRAPH.items() for target, line, _ in edges
              if layer_of(unit_of(target)) > layer_of(unit_of(name))]
    assert upward == []


def test_no_two_units_import_each_other_directly_or_round_a_cycle():
    units: dict[str, set[str]] = {}
    for name, edges in GRAPH.items():
        units.setdefault(unit_of(name), set()).update(unit_of(target) for target, _, _ in edges
                                                      if unit_of(target) != unit_of(name))
    assert cycles(units) == []


def test_no_module_imports_itself_back_through_others():
    modules = {name: {target for target, _, _ in edges if target != name} for name, edges in GRAPH.items()}
    # a package's __init__ re-exporting its modules is not a cycle of the modules that import the package
    assert cycles(modules) == []


def test_the_foundation_imports_only_the_foundation():
    foundation = LAYERS[0]
    offending = [f"{name}:{line} imports {target}" for name, edges in GRAPH.items() if unit_of(name) in foundation
                 for target, line, _ in edges if unit_of(target) not in foundation]
    assert offending == []


def test_inference_imports_no_slide_preparation_and_no_test_helper():
    offending = [f"{name}:{line} imports {target}" for name, edges in GRAPH.items()
                 if name.startswith("virtual_ihc.inference") for target, line, _ in edges
                 if target.startswith("virtual_ihc.slides")]
    assert offending == []
    for path in MODULES.values():
        assert "tests_support" not in path.read_text() and "conftest" not in path.read_text(), path


def test_function_body_imports_of_the_package_say_why():
    unexplained = []
    for name, edges in GRAPH.items():
        lines = MODULES[name].read_text().splitlines()
        for target, line, in_function in edges:
            if in_function and "#" not in lines[line - 1] and not lines[line - 2].strip().startswith("#"):
                unexplained.append(f"{name}:{line} imports {target}")
    assert unexplained == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_longer_than_the_limit(name):
    path = MODULES[name].relative_to(ROOT).as_posix()
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES or path in LONG_MODULES, f"{path}: {lines} lines"


def test_the_long_module_allow_list_is_current():
    for path, reason in LONG_MODULES.items():
        assert reason and len((ROOT / path).read_text().splitlines()) > MAX_LINES, path


def test_the_dispatcher_imports_no_subcommand_and_no_tensorflow():
    assert {target for target, _, _ in GRAPH["virtual_ihc.cli"]} <= {"virtual_ihc.runtime"}
    code = "import sys, virtual_ihc.cli; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.split() == ["False", "False"]
