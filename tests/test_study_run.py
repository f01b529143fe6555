"""Studies end to end on a tiny grid: rows, resume after SIGKILL, failures in `study status`, the report."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from typer.testing import CliRunner

import flatminima.study as study
from flatminima.cli import app
from flatminima.study.worker import execute

SPEC = """
name = "tiny"
seeds = 2
[data]
name = "mnist1d"
options = {{ num_samples = 375, seed = 1 }}
shifts = ["iid_noise"]
[models.mlp]
width = 16
[recipe]
lr = {lr}
batch_size = 16
epochs = {epochs}
[measures.lambda_max]
[measures.trace]
method = "hutchinson"
probes = 8
"""


def _write(tmp_path, lr="[0.02, 0.05, 0.1]", epochs=12):
    path = tmp_path / "tiny.toml"
    path.write_text(SPEC.format(lr=lr, epochs=epochs))
    return path


def _strip(results):
    """Results without wall-clock times (the only part allowed to differ between two executions)."""
    out = {k: v for k, v in results.items() if k != "seconds"}
    out["measures"] = {
        n: {k: v for k, v in m.items() if k != "cost"}
        | {"cost": {k: v for k, v in m["cost"].items() if k != "seconds"}}
        for n, m in results["measures"].items()
    }
    return out


def _counts(db):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return dict(con.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    except sqlite3.OperationalError:  # the store is being created: no table yet
        return {}


def test_kill_and_resume_loses_nothing_and_redoes_only_the_interrupted_run(tmp_path):
    spec, out = _write(tmp_path), tmp_path / "study"
    script = f"import flatminima.study as s; s.run({str(spec)!r}, out={str(out)!r}, progress=False)"
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    db, deadline = out / "study.sqlite", time.time() + 120
    try:
        while True:  # kill -9 while one run is in flight and at least two are finished
            assert proc.poll() is None, (
                f"study exited before it could be killed: {proc.stderr.read().decode()}"
            )
            assert time.time() < deadline, "study made no progress"
            c = _counts(db) if db.exists() else {}
            if c.get("done", 0) >= 2 and c.get("running", 0) == 1:
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    with study.Store(out) as store:
        before = {r["id"]: r for r in store.rows("done")}
        stale = store.rows("running")
    assert len(stale) == 1 and len(before) >= 2
    status = CliRunner().invoke(app, ["study", "status", str(out)])
    assert status.exit_code == 0 and "1 running" in status.output

    result = study.run(spec, out=out, progress=False)
    assert result.resumed["interrupted"] == 1 and result.resumed["done_kept"] == len(before)
    assert f"{len(before)} finished run(s) kept, 1 interrupted run(s) redone" in result.resumed_message
    with study.Store(out) as store:
        rows = store.rows()
    expected = {c.id for c in study.expand(study.load(spec))}
    assert len(rows) == len(expected) == 6 and {r["id"] for r in rows} == expected  # no loss, no duplicate
    assert all(r["status"] == "done" for r in rows)
    for r in rows:
        if r["id"] in before:  # finished rows were never redone
            assert r["attempts"] == 1 and r["finished"] == before[r["id"]]["finished"]
            assert r["results"] == before[r["id"]]["results"]
    redone = next(r for r in rows if r["id"] == stale[0]["id"])
    assert redone["attempts"] == 2
    # the redone run equals a fresh execution of its config (deterministic training and measures)
    assert _strip(redone["results"]) == _strip(execute(redone["config"]))
    assert result.executed == 6 - len(before)

    # a finished study run again does nothing
    again = study.run(spec, out=out, progress=False)
    assert again.executed == 0 and again.counts.done == 6

    # and its report covers every target, the shift included
    rep = study.report(out, n_boot=100)
    assert {r["target"] for r in rep.table} == {"gap", "shift_drop", "ece", "test_acc"}
    assert {r["measure"] for r in rep.table} == {"lambda_max", "trace"}
    assert rep.html.exists() and rep.csv.exists()
    r0 = rows[0]["results"]["metrics"]
    assert set(r0["shifts"]) == {f"iid_noise@{s}" for s in range(1, 6)}
    assert r0["shift_drop"] == pytest.approx(sum(v["drop"] for v in r0["shifts"].values()) / 5)
    assert r0["gap"] == pytest.approx(r0["train_acc"] - r0["test_acc"]) and r0["ece_bins"] == 15


def test_failed_runs_are_recorded_with_their_message_and_shown_by_status(tmp_path):
    spec, out = _write(tmp_path, lr="[0.05, 1e12]", epochs=2), tmp_path / "study"
    result = study.run(spec, out=out, progress=False)
    assert result.counts.done == 2 and result.counts.failed == 2
    status = CliRunner().invoke(app, ["study", "status", str(out)])
    assert "2 failed" in status.output and "NonFiniteLossError" in status.output
    kept = study.run(spec, out=out, progress=False)
    assert kept.executed == 0  # failures are kept unless asked to retry
    retried = study.run(spec, out=out, progress=False, retry_failed=True)
    assert retried.executed == 2 and retried.resumed["failed_retried"] == 2


def test_impossible_combinations_are_refused_before_any_run(tmp_path):
    from flatminima.errors import FlatminimaError

    spec = study.load(_write(tmp_path)).model_dump()
    spec["models"] = {"mlp": {"widht": 8}}
    with pytest.raises(FlatminimaError, match="models.mlp"):
        study.run(spec, out=tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    spec = study.load(_write(tmp_path)).model_dump()
    spec["data"]["shifts"] = ["sunburn"]
    with pytest.raises(FlatminimaError, match="sunburn"):
        study.run(spec, out=tmp_path / "b", progress=False)
    # the same folder cannot silently mix two different studies
    good = study.load(_write(tmp_path, epochs=1)).model_dump()
    good["seeds"] = 1
    good["recipe"]["lr"] = 0.05
    study.run(good, out=tmp_path / "c", progress=False)
    good["recipe"]["lr"] = 0.1
    with pytest.raises(FlatminimaError, match="different study"):
        study.run(good, out=tmp_path / "c", progress=False)


def test_cli_run_prints_verdict_table_and_report_path(tmp_path):
    spec = _write(tmp_path, lr="[0.02, 0.1]", epochs=2)
    res = CliRunner().invoke(app, ["study", "run", str(spec), "--out", str(tmp_path / "s"), "--n-boot", "50"])
    assert res.exit_code == 0, res.output
    assert "new study" in res.output and "report:" in res.output and "verdict" in res.output
    assert (tmp_path / "s" / "report" / "report.html").exists()
    code = textwrap.dedent("""
        from flatminima.cli import main
        import sys
        sys.argv = ["flatminima", "study", "run", "--preset", "nope"]
        main()
    """)
    bad = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown preset" in bad.stdout + bad.stderr
