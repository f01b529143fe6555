"""The import contract: which part of flatminima may import which (docs/architecture.md draws it).

Every module under src/flatminima is parsed with ``ast`` (nothing is imported), each ``import`` (at the
top or inside a function: a lazy import is still a dependency) is resolved to a flatminima module, and
modules are grouped into *parts*: a top-level module (``track``, ``objective_base``...) or a subpackage
(``sharpness``, ``study``...). Imports under ``if TYPE_CHECKING:`` are for annotations only, and imports
under ``if __name__ == "__main__":`` run only when the module is executed as a script (``python -m
flatminima.distributed`` hands over to its demo in the workflows layer that way), so both are left out.
The parts are the *library* (everything below :data:`WORKFLOWS`), the *workflows* layer above it (what
trains models to measure them, draw a figure, run experiments or demonstrate a launch) and the CLI on top.
The rules:

1. every part has a layer in :data:`LAYERS`, and imports only parts of lower layers; the core (layer 0)
   imports only the core (its modules import each other freely, without cycles);
2. nothing but the CLI (and ``__main__``) imports ``flatminima.cli``;
3. no library part imports the workflows layer (:data:`WORKFLOWS`), except the lazy ``__getattr__``
   re-exports listed in :data:`DEPRECATED_REEXPORTS` (old import paths of names that moved up);
4. no library part but ``train`` imports ``flatminima.train``: the library measures and draws the models it
   is given, training them is a workflow's job;
5. the terminal libraries stay at the edges: ``typer`` only in the CLI, ``rich`` only in the CLI and in
   ``progress`` (the one place progress bars are drawn, and they are off unless asked for);
6. the part graph has no cycle;
7. no module imports another flatminima module's private name (``from .objective_data import _rows``: one
   leading underscore, dunders aside): a helper used across modules gets a public name. A private submodule
   (``sharpness/_common.py``) is imported only by the modules of its own package. Module by module, not part by
   part, and every import counts here (lazy, ``TYPE_CHECKING``, ``__main__``): each one reads the name.

A new part must be given a layer here (and a line in docs/architecture.md): the test names it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "flatminima"
ROOT = "flatminima"

CORE = {"errors", "jsonable", "results", "statistics", "progress", "objective", "pointwise", "validate"}

LAYERS: dict[str, int] = {
    # ---- the library: takes models, Objectives or parameter vectors; only `train` trains
    **dict.fromkeys(CORE, 0),  # the Objective and what it stands on; no algorithm
    # base: the package face, plotting, data sets, model zoo, the study store
    **dict.fromkeys(("flatminima", "plotting", "data", "models", "store"), 1),
    **dict.fromkeys(("curvature", "toy", "train"), 2),  # algorithms on an Objective; training
    **dict.fromkeys(("sharpness", "landscape", "distributed"), 3),  # measures, pictures, sharded sums
    **dict.fromkeys(("track", "report"), 4),  # measures in a user's loop, the report from a store
    "dynamics": 5,  # curvature along a training trajectory, over track
    "integrations": 6,  # Lightning / Hugging Face callbacks over track and dynamics
    # ---- the workflows layer: trains models to measure them, draw a figure, run experiments, demo a launch
    "workflows": 7,  # get_data / get_model / objective_for, the landscape figures, connect, the distributed demo
    **dict.fromkeys(("study", "lab", "workflow"), 8),  # studies, the lab's experiments, the old workflow module
    "claims": 9,  # the literature's claims, checked with lab experiments
    # ---- the screen
    "cli": 10,
    "__main__": 11,
}

WORKFLOWS = {"workflows", "workflow", "study", "lab", "claims"}  # above the library, below the CLI
SCREEN = {"cli", "__main__"}
TRAINER = "train"  # the one library part that trains

# A library module that kept a moved name importable: (module, the workflows module it may import, only
# inside its module-level ``__getattr__``, with a DeprecationWarning). Any other import of the workflows
# layer from these modules still counts.
DEPRECATED_REEXPORTS: dict[str, str] = {
    "flatminima.landscape.figures": "flatminima.workflows.figures",  # paper_figures, single_figure, train_pair
    "flatminima.landscape.connect": "flatminima.workflows.connect",  # connect_models
}

TERMINAL = {"typer": {"cli"}, "rich": {"cli", "progress"}}  # third-party name -> the parts that may import it

KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()  # (part, imported part) edges tolerated for now: none


def library(layers: Mapping[str, int] = LAYERS) -> set[str]:
    """The parts below the workflows layer."""
    return set(layers) - WORKFLOWS - SCREEN


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


def _is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"``."""
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and len(test.comparators) == 1 and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes inside ``if TYPE_CHECKING:`` blocks and ``if __name__ == "__main__":`` blocks."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING" or _is_main_guard(test):
                skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _getattr_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes inside the module-level ``def __getattr__`` (a lazy re-export)."""
    return {id(n) for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"
            for n in ast.walk(node)}


def _from_base(node: ast.ImportFrom, here: list[str]) -> str:
    """The dotted module a ``from ... import`` reads from, relative levels resolved against ``here``."""
    if node.level:
        return ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
    return node.module or ""


def imports_of(module: str, source: str, is_package: bool, known: Iterable[str],
               reexports: Mapping[str, str] = DEPRECATED_REEXPORTS) -> tuple[set[str], set[str]]:
    """(flatminima modules, top-level third-party names) that ``source`` imports. A module listed in
    ``reexports`` may import its one target inside its ``__getattr__``; that import is left out."""
    known = set(known)
    tree = ast.parse(source)
    skip = _type_checking_nodes(tree)
    lazy = _getattr_nodes(tree) if module in reexports else set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    inner, outer = set(), set()

    def add(name: str, in_getattr: bool) -> None:
        if name == ROOT or name.startswith(ROOT + "."):
            while name not in known and "." in name:  # an attribute of a module: the module
                name = name.rpartition(".")[0]
            if not (in_getattr and name == reexports[module]):  # the listed lazy re-export is left out
                inner.add(name)
        else:
            outer.add(name.split(".")[0])

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, id(node) in lazy)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, here)
            for alias in node.names:  # `from pkg import sub` imports the module pkg.sub when there is one
                add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base, id(node) in lazy)
    return inner, outer


def part(module: str) -> str:
    """The part a module belongs to: its top-level module or subpackage under flatminima (or the root)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else ROOT


