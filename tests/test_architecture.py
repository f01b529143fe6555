"""The import contract: which part of flatminima may import which (docs/architecture.md draws it).

The contract is written for import-linter, in ``.importlinter`` at the repository root, and checked here
by running ``lint-imports`` on the real code (imports under ``if TYPE_CHECKING:`` are left out; lazy imports
inside functions count). Its contracts:

1. ``layers``: every part (a top-level module or a subpackage of flatminima) has a layer and imports only
   parts of lower layers; the core's modules (objective, errors, results...) import each other; the
   contract is exhaustive, so a new part without a layer breaks it. Nothing but ``__main__`` sits above
   the CLI, so nothing else imports it, and no library part imports the workflows layer above it
   (``workflows``, ``study``, ``lab``, ``claims``); no edge is ignored;
2. ``trainer``: no library part but ``train`` imports ``flatminima.train`` (the inspection page's loss
   registry and checkpoint loading are listed);
3. ``typer`` only in the CLI, ``rich`` only in the CLI and ``progress``;
4. ``private_modules``: a private submodule (``sharpness/_common.py``) is imported only within its package;
5. ``acyclic_siblings``: no import cycle between the parts.

What import-linter cannot express is checked here by parsing every module with ``ast``:

- no module imports another flatminima module's private *name* (``from .x import _rows``: one leading
  underscore, dunders aside; every import counts, lazy, ``TYPE_CHECKING`` and ``__main__`` ones too): a
  helper used across modules gets a public name;
- the package face (``flatminima/__init__.py``, no part of a layer there) imports only the library;
- docs/architecture.md names every part the layers contract lists, its picture is the one
  ``scripts/draw_architecture.py`` draws from the contract, and its table gives each part the contract's layer.

A new part must be given a layer in ``.importlinter`` and a line in docs/architecture.md.
"""

from __future__ import annotations

import ast
import configparser
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "flatminima"
CONFIG = REPO / ".importlinter"
ROOT = "flatminima"

WORKFLOWS = {"workflows", "study", "lab", "claims"}  # above the library, below the CLI
SCREEN = {"cli", "__main__"}


def layers() -> list[list[str]]:
    """The layers of the ``layers`` contract, top first, each a list of parts."""
    config = configparser.ConfigParser()
    config.read(CONFIG)
    lines = [x.strip() for x in config["importlinter:contract:layers"]["layers"].splitlines() if x.strip()]
    return [[p.strip() for p in re.split(r"[|:]", line)] for line in lines]


def parts() -> set[str]:
    return {p for layer in layers() for p in layer}


