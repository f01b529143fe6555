"""The submitit executor: the same rows as the local executor (submitit's local and debug clusters), and
SLURM checked against a fake sbatch/srun/sacct/scancel on PATH (what would be submitted, refusals, time
limits, a coordinator killed and restarted that reattaches to its jobs)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import flatminima.study as study
from flatminima.cli import app
from flatminima.errors import FlatminimaError
from flatminima.study import slurm

submitit = pytest.importorskip("submitit", reason="the submitit executor needs submitit (`pip install submitit`)")

SPEC = {
    "name": "tiny_submitit",
    "seeds": 2,
    "data": {"name": "two_class", "options": {"num_samples": 200}, "shifts": "none"},
    "models": {"mlp": {"width": 8}},
    "recipe": {"lr": [0.05, 0.1], "batch_size": 32, "epochs": 1},
    "measures": {"lambda_max": {}},
}

_JOB_BASE = itertools.count(1000, 1000)  # distinct fake SLURM job ids per test: submitit's watcher is shared


def _numbers(folder):
    """Each run's measured and evaluated numbers (everything but timings and provenance)."""
    with study.Store(folder) as store:
        rows = store.rows()
    out = {}
    for r in rows:
        res = r["results"] or {}
        measures = {k: {"value": m["value"], "stderr": m["stderr"]} for k, m in res.get("measures", {}).items()}
        out[r["id"]] = (r["status"], measures, res.get("metrics"), res.get("training"))
    return out


def test_local_submitit_local_and_debug_store_identical_numbers(tmp_path):
    spec = SPEC | {"seeds": 1}  # two runs: each submitit-local job is a fresh Python process (seconds of start-up)
    ref = study.run(spec, out=tmp_path / "local", progress=False)
    loc = study.run(spec | {"executor": {"kind": "submitit", "cluster": "local"}}, out=tmp_path / "sl",
                    workers=2, progress=False)
    dbg = study.run(spec | {"executor": {"kind": "submitit", "cluster": "debug"}}, out=tmp_path / "sd",
                    progress=False)
    assert ref.counts.done == loc.counts.done == dbg.counts.done == 2
    a, b, c = _numbers(tmp_path / "local"), _numbers(tmp_path / "sl"), _numbers(tmp_path / "sd")
    assert a.keys() == b.keys() == c.keys()
    for rid in a:
        assert a[rid] == b[rid] == c[rid], f"run {rid} differs between executors"
    with study.Store(tmp_path / "sl") as store:
        jobs = store.get_meta(slurm.JOBS_META)
        rows = store.rows()
    assert {j["state"] for j in jobs.values()} == {"done"} and len(jobs) == 2
    for r in rows:  # each row names the job that computed it
        assert r["results"]["executor"]["job_id"] == jobs[r["id"]]["job_id"]
        assert r["results"]["executor"]["cluster"] == "local"
    # submitit's logs live in <study>/submitit by default, never beside the store's file
    assert any((tmp_path / "sl" / "submitit").iterdir())


# ---- a fake SLURM ---------------------------------------------------------------------------------------
SBATCH = r"""#!/bin/bash
# records its arguments and the submitted script, then answers as SLURM would (or refuses)
log={log}
n=$(ls "$log"/sbatch-*.args 2>/dev/null | wc -l)
echo "$@" > "$log/sbatch-$n.args"
cp "${{@: -1}}" "$log/sbatch-$n.sh"
if [ -f "$log/reject" ]; then
  echo "sbatch: error: invalid partition specified: $(grep -o 'partition=.*' "${{@: -1}}" | cut -d= -f2)" >&2
  echo "sbatch: error: Batch job submission failed: Invalid partition name specified" >&2
  exit 1
fi
id=$(( {base} + n ))
size=$(grep -o 'array=0-[0-9]*' "${{@: -1}}" | cut -d- -f2)
echo "${{size:-none}}" > "$log/array-$id"
echo "Submitted batch job $id"
"""