def build_graph(modules: Mapping[str, str], packages: Iterable[str] = (),
                reexports: Mapping[str, str] = DEPRECATED_REEXPORTS) -> tuple[dict, dict]:
    """``modules``: dotted name -> source. Returns (part -> {imported part: example module edge},
    part -> {third-party name: example module})."""
    packages = set(packages)
    graph: dict[str, dict[str, str]] = {}
    third: dict[str, dict[str, str]] = {}
    for name, source in modules.items():
        inner, outer = imports_of(name, source, name in packages, modules, reexports)
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
    lib = library(layers)
    for p in sorted(graph):
        if p not in layers:
            found.append(f"{p}: a part with no layer; give it one in LAYERS and a line in docs/architecture.md")
            continue
        for q, edge in sorted(graph[p].items()):
            if (p, q) in exceptions:
                continue
            if q == "cli" and p not in SCREEN:
                found.append(f"{p} imports the CLI ({edge}): the library knows no screen")
            elif p in lib and q in WORKFLOWS:
                found.append(f"library part {p} imports the workflows layer ({edge}): the library never calls up "
                             "into what trains models for it")
            elif p in lib and q == TRAINER:
                found.append(f"library part {p} imports {TRAINER} ({edge}): the library measures and draws the "
                             "models it is given; training them is a workflow's job")
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


def _is_private(name: str) -> bool:
    """One leading underscore, not a dunder: ``_rows`` yes, ``__version__`` no."""
    return name.startswith("_") and not name.startswith("__")


def _private_outside(importer: str, target: str) -> str | None:
    """The first private component of module ``target`` (``_common`` in flatminima.sharpness._common) whose
    package does not hold ``importer``; None when every private component is inside the importer's package."""
    pieces = target.split(".")
    for i, piece in enumerate(pieces):
        if _is_private(piece) and not importer.startswith(".".join(pieces[:i]) + "."):
            return piece
    return None