def lint_imports(cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` on the contracts in ``cwd``/.importlinter, without its cache."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is not installed: pip install -e '.[test]'"
    return subprocess.run([exe, "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


# ---- private names: what import-linter does not see -----------------------------------------------------------
def _modules(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under ``src`` (a package is its ``__init__``)."""
    out = {}
    for f in sorted(src.rglob("*.py")):
        parts = [ROOT, *f.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _from_base(node: ast.ImportFrom, here: list[str]) -> str:
    """The dotted module a ``from ... import`` reads from, relative levels resolved against ``here``."""
    if node.level:
        return ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
    return node.module or ""


def _is_private(name: str) -> bool:
    """One leading underscore, not a dunder: ``_rows`` yes, ``__version__`` no."""
    return name.startswith("_") and not name.startswith("__")


def _private_outside(importer: str, target: str) -> str | None:
    """The first private component of module ``target`` (``_common`` in flatminima.sharpness._common) whose
    package does not hold ``importer``; None when every private component is inside the importer's package."""
    pieces = target.split(".")
    for i, piece in enumerate(pieces):
        package = ".".join(pieces[:i])
        if _is_private(piece) and not (importer == package or importer.startswith(package + ".")):
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


def _sources() -> tuple[dict[str, str], set[str]]:
    files = _modules(SRC)
    return {m: f.read_text() for m, f in files.items()}, {m for m, f in files.items() if f.name == "__init__.py"}


def _imported_modules(source: str, here: list[str], inside: str | None = None) -> set[str]:
    """Dotted flatminima modules (or module.name) ``source`` imports; only inside the function ``inside``
    when given."""
    tree = ast.parse(source)
    nodes = ast.walk(tree) if inside is None else (
        n for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == inside for n in ast.walk(f))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, here)
            out |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m == ROOT or m.startswith(ROOT + ".")}


# ---- the contract on the real code ---------------------------------------------------------------------------
def test_flatminima_keeps_its_import_contracts():
    """``lint-imports`` (import-linter) keeps every contract in .importlinter."""
    run = lint_imports(REPO)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_module_imports_another_modules_private_name():
    sources, packages = _sources()
    assert private_imports(sources, packages) == []


def test_every_part_has_a_layer_and_the_docs_list_it():
    found = {m.split(".")[1] for m in _modules(SRC) if m.count(".") >= 1}
    assert found <= parts(), sorted(found - parts())
    doc = (REPO / "docs" / "architecture.md").read_text()
    missing = [p for p in sorted(parts()) if p != "__main__" and f"`{p}" not in doc]
    assert missing == [], f"docs/architecture.md does not name {missing}"


def test_the_package_face_imports_only_the_library():
    face = _imported_modules((SRC / "__init__.py").read_text(), [ROOT])
    above = {m for m in face if m.split(".")[1] in WORKFLOWS | SCREEN}
    assert above == set(), above


def test_known_parts_are_where_the_design_puts_them():
    import grimp

    graph = grimp.build_graph(ROOT, exclude_type_checking_imports=True)

    def imports(a: str, b: str) -> bool:
        """Whether part ``a`` imports part ``b`` directly."""
        inside = {m for m in graph.modules if m == f"{ROOT}.{a}" or m.startswith(f"{ROOT}.{a}.")}
        return any(t == f"{ROOT}.{b}" or t.startswith(f"{ROOT}.{b}.")
                   for m in inside for t in graph.find_modules_directly_imported_by(m))

    core = layers()[-1]
    library = {p for layer in layers() for p in layer} - WORKFLOWS - SCREEN
    assert not imports("report", "study") and imports("study", "report")  # the study calls the report, not back
    assert not any(imports("store", p) for p in library - set(core) - {"store"})  # both study and report read it
    assert not imports("track", "curvature")  # tracking reaches measures only through the registry
    assert not any(imports("objective", p) for p in library - set(core))  # the core knows no algorithm
    assert not any(imports("landscape", p) for p in ("train", "workflows", "models", "data"))  # draws what it is given
    assert not any(imports("distributed", p) for p in library - set(core) - {"distributed"})
    assert all(imports("workflows", p) for p in ("landscape", "train", "curvature")) and imports("cli", "workflows")
    assert layers()[0] == ["__main__"] and layers()[1] == ["cli"]  # nothing but __main__ above the CLI


# ---- the checks flag violations ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def copy_of_src(tmp_path_factory):
    """A copy of the package and its contracts, for lint-imports to judge with an injected violation."""
    root = tmp_path_factory.mktemp("contract")
    shutil.copytree(SRC, root / "src" / ROOT, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, root / ".importlinter")
    return root


@pytest.mark.parametrize(("module", "line", "expected"), [
    ("objective/_objective.py", "def _f():\n    from ..curvature import eigenvalues\n",
     "flatminima.objective._objective -> flatminima.curvature"),  # the core imports an algorithm (lazily)
    ("sharpness/registry.py", "from rich.console import Console\n", "flatminima.sharpness.registry -> rich"),
    ("landscape/slices.py", "def _f():\n    from ..workflows import common\n",
     "flatminima.landscape.slices -> flatminima.workflows"),  # the library calls up into the workflows
    ("curvature/trace.py", "def _f():\n    from ..train import fit\n",
     "flatminima.curvature.trace -> flatminima.train"),
    ("toy/landscapes.py", "def _f():\n    from ..sharpness._common import generator\n", "sharpness._common"),
    ("newpart.py", "from .errors import FlatminimaError\n", "newpart"),  # a part with no layer
])
def test_lint_imports_flags_a_violation(copy_of_src, module, line, expected):
    path = copy_of_src / "src" / ROOT / module
    before = path.read_text() if path.exists() else None
    path.write_text((before or "") + "\n" + line)
    try:
        run = lint_imports(copy_of_src, env=os.environ | {"PYTHONPATH": str(copy_of_src / "src")})
    finally:
        if before is None:
            path.unlink()
        else:
            path.write_text(before)
    assert run.returncode != 0 and expected in run.stdout, run.stdout[-3000:]


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


def _drawing():
    import importlib.util

    spec = importlib.util.spec_from_file_location("draw_architecture", REPO / "scripts" / "draw_architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_architecture_page_is_drawn_from_the_contract():
    draw = _drawing()
    page = (REPO / "docs" / "architecture.md").read_text()
    assert draw.redrawn(page) == page, "docs/architecture.md differs: python scripts/draw_architecture.py"
    numbers = draw.layer_numbers()
    rows = re.findall(r"^\| (\d+) \| `([^`]+)`", page, flags=re.M)
    assert len(rows) >= 20
    wrong = [(part, int(n), numbers[part]) for n, part in rows if numbers.get(part, int(n)) != int(n)]
    assert wrong == [], f"the table's layer numbers differ from the contract's: {wrong}"


def test_the_drawing_follows_a_changed_contract(tmp_path):
    draw = _drawing()
    config = tmp_path / ".importlinter"
    config.write_text((REPO / ".importlinter").read_text().replace("    __main__\n", "    __main__\n    newtop\n", 1))
    assert draw.layer_numbers(config)["newtop"] == draw.layer_numbers()["cli"] + 1
    assert " newtop" in draw.picture(config) and draw.picture(config) != draw.picture()