SACCT = r"""#!/bin/bash
# JobID|State|NodeList for each -j: the state in $log/state-<id>, else $log/state, else RUNNING
log={log}
echo "$@" >> "$log/sacct.calls"
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then
    id=$2; shift
    state=RUNNING
    [ -f "$log/state" ] && state=$(cat "$log/state")
    [ -f "$log/state-$id" ] && state=$(cat "$log/state-$id")
    size=$(cat "$log/array-$id" 2>/dev/null)
    if [ "$size" = "none" ] || [ -z "$size" ]; then
      echo "$id|$state|node1"
    else
      for i in $(seq 0 "$size"); do echo "${{id}}_$i|$state|node1"; done
    fi
  fi
  shift
done
"""

RECORD = r"""#!/bin/bash
echo "$@" >> {log}/{name}.calls
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch/srun/sacct/scancel/squeue scripts on PATH; returns the folder where they log what they got."""
    bin_dir, log = tmp_path / "bin", tmp_path / "slurm-log"
    bin_dir.mkdir()
    log.mkdir()
    base = next(_JOB_BASE)
    scripts = {"sbatch": SBATCH.format(log=log, base=base), "sacct": SACCT.format(log=log)}
    for name in ("srun", "scancel", "squeue"):
        scripts[name] = RECORD.format(log=log, name=name)
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # a fresh watcher (it caches states by job id across tests), fast polling, no file-system grace
    monkeypatch.setattr(submitit.SlurmJob, "watcher", type(submitit.SlurmJob.watcher)(delay_s=600))
    monkeypatch.setattr(slurm, "POLL_S", {"slurm": 0.05, "local": 0.05, "debug": 0.0})
    monkeypatch.setattr(slurm, "RESULT_GRACE_S", 0.0)
    return log


def _slurm_spec(**executor):
    return SPEC | {"executor": {"kind": "submitit", "cluster": "slurm"} | executor}


def _sbatch_calls(log: Path) -> list[tuple[str, str]]:
    calls = sorted(log.glob("sbatch-*.args"), key=lambda p: int(p.stem.split("-")[1]))
    return [(p.read_text().strip(), p.with_suffix(".sh").read_text()) for p in calls]


