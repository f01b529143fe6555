"""The Ray executor across nodes: a head and two worker nodes on this machine (`ray.cluster_utils.Cluster`),
runs spread over the nodes, a worker node removed mid-study, every row stored exactly once; and the data
reaching a task through Ray's object store (no data file needed on the node)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import flatminima.study as study
from flatminima.study import executors, worker

ray = pytest.importorskip("ray", reason="the Ray cluster test needs Ray (`pip install ray`)")
cluster_utils = pytest.importorskip("ray.cluster_utils")

SPEC = {
    "name": "tiny_ray_cluster",
    "seeds": 2,
    "data": {"name": "two_class", "options": {"num_samples": 200}, "shifts": "none"},
    "models": {"mlp": {"width": 8}},
    "recipe": {"lr": [0.03, 0.05, 0.1], "batch_size": 32, "epochs": 1},
    "measures": {"lambda_max": {}},
    "executor": {"kind": "ray", "workers": 3, "max_retries": 3},
}


@pytest.fixture(scope="module")
def cluster():
    """A head and two worker nodes, one CPU each; the driver (this process) connected to the head."""
    if ray.is_initialized():
        ray.shutdown()
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = [c.add_node(num_cpus=1) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    try:
        yield c, nodes
    finally:
        ray.shutdown()
        c.shutdown()


def test_runs_spread_over_nodes_and_a_node_lost_mid_study_loses_no_run(tmp_path, cluster):
    c, nodes = cluster
    out, box = tmp_path / "study", {}

    def coordinate():
        try:
            box["result"] = study.run(SPEC, out=out, progress=False)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test thread
            box["error"] = err

    thread = threading.Thread(target=coordinate, daemon=True)
    thread.start()
    deadline = time.time() + 240  # generous: three raylets and their workers share two cores
    removed = False
    while thread.is_alive() and time.time() < deadline:
        if not removed and (out / "study.sqlite").exists():
            with study.Store(out, readonly=True) as store:
                counts = store.counts()
            if counts.done >= 1 and counts.running >= 1:  # mid-study: some runs done, others in flight
                c.remove_node(nodes[1])
                removed = True
        time.sleep(0.2)
    thread.join(timeout=max(1.0, deadline - time.time()))
    assert not thread.is_alive(), "the study did not finish after a node was removed"
    if "error" in box:
        raise box["error"]
    assert removed, "the node was not removed mid-study (the study finished first)"
    res = box["result"]
    assert res.counts.done == 6 and res.counts.total == 6 and res.counts.failed == 0
    with study.Store(out) as store:
        rows = store.rows()
    configs = study.expand(study.validate(SPEC))
    assert sorted(r["id"] for r in rows) == sorted(cfg.id for cfg in configs), "every run exactly once"
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in rows)  # claimed once, stored once
    nodes_used = {r["results"]["executor"]["node"] for r in rows}
    assert len(nodes_used) >= 2, f"the runs all ran on one node: {nodes_used}"
    assert ray.is_initialized(), "the executor must not shut down a Ray it did not start"


def test_a_task_gets_its_data_from_the_object_store_not_the_nodes_disk(tmp_path, cluster):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=rng.normal(size=(80, 3)).astype(np.float32), y_train=rng.integers(0, 2, 80),
             x_test=rng.normal(size=(40, 3)).astype(np.float32), y_test=rng.integers(0, 2, 40))
    spec = study.validate(SPEC | {"data": {"name": str(path), "shifts": "none"}, "seeds": 1,
                                  "recipe": {"lr": 0.05, "batch_size": 16, "epochs": 1}})
    (config,) = study.expand(spec)
    cfg = config.to_dict()
    call = executors._data_call(worker.dataset_for, cfg)
    dataset = ray.get(ray.put(worker.dataset_for(**call)))  # what the executor puts into the object store
    path.unlink()  # the node has no copy of the file
    rid, ok, payload = executors._ray_task(config.id, cfg, call, dataset)
    assert ok, payload
    assert payload["measures"]["lambda_max"]["value"] > 0 and "node" in payload["executor"]
    assert worker.dataset_for.__name__ == "dataset_for", "the worker's loader is restored after the task"
    rid, ok, payload = executors._ray_task(config.id, cfg)  # without it, the missing file is the run's error
    assert not ok and "data.npz" in payload
