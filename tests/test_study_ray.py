"""The Ray executor and the local process pool give the same rows for the same spec and seeds."""

from __future__ import annotations

import pytest

import flatminima.study as study

ray = pytest.importorskip("ray", reason="the Ray executor test needs Ray (`pip install ray`)")

SPEC = {
    "name": "tiny_ray",
    "seeds": 2,
    "data": {"name": "mnist1d", "options": {"num_samples": 300, "seed": 3}, "shifts": "none"},
    "models": {"mlp": {"width": 8}},
    "recipe": {"lr": [0.03, 0.1], "batch_size": 32, "epochs": 3},
    "measures": {"lambda_max": {}, "trace": {"method": "hutchinson", "samples": 6}},
}


def _rows(folder):
    with study.Store(folder) as store:
        rows = store.rows()
    out = {}
    for r in rows:
        res = dict(r["results"])
        res.pop("seconds")
        res.pop("executor", None)  # where the run executed (a Ray node): not part of the result
        res["measures"] = {
            k: {"value": m["value"], "stderr": m["stderr"]} for k, m in res["measures"].items()
        }
        out[r["id"]] = (r["status"], r["config"], res)
    return out


def test_ray_and_local_pool_give_identical_rows(tmp_path):
    local = study.run(SPEC, out=tmp_path / "local", executor="local", workers=2, progress=False)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        remote = study.run(SPEC, out=tmp_path / "ray", executor="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert local.counts.done == remote.counts.done == 4
    a, b = _rows(tmp_path / "local"), _rows(tmp_path / "ray")
    assert a.keys() == b.keys()
    for rid in a:
        assert a[rid] == b[rid], f"run {rid} differs between executors"
