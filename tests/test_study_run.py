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
import torch
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
samples = 8
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
    rep = study.report(out, samples=100)
    assert {r["target"] for r in rep.table} == {"gap", "shift_drop", "ece", "test_acc", "effective_robustness"}
    assert {r["measure"] for r in rep.table} == {"lambda_max", "trace"}
    assert rep.html.exists() and rep.csv.exists()
    r0 = rows[0]["results"]["metrics"]
    assert set(r0["shifts"]) == {f"iid_noise@{s}" for s in range(1, 6)}
    assert r0["shift_drop"] == pytest.approx(sum(v["drop"] for v in r0["shifts"].values()) / 5)
    assert r0["gap"] == pytest.approx(r0["train_acc"] - r0["test_acc"]) and r0["ece_bins"] == 15


def test_failed_runs_are_recorded_with_their_message_and_shown_by_status(tmp_path):
    spec, out = _write(tmp_path, lr="[0.05, 1000.0]", epochs=2), tmp_path / "study"
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
    res = CliRunner().invoke(app, ["study", "run", str(spec), "--out", str(tmp_path / "s"), "--samples", "50"])
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


def test_runs_missing_the_target_train_loss_are_kept_and_flagged(tmp_path):
    spec = study.load(_write(tmp_path, lr="[0.005, 0.05]", epochs=12)).model_dump()
    spec["recipe"]["target_train_loss"] = 1.5
    spec["measures"] = {"lambda_max": {}}
    spec["data"]["shifts"] = "none"
    result = study.run(spec, out=tmp_path / "s", progress=False)
    assert result.counts.done == 4 and result.counts.failed == 0
    with study.Store(tmp_path / "s") as store:
        rows = store.rows()
    by_lr = {}
    for r in rows:
        t = r["results"]["training"]
        assert set(t) == {"epochs_run", "final_train_loss", "reached_target", "target_train_loss"}
        assert t["target_train_loss"] == 1.5 and "final_train_loss" in r["results"]
        by_lr.setdefault(r["config"]["recipe"]["lr"], []).append(t)
    assert all(t["reached_target"] is False and t["epochs_run"] == 12 and t["final_train_loss"] > 1.5
               for t in by_lr[0.005])  # too slow: kept, flagged
    assert all(t["reached_target"] is True and t["epochs_run"] < 12 and t["final_train_loss"] <= 1.5
               for t in by_lr[0.05])


def test_a_measure_taking_init_gets_the_initial_parameters(tmp_path):
    from flatminima.sharpness import Measure, registry
    from flatminima.study.worker import build_model, dataset_for
    from flatminima.train import flat_params

    seen = {}

    def probe(obj, *, init=None, scale=1.0):
        seen["init"], seen["params"] = init, obj.params
        return Measure("init_probe", float((obj.params - init).norm()) * scale)

    registry.register("init_probe", "test only: distance from init")(probe)
    try:
        spec = study.load(_write(tmp_path, lr="0.05", epochs=2)).model_dump()
        spec["measures"] = {"init_probe": {}}
        spec["seeds"] = 1
        config = study.expand(study.validate(spec))[0].to_dict()
        res = execute(config)
        expected = flat_params(build_model(config, dataset_for(config["data"])))
        assert seen["init"].dtype == seen["params"].dtype == torch.float32  # the spec's default dtype
        assert torch.equal(seen["init"], expected) and seen["init"].shape == seen["params"].shape
        assert res["measures"]["init_probe"]["value"] == pytest.approx(float((seen["params"] - expected).norm()))
        given = torch.zeros_like(expected)  # the spec's own init wins
        config["measures"] = {"init_probe": {"init": given}}
        execute(config)
        assert seen["init"] is given
    finally:
        registry._REGISTRY.pop("init_probe", None)


def test_an_unconverged_lambda_max_is_stored_as_such_and_the_report_says_so(tmp_path):
    import csv

    spec = study.load(_write(tmp_path, lr="[0.02, 0.05, 0.1]", epochs=2)).model_dump()
    spec["measures"] = {"lambda_max": {"max_iter": 2}, "grad_norm": {}}  # 2 Lanczos steps: cannot converge
    spec["data"]["shifts"] = "none"
    spec["seeds"] = 1
    result = study.run(spec, out=tmp_path / "s", progress=False)
    assert result.counts.done == 3 and result.counts.failed == 0
    with study.Store(tmp_path / "s") as store:
        rows = store.rows("done")
    for r in rows:
        lam, grad = r["results"]["measures"]["lambda_max"], r["results"]["measures"]["grad_norm"]
        assert lam["converged"] is False and lam["extra"]["iterations"] == 2 and lam["extra"]["error_bound"] > 0
        assert lam["config"]["max_iter"] == 2 and lam["config"]["tol"] == 1e-4  # every setting, defaults too
        assert grad["converged"] is None and grad["config"]["seed"] is None  # nothing to converge
    rep = study.report(tmp_path / "s", samples=50)
    note = next(n for n in rep.notes if "did not converge" in n)
    assert note.startswith("3 measured value(s) did not converge") and note.count(": lambda_max") == 3
    assert "kept in the correlations" in note and "did not converge" in rep.html.read_text()
    with (rep.html.parent / "runs.csv").open() as fh:
        assert [r["unconverged"] for r in csv.DictReader(fh)] == ["lambda_max"] * 3