def private_imports(modules: Mapping[str, str], packages: Iterable[str] = ()) -> list[str]:
    """Rule 7: every import of another flatminima module's private name, one line each. ``modules``: dotted
    name -> source (as for :func:`build_graph`)."""
    packages, known = set(packages), set(modules)
    found = []
    for module, source in sorted(modules.items()):
        here = module.split(".") if module in packages else module.split(".")[:-1]

        def check(target: str, where: str, module: str = module) -> None:
            if _private_outside(module, target) is not None:
                found.append(f"{module} imports the private module {target} ({where}): only its own package may")

        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                        check(alias.name, f"import {alias.name}")
            elif isinstance(node, ast.ImportFrom):
                base = _from_base(node, here)
                if not (base == ROOT or base.startswith(ROOT + ".")):
                    continue
                check(base, f"from {base} import ...")
                for alias in node.names:
                    if not _is_private(alias.name):
                        continue
                    if f"{base}.{alias.name}" in known:  # a private submodule: its package's own modules may
                        check(f"{base}.{alias.name}", f"from {base} import {alias.name}")
                    elif base != module:
                        found.append(f"{module} imports the private name {alias.name} from {base}: give it a "
                                     "public name there")
    return sorted(found)


def _real_graph():
    files = _modules(SRC)
    packages = {m for m, f in files.items() if f.name == "__init__.py"}
    return build_graph({m: f.read_text() for m, f in files.items()}, packages)


# ---- the contract on the real code ---------------------------------------------------------------------------
def test_flatminima_keeps_its_import_contract():
    graph, third = _real_graph()
    assert violations(graph, third) == []


def test_no_module_imports_another_modules_private_name():
    files = _modules(SRC)
    packages = {m for m, f in files.items() if f.name == "__init__.py"}
    assert private_imports({m: f.read_text() for m, f in files.items()}, packages) == []


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
    assert not set(graph["landscape"]) & {"train", "workflows", "models", "data"}  # it draws the models it is given
    assert set(graph["distributed"]) <= CORE  # the sharding helpers; the demo is a workflow
    assert {"landscape", "train", "curvature"} <= set(graph["workflows"]) and "workflows" in graph["cli"]


# ---- the checker itself flags violations ---------------------------------------------------------------------
def _fake(modules: dict[str, str], packages=(), reexports: Mapping[str, str] = DEPRECATED_REEXPORTS):
    return violations(*build_graph(modules, packages, reexports))


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
    assert any(v.startswith("library part report imports the workflows layer") for v in found), found
    assert not any("curvature" in v for v in found), found  # the TYPE_CHECKING import is not a dependency


def test_the_checker_flags_an_upward_import_inside_the_library():
    found = _fake({"flatminima.data": "def f():\n    from .curvature import lanczos\n", "flatminima.curvature": ""})
    assert found == ["data (layer 1) imports curvature (layer 2) (flatminima.data -> flatminima.curvature): "
                     "only lower layers"], found


def test_the_checker_flags_the_library_importing_the_workflows_layer_or_train():
    found = _fake({
        "flatminima.workflows": "from ..landscape import slice_1d\nfrom ..train import fit\n",
        "flatminima.workflows.figures": "",
        "flatminima.train": "",
        "flatminima.landscape": "from .figures import x\n",
        "flatminima.landscape.figures": "def f():\n    from ..workflows import figures\n",  # lazy, still counts
        "flatminima.sharpness": "from .train import fit\n",
        "flatminima.lab": "from .train import fit\n",  # the lab is above the library: it may train
    }, packages={"flatminima.workflows", "flatminima.landscape"}, reexports={})
    assert any(v.startswith("library part landscape imports the workflows layer "
                            "(flatminima.landscape.figures -> flatminima.workflows.figures)") for v in found), found
    assert any(v.startswith("library part sharpness imports train") for v in found), found
    assert not any(v.startswith(("workflows", "lab", "library part train")) for v in found), found


