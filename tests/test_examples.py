"""The examples a researcher opens: every .py twin runs, every notebook executes (nbclient) and says what
its .py says; and importing flatminima leaves matplotlib's backend alone (a notebook keeps inline plots)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbclient  # required: part of the test extras (scripts/test.sh installs them)
import nbformat
import pytest

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


def _maker():
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES_DIR / "make_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MAKER = _maker()
NAMES = MAKER.EXAMPLES


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    env.pop("MPLBACKEND", None)  # the examples must work with matplotlib's own choice (Agg without a display)
    return env


def test_every_example_has_a_notebook_generated_from_its_py_twin():
    assert sorted(p.stem for p in EXAMPLES_DIR.glob("*.ipynb")) == sorted(NAMES)
    for name in NAMES:
        committed = json.loads((EXAMPLES_DIR / f"{name}.ipynb").read_text())
        assert committed == json.loads(MAKER.render(name)), f"run python examples/make_notebooks.py ({name})"
        nbformat.validate(nbformat.reads((EXAMPLES_DIR / f"{name}.ipynb").read_text(), as_version=4))
        code = "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                         for c in committed["cells"] if c["cell_type"] == "code")
        py_code = "\n".join(t for k, t in MAKER.cells((EXAMPLES_DIR / f"{name}.py").read_text()) if k == "code")
        assert code == py_code


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_example_script_runs(name, tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLES_DIR / f"{name}.py")], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes(name, tmp_path, monkeypatch):
    for k, v in _env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.reads((EXAMPLES_DIR / f"{name}.ipynb").read_text(), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if name == "landscape_slices":  # the notebook's inline backend survived importing flatminima
        assert any("image/png" in o.get("data", {}) for o in outputs), "no inline figure in the notebook"


def test_importing_flatminima_leaves_the_matplotlib_backend_alone():
    """Import every flatminima module: a backend the user chose stays chosen, and none is forced otherwise."""
    script = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import matplotlib
        import flatminima
        skipped = []
        for m in pkgutil.walk_packages(flatminima.__path__, "flatminima."):
            if m.name.endswith("__main__"):
                continue  # runs the CLI
            try:
                importlib.import_module(m.name)
            except ImportError as err:  # an optional extra missing: not this test's business
                skipped.append(f"{m.name}: {err}")
        want = sys.argv[1]
        if want == "auto":
            from matplotlib import rcsetup
            assert matplotlib.rcParams._get("backend") is rcsetup._auto_backend_sentinel, \\
                matplotlib.rcParams._get("backend")
        else:
            assert matplotlib.get_backend().lower() == want, matplotlib.get_backend()
        print("ok", len(skipped), skipped)
        """
    )
    for backend in ("template", "svg", "auto"):
        env = _env()
        if backend != "auto":
            env["MPLBACKEND"] = backend
        proc = subprocess.run([sys.executable, "-c", script, backend], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stdout[-2000:] + proc.stderr[-2000:]
