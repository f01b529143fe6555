"""The import contract: which part of flatminima may import which (docs/architecture.md draws it).

Every module under src/flatminima is parsed with ``ast`` (nothing is imported), each ``import`` (at the
top or inside a function: a lazy import is still a dependency) is resolved to a flatminima module, and
modules are grouped into *parts*: a top-level module (``track``, ``objective_base``...) or a subpackage
(``sharpness``, ``study``...). Imports under ``if TYPE_CHECKING:`` are for annotations only and are left
out. The rules:

1. every part has a layer in :data:`LAYERS`, and imports only parts of lower layers; the core (layer 0)
   imports only the core (its modules import each other freely, without cycles);
2. nothing but the CLI (and ``__main__``) imports ``flatminima.cli``;
3. the terminal libraries stay at the edges: ``typer`` only in the CLI, ``rich`` only in the CLI and in
   ``progress`` (the one place progress bars are drawn, and they are off unless asked for);
4. the part graph has no cycle.

A new part must be given a layer here (and a line in docs/architecture.md): the test names it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "flatminima"
ROOT = "flatminima"

CORE = {"errors", "jsonable", "statistics", "progress", "pointwise", "objective", "objective_base",
        "objective_data", "objective_function", "objective_hvp", "objective_memory"}

LAYERS: dict[str, int] = {
    **dict.fromkeys(CORE, 0),  # the Objective and what it stands on; no algorithm
    # base: the package face, plotting, data sets, model zoo, the study store
    **dict.fromkeys(("flatminima", "plotting", "data", "models", "store"), 1),
    **dict.fromkeys(("curvature", "toy", "train"), 2),  # algorithms on an Objective; training
    **dict.fromkeys(("sharpness", "landscape", "workflow", "distributed"), 3),  # built on curvature/train
    **dict.fromkeys(("track", "report", "lab"), 4),  # measures in a loop, the report, the toy-lab experiments
    **dict.fromkeys(("dynamics", "study", "claims"), 5),  # jobs: tracked dynamics, studies, the claims
    "integrations": 6,  # Lightning / Hugging Face callbacks over track and dynamics
    "cli": 7,
    "__main__": 8,
}

TERMINAL = {"typer": {"cli"}, "rich": {"cli", "progress"}}  # third-party name -> the parts that may import it

KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()  # (part, imported part) edges tolerated for now: none


# ---- building the graph ------------------------------------------------------------------------------------
def _modules(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``src`` (a package is its ``__init__``)."""
    out = {}
    for f in sorted(src.rglob("*.py")):
        parts = [ROOT, *f.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(module: str, source: str, is_package: bool, known: Iterable[str]) -> tuple[set[str], set[str]]:
    """(flatminima modules, top-level third-party names) that ``source`` imports."""
    known = set(known)
    tree = ast.parse(source)
    skip = _type_checking_nodes(tree)
    here = module.split(".") if is_package else module.split(".")[:-1]
    inner, outer = set(), set()

    def add(name: str) -> None:
        if name == ROOT or name.startswith(ROOT + "."):
            while name not in known and "." in name:  # an attribute of a module: the module
                name = name.rpartition(".")[0]
            inner.add(name)
        else:
            outer.add(name.split(".")[0])

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:  # `from pkg import sub` imports the module pkg.sub when there is one
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return inner, outer


def part(module: str) -> str:
    """The part a module belongs to: its top-level module or subpackage under flatminima (or the root)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ROOT


def build_graph(modules: Mapping[str, str], packages: Iterable[str] = ()) -> tuple[dict, dict]:
    """``modules``: dotted name -> source. Returns (part -> {imported part: example module edge},
    part -> {third-party name: example module})."""
    packages = set(packages)
    graph: dict[str, dict[str, str]] = {}
    third: dict[str, dict[str, str]] = {}
    for name, source in modules.items():
        inner, outer = imports_of(name, source, name in packages, modules)
        p = part(name)
        graph.setdefault(p, {})
        third.setdefault(p, {})
        for target in inner:
            q = part(target)
            if q != p:
                graph[p].setdefault(q, f"{name} -> {target}")
        for lib in outer:
            third[p].setdefault(lib, name)
    return graph, third


def find_cycles(graph: Mapping[str, Mapping[str, str]]) -> list[list[str]]:
    """Every strongly connected set of two or more parts (each sorted), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def violations(graph: Mapping[str, Mapping[str, str]], third: Mapping[str, Mapping[str, str]],
               layers: Mapping[str, int] = LAYERS, exceptions: set[tuple[str, str]] = KNOWN_EXCEPTIONS) -> list[str]:
    """Every breach of the contract (the module docstring's rules), one line each."""
    found = []
    for p in sorted(graph):
        if p not in layers:
            found.append(f"{p}: a part with no layer; give it one in LAYERS and a line in docs/architecture.md")
            continue
        for q, edge in sorted(graph[p].items()):
            if (p, q) in exceptions:
                continue
            if q == "cli" and p not in ("cli", "__main__"):
                found.append(f"{p} imports the CLI ({edge}): the library knows no screen")
            elif q not in layers:
                found.append(f"{p} imports {q}, a part with no layer ({edge})")
            elif layers[p] == 0 and layers[q] != 0:
                found.append(f"core module {p} imports {q} ({edge}): the core imports only the core")
            elif layers[p] != 0 and layers[q] >= layers[p]:
                found.append(f"{p} (layer {layers[p]}) imports {q} (layer {layers[q]}) ({edge}): only lower layers")
    for p in sorted(third):
        for lib, where in sorted(third[p].items()):
            if lib in TERMINAL and p not in TERMINAL[lib]:
                found.append(f"{p} imports {lib} ({where}): only {sorted(TERMINAL[lib])} may")
    found += [f"import cycle between parts: {' <-> '.join(c)}" for c in find_cycles(graph)]
    return found


def _real_graph():
    files = _modules(SRC)
    packages = {m for m, f in files.items() if f.name == "__init__.py"}
    return build_graph({m: f.read_text() for m, f in files.items()}, packages)


# ---- the contract on the real code ---------------------------------------------------------------------------
def test_flatminima_keeps_its_import_contract():
    graph, third = _real_graph()
    assert violations(graph, third) == []


def test_every_part_has_a_layer_and_the_docs_list_it():
    graph, _ = _real_graph()
    assert set(graph) <= set(LAYERS), sorted(set(graph) - set(LAYERS))
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    missing = [p for p in LAYERS if p not in ("flatminima", "__main__") and f"`{p}" not in doc]
    assert missing == [], f"docs/architecture.md does not name {missing}"


def test_known_parts_are_where_the_design_puts_them():
    graph, third = _real_graph()
    assert "study" not in graph["report"] and "report" in graph["study"]  # the study calls the report, not back
    assert set(graph["store"]) <= CORE  # the store stands on the core only: both study and report read it
    assert not set(graph["track"]) & {"curvature"}  # tracking reaches measures only through the registry
    assert set(graph["objective"]) <= CORE and "rich" not in third["sharpness"]


# ---- the checker itself flags violations ---------------------------------------------------------------------
def _fake(modules: dict[str, str], packages=()):
    return violations(*build_graph(modules, packages))


def test_the_checker_flags_a_core_module_importing_an_algorithm():
    found = _fake({
        "flatminima.errors": "",
        "flatminima.objective": "from .errors import FlatminimaError\ndef f():\n    from .curvature import lanczos\n",
        "flatminima.curvature": "from ..objective import Objective\n",
        "flatminima.curvature.lanczos": "",
    }, packages={"flatminima.curvature"})
    assert any(v.startswith("core module objective imports curvature") for v in found), found
    assert any("cycle" in v and "curvature <-> objective" in v for v in found), found


def test_the_checker_flags_the_library_importing_the_cli_and_rich():
    found = _fake({
        "flatminima.cli": "import typer\nimport rich\n",
        "flatminima.sharpness": "from rich.console import Console\nfrom flatminima.cli import app\n",
    }, packages={"flatminima.cli", "flatminima.sharpness"})
    assert any(v.startswith("sharpness imports the CLI") for v in found), found
    assert any(v.startswith("sharpness imports rich") for v in found), found
    assert not any(v.startswith("cli ") for v in found), found


def test_the_checker_flags_an_upward_import_and_a_cycle_but_not_type_checking_imports():
    found = _fake({
        "flatminima.study": "from .. import report\n",
        "flatminima.report": "def f():\n    from ..study import store\n",  # a lazy import counts
        "flatminima.study.store": "",
        "flatminima.curvature": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..sharpness import M\n",
        "flatminima.sharpness": "from ..curvature import eigenvalues\n",
    }, packages={"flatminima.study", "flatminima.report", "flatminima.curvature", "flatminima.sharpness"})
    assert "import cycle between parts: report <-> study" in found, found
    assert any(v.startswith("report (layer 4) imports study (layer 5)") for v in found), found
    assert not any("curvature" in v for v in found), found  # the TYPE_CHECKING import is not a dependency


def test_the_checker_flags_a_part_without_a_layer():
    found = _fake({"flatminima.newthing": "from .errors import FlatminimaError\n", "flatminima.errors": ""})
    assert found == ["newthing: a part with no layer; give it one in LAYERS and a line in docs/architecture.md"]


@pytest.mark.parametrize("cycle", [["a", "b"], ["a", "b", "c"]])
def test_find_cycles_lists_each_cycle(cycle):
    graph = {v: {cycle[(i + 1) % len(cycle)]: ""} for i, v in enumerate(cycle)} | {"d": {"a": ""}}
    assert find_cycles(graph) == [sorted(cycle)]