def test_a_listed_lazy_reexport_is_allowed_and_nothing_else():
    shim = "def __getattr__(name):\n    from ..workflows import figures\n    return getattr(figures, name)\n"
    mods = {"flatminima.workflows": "", "flatminima.workflows.figures": "", "flatminima.workflows.connect": "",
            "flatminima.landscape": "", "flatminima.landscape.figures": shim}
    allowed = {"flatminima.landscape.figures": "flatminima.workflows.figures"}
    assert _fake(mods, {"flatminima.workflows", "flatminima.landscape"}, reexports=allowed) == []
    for source in ("from ..workflows import figures\n",  # an eager import of the target
                   shim + "def g():\n    from ..workflows import connect\n",  # another module, outside __getattr__
                   "def __getattr__(name):\n    from ..workflows import connect\n"):  # another target
        found = _fake(mods | {"flatminima.landscape.figures": source}, {"flatminima.workflows", "flatminima.landscape"},
                      reexports=allowed)
        assert any(v.startswith("library part landscape imports the workflows layer") for v in found), source


def test_a_main_block_hands_over_to_a_workflow_without_a_dependency():
    found = _fake({
        "flatminima.distributed": 'def init():\n    pass\nif __name__ == "__main__":\n'
                                  '    from .workflows.distributed_demo import main\n    main()\n',
        "flatminima.workflows": "", "flatminima.workflows.distributed_demo": "from ..distributed import init\n",
    }, packages={"flatminima.workflows"})
    assert found == [], found


def test_every_library_module_that_reexports_does_it_lazily():
    """The listed re-exports exist, and each imports its workflows target only inside ``__getattr__``."""
    for module, target in DEPRECATED_REEXPORTS.items():
        path = SRC.joinpath(*module.split(".")[1:]).with_suffix(".py")
        inner, _ = imports_of(module, path.read_text(), False, _modules(SRC), reexports={})
        lazy, _ = imports_of(module, path.read_text(), False, _modules(SRC))
        assert target in inner and target not in lazy, module


def test_the_checker_flags_a_private_name_imported_from_another_module():
    modules = {
        "flatminima.objective_data": "_rows = len\nrow_count = len\n",
        "flatminima.objective": "from .objective_data import _rows, row_count\n"  # the private one counts
                                "from .objective_hvp import ggn as _ggn\n"  # a public name bound privately: fine
                                "from . import __version__\n",  # a dunder: fine
        "flatminima.objective_hvp": "ggn = 1\n",
        "flatminima.landscape": "def f():\n    from flatminima.objective_data import _rows\n",  # lazy, absolute
        "flatminima.curvature": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                "    from ..objective_data import _LossTerms\n",  # annotations still read it
        "flatminima.sharpness": "",
        "flatminima.sharpness._common": "generator = 1\n",
        "flatminima.sharpness.hessian": "from ._common import generator\nfrom . import _common\n",  # its package
        "flatminima.toy": "from ..sharpness._common import generator\nimport flatminima.sharpness._common\n",
        "flatminima.data": "from torch.nn.modules.dropout import _DropoutNd\n"  # not flatminima's: not ours to judge
                           "from ._local import _x\n",  # flatminima._local is the root package's: only the name counts
    }
    found = private_imports(modules, packages={"flatminima.landscape", "flatminima.curvature", "flatminima.sharpness",
                                               "flatminima.toy"})
    assert found == [
        "flatminima.curvature imports the private name _LossTerms from flatminima.objective_data: give it a public "
        "name there",
        "flatminima.data imports the private name _x from flatminima._local: give it a public name there",
        "flatminima.landscape imports the private name _rows from flatminima.objective_data: give it a public "
        "name there",
        "flatminima.objective imports the private name _rows from flatminima.objective_data: give it a public "
        "name there",
        "flatminima.toy imports the private module flatminima.sharpness._common (from "
        "flatminima.sharpness._common import ...): only its own package may",
        "flatminima.toy imports the private module flatminima.sharpness._common (import "
        "flatminima.sharpness._common): only its own package may",
    ], found


def test_the_checker_flags_a_part_without_a_layer():
    found = _fake({"flatminima.newthing": "from .errors import FlatminimaError\n", "flatminima.errors": ""})
    assert found == ["newthing: a part with no layer; give it one in LAYERS and a line in docs/architecture.md"]


@pytest.mark.parametrize("cycle", [["a", "b"], ["a", "b", "c"]])
def test_find_cycles_lists_each_cycle(cycle):
    graph = {v: {cycle[(i + 1) % len(cycle)]: ""} for i, v in enumerate(cycle)} | {"d": {"a": ""}}
    assert find_cycles(graph) == [sorted(cycle)]