def test_time_limit_resubmits_then_fails_with_slurms_reason_and_sbatch_gets_the_settings(tmp_path, fake_slurm):
    (fake_slurm / "state").write_text("TIMEOUT")
    spec = _slurm_spec(partition="gpu", time_min=30, cpus_per_task=2, gpus_per_node=1, mem_gb=8,
                       array_parallelism=2, max_retries=1, slurm_additional_parameters={"account": "proj"})
    res = study.run(spec, out=tmp_path / "s", progress=False)
    assert res.counts.failed == 4 and res.counts.done == 0
    calls = _sbatch_calls(fake_slurm)
    assert len(calls) == 2, "one job array, then one resubmission of the 4 runs (max_retries = 1)"
    for argv, script in calls:
        assert argv.endswith(".sh") and len(argv.split()) == 1  # sbatch <script>: settings are in the script
        for line in ("#SBATCH --partition=gpu", "#SBATCH --time=30", "#SBATCH --array=0-3%2",
                     "#SBATCH --cpus-per-task=2", "#SBATCH --gpus-per-node=1", "#SBATCH --mem=8GB",
                     "#SBATCH --account=proj", "#SBATCH --job-name=flatminima"):
            assert line in script.splitlines(), f"{line!r} missing from the submitted script:\n{script}"
        assert "-m submitit.core._submit" in script and str(tmp_path / "s" / "submitit") in script
    with study.Store(tmp_path / "s") as store:
        rows = store.rows()
        jobs = store.get_meta(slurm.JOBS_META)
    for r in rows:
        assert r["status"] == "failed"
        assert "TIMEOUT" in r["error"] and "2 time(s)" in r["error"] and "max_retries = 1" in r["error"]
        assert len(jobs[r["id"]]["lost"]) == 2 and jobs[r["id"]]["state"] == "failed"
    # `study status` names each run's state and its (last) job id
    out = CliRunner().invoke(app, ["study", "status", str(tmp_path / "s")], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert out.output.count("failed") >= 4 and jobs[rows[0]["id"]]["job_id"] in out.output


def test_sbatch_refusing_the_partition_shows_its_message_and_loses_no_run(tmp_path, fake_slurm):
    (fake_slurm / "reject").write_text("")
    with pytest.raises(FlatminimaError) as err:
        study.run(_slurm_spec(partition="nope"), out=tmp_path / "s", progress=False)
    assert "invalid partition specified: nope" in str(err.value) and "stay pending" in str(err.value)
    with study.Store(tmp_path / "s") as store:
        assert store.counts().pending == 4 and store.counts().running == 0
        assert not store.get_meta(slurm.JOBS_META)


def test_no_sbatch_on_path_is_refused_before_anything_is_submitted(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no SLURM command anywhere
    with pytest.raises(FlatminimaError, match="needs SLURM's `sbatch`"):
        slurm.check_cluster("slurm")
    spec_file = tmp_path / "s.toml"
    spec_file.write_text('name = "x"\n[executor]\nkind = "submitit"\ncluster = "slurm"\n')
    out = CliRunner().invoke(app, ["study", "run", str(spec_file), "--out", str(tmp_path / "out")])
    assert isinstance(out.exception, FlatminimaError) and "`sbatch`" in str(out.exception)
    assert not (tmp_path / "out").exists(), "nothing is created before the cluster is checked"


def _run_held_job(job_folder: Path, job_id: str) -> None:
    """Play SLURM: execute one array task of the fake cluster in this process and write its result file."""
    from submitit.core import utils

    paths = utils.JobPaths(job_folder, job_id=job_id, task_id=0)
    result = utils.DelayedSubmission.load(paths.submitted_pickle).result()
    utils.cloudpickle_dump(("success", result), paths.result_pickle)


def test_a_killed_coordinator_is_restarted_and_reattaches_to_its_jobs(tmp_path, fake_slurm):
    out = tmp_path / "s"
    script = (f"import flatminima.study as s; s.run({_slurm_spec()!r}, out={str(out)!r}, progress=False)")
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while True:  # the jobs are queued (sacct: RUNNING, no result) and their ids are in the store
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the coordinator did not submit in time"
            if _sbatch_calls(fake_slurm) and (out / "study.sqlite").exists():
                with study.Store(out, readonly=True) as store:
                    if store.counts().running == 4:
                        jobs = store.get_meta(slurm.JOBS_META)
                        break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    folder = out / "submitit"
    ids = sorted(j["job_id"] for j in jobs.values())
    for job_id in ids[:2]:  # two finished while no coordinator was running
        _run_held_job(folder, job_id)
    later = threading.Timer(1.0, lambda: [_run_held_job(folder, j) for j in ids[2:]])  # two finish afterwards
    later.start()
    try:
        res = study.run(_slurm_spec(), out=out, progress=False)
    finally:
        later.join()
    assert len(_sbatch_calls(fake_slurm)) == 1, "the restarted coordinator must not submit the runs again"
    assert res.counts.done == 4 and res.counts.total == 4
    with study.Store(out) as store:
        rows = store.rows()
    assert sorted(r["results"]["executor"]["job_id"] for r in rows) == ids


def test_a_job_slurm_has_forgotten_is_lost_not_waited_on_forever(tmp_path, fake_slurm, monkeypatch):
    # sacct answers UNKNOWN for a job it no longer lists (purged after MinJobAge, or slurmdbd down); UNKNOWN
    # counts as alive, so before this the coordinator polled such a job forever
    import signal

    (fake_slurm / "state").write_text("UNKNOWN")
    monkeypatch.setattr(slurm, "FORGOTTEN_S", 0.3)

    def hung(*_):
        raise AssertionError("the study still waits on jobs SLURM has forgotten")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        res = study.run(_slurm_spec(max_retries=0), out=tmp_path / "s", progress=False)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert res.counts.failed == 4 and res.counts.done == 0
    with study.Store(tmp_path / "s") as store:
        rows = store.rows()
    for r in rows:
        assert "UNKNOWN" in r["error"] and "left no result" in r["error"], r["error"]
