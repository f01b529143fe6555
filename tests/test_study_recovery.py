"""Robustness of a study with real processes: one writer per folder, data fingerprints across a kill,
reports that are never half-written, damaged rows and stores, repair, confined outputs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import flatminima.study as study
from flatminima.errors import FlatminimaError, StudyLockedError
from flatminima.study.store import DB_NAME, Store, lock_holder, repair

SPEC = """
name = "rec"
seeds = 1
[data]
name = "{data}"
shifts = "none"
[models.mlp]
width = 4
[recipe]
lr = [0.05, 0.1, 0.2, 0.3]
batch_size = 8
epochs = {epochs}
[measures.lambda_max]
"""


def _csv(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    lines = ["a,b,c,label"] + [f"{a:.6f},{b:.6f},{c:.6f},{t}" for (a, b, c), t in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _spec(tmp_path, epochs=1, data=None):
    data = data or _csv(tmp_path / "data.csv")
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(data=data, epochs=epochs))
    return path


def _start(spec, out, *extra):
    code = f"import flatminima.study as s; s.run({str(spec)!r}, out={str(out)!r}, progress=False)"
    return subprocess.Popen([sys.executable, "-c", code, *extra], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _counts(db):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return dict(con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    except sqlite3.Error:
        return {}


def _wait(proc, until, what, timeout=180):
    deadline = time.time() + timeout
    while not until():
        assert proc.poll() is None, f"the study exited before {what}: {proc.stderr.read().decode()}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _kill(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_a_second_run_on_a_folder_in_use_is_refused_and_names_the_first(tmp_path):
    spec, out = _spec(tmp_path, epochs=20000), tmp_path / "s"  # long enough to be still running when checked
    first = _start(spec, out)
    try:
        _wait(first, lambda: _counts(out / DB_NAME).get("running", 0) == 1, "a run in flight")
        holder = lock_holder(out)
        assert holder and holder["pid"] == first.pid
        code = ("import sys; from flatminima.cli import main; "
                f"sys.argv = ['flatminima', 'study', 'run', {str(spec)!r}, '--out', {str(out)!r}]; main()")
        second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"process {first.pid}" in second.stderr and "in use" in second.stderr and "since" in second.stderr
        with pytest.raises(StudyLockedError):
            study.run(spec, out=out, progress=False)
        assert _counts(out / DB_NAME).get("running", 0) == 1  # the first one's run was not taken over
        assert first.poll() is None
    finally:
        _kill(first)
    assert lock_holder(out) is None  # the kernel dropped the lock with the killed process
    status = subprocess.run([sys.executable, "-m", "flatminima", "study", "status", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert "that process is gone" in status.stdout, status.stdout + status.stderr


def test_resume_against_rewritten_data_is_refused_naming_the_file(tmp_path):
    spec, out = _spec(tmp_path, epochs=60), tmp_path / "s"
    proc = _start(spec, out)
    try:
        _wait(proc, lambda: _counts(out / DB_NAME).get("done", 0) >= 1, "a finished run")
    finally:
        _kill(proc)
    original = (tmp_path / "data.csv").read_bytes()
    _csv(tmp_path / "data.csv", seed=1)  # same shape, other values
    with Store(out) as store:
        before = store.counts()
    with pytest.raises(FlatminimaError) as err:
        study.run(spec, out=out, progress=False)
    assert "data.csv" in str(err.value) and "changed" in str(err.value) and "SHA-256" in str(err.value)
    with Store(out) as store:  # nothing was touched (the kill may have come between two runs)
        assert store.counts() == before and before.done >= 1
    (tmp_path / "data.csv").write_bytes(original)
    res = study.run(spec, out=out, progress=False)  # the original data again: the resume goes on
    assert res.counts.done == 4 and res.resumed["interrupted"] == before.running  # what the kill left in flight


def test_data_generator_settings_are_part_of_the_fingerprint(tmp_path):
    spec = study.validate({"name": "t", "data": {"name": "two_class", "options": {"num_samples": 40}},
                           "models": {"mlp": {"width": 4}}, "recipe": {"epochs": 1}, "seeds": 1,
                           "measures": {"lambda_max": {}}})
    fp = study.runner.preflight(spec)["fingerprint"]
    assert fp["options"] == {"num_samples": 40} and len(fp["arrays_sha256"]) == 64


def _synthetic_store(folder, n_configs=4, seeds=2):
    with Store(folder) as store:
        store.set_meta("spec", {"name": "synthetic", "data": {"name": "x"}, "models": {"mlp": {}}})
        store.set_meta("axes", {"lr": list(range(n_configs))})
        store.set_meta("data_info", {})
        rows = []
        for c in range(n_configs):
            for s in range(seeds):
                lam = 1 + c + 0.1 * s
                res = {"measures": {"lambda_max": {"value": lam, "stderr": 0.0, "cost": {}}},
                       "metrics": {"gap": 0.01 * lam, "test_acc": 0.5 + 0.02 * lam, "train_acc": 0.9,
                                   "ece": 0.1 - 0.003 * lam, "shift_drop": None},
                       "training": {"epochs_run": 3, "final_train_loss": 0.1, "reached_target": None,
                                    "target_train_loss": None},
                       "seconds": {"total": 1.0}}
                cfg = {"model": "mlp", "model_options": {}, "recipe": {"lr": c}, "seed": s}
                rows.append((f"r{c}-{s}", f"lr={c}", s, cfg, res))
        store.add_runs((rid, label, seed, cfg) for rid, label, seed, cfg, _ in rows)
        for rid, *_, res in rows:
            assert store.claim(rid) and store.finish(rid, res)
    return folder


def test_a_report_killed_mid_write_leaves_the_old_report_whole(tmp_path):
    folder = _synthetic_store(tmp_path / "s")
    study.report(folder, samples=100)
    report = folder / "report"
    before = {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    assert Path("report.html") in before and Path("runs.csv") in before
    # a second report whose process is SIGKILLed between its writes (after the CSVs, before the page)
    code = textwrap.dedent(f"""
        import os, signal
        import flatminima.report.builder as b
        real = b.save_table
        calls = []
        def save_then_die(*a, **k):
            out = real(*a, **k)
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        b.save_table = save_then_die
        b.build_report({str(folder)!r}, samples=100, seed=1)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr
    after = {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    assert after == before  # the old complete report, untouched: no new CSV beside the old page
    rep = study.report(folder, samples=100, seed=2)  # the next report replaces it whole, leftovers cleared
    assert rep.html == report / "report.html" and rep.html.exists()
    assert all(Path(f).is_relative_to(report) and Path(f).exists() for f in rep.figures)
    assert not [p for p in folder.iterdir() if p.name.startswith(".report.")]


def test_a_row_with_unreadable_results_is_reported_around_and_redone(tmp_path):
    folder = _synthetic_store(tmp_path / "s")
    with sqlite3.connect(folder / DB_NAME) as con:
        con.execute("UPDATE runs SET results = '{not json' WHERE id = 'r0-0'")
    rep = study.report(folder, samples=100)
    assert any("cannot be read" in n and "lr=0 seed=0" in n for n in rep.notes)
    assert len(rep.table) > 0
    from typer.testing import CliRunner

    from flatminima.cli import app

    status = CliRunner().invoke(app, ["study", "status", str(folder)])
    assert status.exit_code == 0 and "unreadable" in status.output
    with Store(folder) as store:
        bad = store.mark_unreadable()
        assert [b["id"] for b in bad] == ["r0-0"]
        assert store.rows("failed")[0]["error"].startswith("unreadable results")
        assert store.recover()["unreadable_redone"] == 1
        assert [r["id"] for r in store.rows("pending")] == ["r0-0"]


def test_repair_keeps_the_intact_rows_of_a_damaged_store(tmp_path):
    folder = _synthetic_store(tmp_path / "s", n_configs=40)
    con = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    con.execute("UPDATE runs SET results = 'garbage' WHERE id = 'r1-1'")
    con.execute("UPDATE runs SET status = 'running' WHERE id = 'r2-0'")
    con.execute("PRAGMA journal_mode=DELETE")  # everything in the main file, which is then damaged
    con.close()
    db = folder / DB_NAME
    blob = bytearray(db.read_bytes())
    page = 4096
    blob[len(blob) - page: len(blob) - page + 200] = os.urandom(200)  # one damaged page near the end
    db.write_bytes(bytes(blob))
    with pytest.raises(FlatminimaError, match="is damaged"):
        Store(folder)
    res = repair(folder)
    assert res["damaged_copy"].exists() and res["rows_read"] > 0
    with Store(folder) as store:
        c = store.counts()
        assert c.done == res["kept"] and c.pending == res["redo"] and c.done >= 40
        assert store.get_meta("spec")["name"] == "synthetic"
        assert "r1-1" in {r["id"] for r in store.rows("pending")}


def test_outputs_never_leave_the_output_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = study.validate({"name": "ok", "data": {"name": "two_class"}, "models": {"mlp": {}},
                           "recipe": {"epochs": 1}, "measures": {"lambda_max": {}}})
    assert study.runner.default_folder(spec) == Path("flatminima-out") / "ok"
    assert study.runner.default_folder(spec, root=tmp_path / "r") == tmp_path / "r" / "ok"
    for name in ("../../x", str(tmp_path / "abs"), "a/../../b"):
        with pytest.raises(FlatminimaError, match="folder name"):
            study.validate({**spec.model_dump(), "name": name})


def test_factories_are_announced_before_any_import(tmp_path, monkeypatch):
    (tmp_path / "announced_mod.py").write_text("raise SystemExit('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = study.validate({"name": "t", "data": {"name": "two_class"}, "models": {"announced_mod:f": {}},
                           "recipe": {"epochs": 1}, "measures": {"lambda_max": {}}})
    found = study.runner.model_factories(spec)
    assert found[0]["file"] == str((tmp_path / "announced_mod.py").resolve()) and found[0]["kind"] == "user"
    assert "announced_mod" not in sys.modules
    json.dumps(found)


def test_study_repair_command_recovers_a_store_with_its_runs_table_dropped(tmp_path):
    from typer.testing import CliRunner

    from flatminima.cli import app

    folder = _synthetic_store(tmp_path / "s", n_configs=3)
    con = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    con.execute("DROP TABLE runs")
    con.close()
    with pytest.raises(FlatminimaError, match=r"table\(s\) \['runs'\] are missing"):
        Store(folder, readonly=True)
    res = CliRunner().invoke(app, ["study", "repair", str(folder)])
    assert res.exit_code == 0 and "0 finished run(s) kept" in res.output and "damaged file is kept" in res.output
    with Store(folder, readonly=True) as store:  # a valid (empty) store with the study's meta kept
        assert store.counts().total == 0 and store.get_meta("spec")["name"] == "synthetic"
