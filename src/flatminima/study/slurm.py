"""The submitit executor: a study's runs as SLURM job arrays (or submitit's ``local``/``debug`` clusters).

Each batch of pending runs becomes one job array (``submitit.AutoExecutor.map_array``); each array task
runs :func:`~flatminima.study.worker.safe_execute` on one run's config and *returns* its results through
submitit's result file. The coordinator collects them and alone writes the store: jobs never open the
SQLite file, so they need the submitit folder on a shared file system but not the store.

Job ids are kept in the store (meta entry ``submitit_jobs``: run id -> job id, state, lost attempts), written
*before* the runs are claimed, so a coordinator that is killed and started again reattaches to the jobs
still queued or running (``submitit.SlurmJob(folder, job_id)``) and collects the results of those that
finished meanwhile, instead of submitting them again. A run is stored once whatever happens: a result
that arrives for a run already stored is dropped by the store (only a running row can become done).

A job that ends without a result (time limit, pre-emption, node failure, cancellation: SLURM's state
says so, or no result file appears) is resubmitted, up to ``max_retries`` times, then the run is marked
failed with SLURM's state as the reason. A failure *inside* a run (an exception in training) is an
ordinary failed run, not retried: it would fail again.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import FlatminimaError

Job = tuple[str, dict[str, Any]]
Outcome = tuple[str, bool, Any]

JOBS_META = "submitit_jobs"
"""The store's meta entry holding each run's submitit job: ``{run_id: {"job_id", "cluster", "state", ...}}``."""

RESULT_GRACE_S = 30.0
"""How long a job that SLURM reports ended may take to show its result file (a shared file system can
lag behind the scheduler) before the job counts as lost. Tests shorten it."""

FORGOTTEN_S = 900.0
"""How long ``sacct`` may answer UNKNOWN for a job before the job counts as lost (its records are purged some
time after it ends, MinJobAge, and an accounting daemon that is down answers nothing): without a result file by
then, the run is resubmitted like any lost job (``max_retries``), never waited on forever. Tests shorten it."""

MAX_ARRAY = 1000
"""The most runs in one job array (SLURM's default MaxArraySize is 1001); a larger study submits several."""

POLL_S = {"slurm": 2.0, "local": 0.2, "debug": 0.0}
"""Seconds between two looks at the jobs in flight (SLURM itself is asked by submitit's watcher, which
spaces its ``sacct`` calls out to at most one every few minutes for long jobs)."""

# SLURM states in which a job may still produce a result; every other state is an end (TIMEOUT,
# PREEMPTED, NODE_FAIL, CANCELLED, FAILED, OUT_OF_MEMORY, BOOT_FAIL, DEADLINE, COMPLETED)
_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
          "SUSPENDED", "RESIZING", "READY", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD", "UNKNOWN"}
_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "READY", "UNKNOWN"}


def _import_submitit():
    try:
        import submitit
    except ImportError as err:
        raise FlatminimaError(
            "executor kind = 'submitit' needs submitit: `pip install 'flatminima[slurm]'` (or `pip install submitit`)."
        ) from err
    return submitit


def check_cluster_installed() -> None:
    """Refuse the submitit executor where submitit is not installed (before any data is loaded)."""
    _import_submitit()


def check_cluster(cluster: str) -> None:
    """Refuse a cluster this machine cannot submit to, before anything is submitted."""
    _import_submitit()
    if cluster == "slurm":
        missing = [cmd for cmd in ("sbatch", "srun", "sacct") if shutil.which(cmd) is None]
        if missing:
            raise FlatminimaError(
                f"executor.cluster = 'slurm' needs SLURM's {', '.join(f'`{m}`' for m in missing)} on PATH (not "
                "found): run the study from a SLURM login node, or set executor.cluster = 'local' to try the "
                "same set-up on this machine. Nothing was submitted."
            )
    elif cluster not in ("local", "debug"):
        raise FlatminimaError(f"executor.cluster must be 'slurm', 'local' or 'debug', got {cluster!r}.")


def _submitit_task(run_id: str, config: dict[str, Any]) -> Outcome:
    """One array task: the run, with where it ran (host and job id) under ``results["executor"]``."""
    from .worker import safe_execute  # here, not at the top: `study status` reads the job table without torch

    rid, ok, payload = safe_execute(run_id, config)
    if ok:
        try:
            import submitit

            job_id = submitit.JobEnvironment().job_id
        except Exception:  # noqa: BLE001 - the job id is provenance only
            job_id = None
        payload["executor"] = {"kind": "submitit", "host": socket.gethostname(), "job_id": job_id}
    return rid, ok, payload


class SubmititExecutor:
    """Runs as submitit job arrays on SLURM (``cluster="slurm"``), local processes or in-process (``debug``).

    ``options`` is the spec's ``[executor]`` table; ``study_folder`` holds the ``submitit`` log folder by
    default; ``store`` (the coordinator's open :class:`~flatminima.store.Store`) keeps the job ids so a
    restarted coordinator reattaches. ``workers`` is how many runs the ``local`` cluster runs at a time.
    """

    name = "submitit"

    def __init__(self, options: Any, study_folder: str | Path, store: Any = None, workers: int = 1):
        submitit = _import_submitit()
        self.options, self.store, self.workers = options, store, max(1, workers)
        self.cluster = options.cluster
        check_cluster(self.cluster)
        self.folder = Path(options.folder) if options.folder else Path(study_folder) / "submitit"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._submitit = submitit
        params: dict[str, Any] = {"name": "flatminima", "timeout_min": options.time_limit_min}
        if options.cpus_per_task is not None:
            params["cpus_per_task"] = options.cpus_per_task
        if options.gpus_per_node is not None:
            params["gpus_per_node"] = options.gpus_per_node
        if options.mem_gb is not None:
            params["mem_gb"] = options.mem_gb
        if options.partition is not None:
            params["slurm_partition"] = options.partition
        if options.array_parallelism is not None:
            params["slurm_array_parallelism"] = options.array_parallelism
        if options.slurm_additional_parameters:
            params["slurm_additional_parameters"] = dict(options.slurm_additional_parameters)
        try:
            self._executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
            self._executor.update_parameters(**params)
        except (ValueError, NameError, AssertionError, RuntimeError) as err:
            raise FlatminimaError(f"[executor] settings refused by submitit ({self.cluster} cluster): {err}") from None
        self.records: dict[str, dict[str, Any]] = dict(store.get_meta(JOBS_META, {}) or {}) if store else {}
        self.reattached = 0

    # ---- records in the store -----------------------------------------------------------------------
    def _save(self) -> None:
        if self.store is not None:
            self.store.set_meta(JOBS_META, self.records)

    def _record(self, rid: str, job: Any, attempt_reasons: list[str]) -> None:
        self.records[rid] = {"job_id": str(job.job_id), "cluster": self.cluster, "folder": str(self.folder),
                             "state": "queued", "submitted": time.time(), "lost": attempt_reasons}

    # ---- submitting --------------------------------------------------------------------------------
    def _submit(self, batch: list[Job]) -> list[Any]:
        """One job array for ``batch``; a refusal (sbatch's message) raises, leaving the runs unclaimed."""
        from submitit.core import utils
        try:
            with self._submitit.helpers.clean_env():  # a coordinator inside a SLURM job must not leak its job
                return self._executor.map_array(_submitit_task, [r for r, _ in batch], [c for _, c in batch])
        except (utils.FailedJobError, utils.FailedSubmissionError, OSError) as err:
            message = str(err).strip() or type(err).__name__
            raise FlatminimaError(
                f"submitting a job array of {len(batch)} run(s) to the {self.cluster} cluster failed; the "
                f"scheduler said:\n  {message}\nThose runs were not submitted and stay pending: fix [executor] "
                "(partition, time_min, mem_gb, slurm_additional_parameters, ...) and run the study again."
            ) from None

    def _reattach(self, rids: list[str]) -> dict[str, Any]:
        """The jobs a previous coordinator left for ``rids`` that may still give a result (one ``sacct`` call)."""
        if self.cluster == "debug":  # debug jobs lived in the dead coordinator's memory
            return {}
        candidates = {}
        for rid in rids:
            rec = self.records.get(rid)
            if not rec or rec.get("cluster") != self.cluster or rec.get("state") in ("done", "failed"):
                continue
            job_cls = self._submitit.SlurmJob if self.cluster == "slurm" else self._submitit.LocalJob
            candidates[rid] = job_cls(folder=rec.get("folder", self.folder), job_id=rec["job_id"])
        if self.cluster == "slurm" and candidates:
            self._submitit.SlurmJob.watcher.update()  # one sacct call for every job of the study
        alive = {}
        for rid, job in candidates.items():
            if job.paths.result_pickle.exists():
                alive[rid] = job
            elif self.cluster == "slurm" and _slurm_state(job, mode="cache") in _ALIVE:
                alive[rid] = job
            # a local job without a result died with (or outlived) its coordinator: submitted again
        return alive

    # ---- the protocol ------------------------------------------------------------------------------
    def run(self, jobs: list[Job], claim: Callable[[str], bool]) -> Iterator[Outcome]:
        queue: list[Job] = []
        inflight: dict[str, dict[str, Any]] = {}  # rid -> {"job", "cfg", "ended"}
        changed = False
        for rid, _ in jobs:
            rec = self.records.get(rid)
            if rec and rec.get("state") == "failed":  # retried (--retry-failed): a fresh count of attempts
                del self.records[rid]
                changed = True
        left = self._reattach([rid for rid, _ in jobs])
        for rid, cfg in jobs:
            job = left.get(rid)
            if job is not None and claim(rid):
                inflight[rid] = {"job": job, "cfg": cfg, "ended": None}
                self.reattached += 1
            else:
                queue.append((rid, cfg))
        if changed:
            self._save()
        window = len(jobs) if self.cluster == "slurm" else self.workers  # SLURM throttles arrays itself
        while queue or inflight:
            free = min(max(0, window - len(inflight)), MAX_ARRAY)
            if queue and free:
                batch, queue = queue[:free], queue[free:]
                self._start(batch, inflight, claim)
            progressed = dirty = False
            for rid in list(inflight):
                outcome = self._poll(rid, inflight[rid])
                if outcome is None:
                    continue
                progressed = True
                kind, value = outcome
                entry = inflight.pop(rid)
                rec = self.records.setdefault(rid, {"lost": []})
                if kind == "lost":
                    rec.setdefault("lost", []).append(value)
                    if len(rec["lost"]) <= self.options.max_retries:
                        rec["state"] = "resubmitting"
                        queue.append((rid, entry["cfg"]))
                        dirty = True
                        continue
                    rec["state"] = "failed"
                    dirty = True
                    yield rid, False, (
                        f"the {self.cluster} job of this run ended without a result {len(rec['lost'])} time(s) "
                        f"(max_retries = {self.options.max_retries}): " + "; ".join(rec["lost"])
                    )
                    continue
                rec["state"] = "done" if kind == "ok" else "failed"
                dirty = True
                if kind == "ok":
                    _, ok, payload = value
                    if ok and isinstance(payload, dict):
                        payload.setdefault("executor", {}).update(
                            {"kind": "submitit", "cluster": self.cluster, "job_id": rec.get("job_id"),
                             "attempt": len(rec.get("lost", [])) + 1})
                    yield value
                else:
                    yield rid, False, value
            # one write of the job table per pass, not per run: it holds every run of the study
            if self._refresh_states(inflight) or dirty:
                self._save()
            if not progressed and inflight:
                time.sleep(POLL_S[self.cluster])

    def _start(self, batch: list[Job], inflight: dict[str, dict[str, Any]], claim: Callable[[str], bool]) -> None:
        """Submit ``batch`` as one array, record the job ids, then claim the runs (new ones) in the store."""
        submitted = self._submit(batch)
        for (rid, cfg), job in zip(batch, submitted, strict=True):
            lost = list(self.records.get(rid, {}).get("lost", []))
            self._record(rid, job, lost)
            inflight[rid] = {"job": job, "cfg": cfg, "ended": None, "resubmitted": bool(lost)}
        self._save()  # the job ids are in the store before any run is claimed: a restart reattaches
        for rid, _ in batch:
            if inflight[rid]["resubmitted"]:
                continue  # still claimed ('running') since its first submission
            if not claim(rid):  # not pending any more (cannot happen with one writer): do not run it twice
                job = inflight.pop(rid)["job"]
                _cancel(job)
                self.records.pop(rid, None)

    def _poll(self, rid: str, entry: dict[str, Any]) -> tuple[str, Any] | None:
        """``None`` (still queued or running), ``("ok", outcome)``, ``("error", message)`` or ``("lost", reason)``."""
        from submitit.core import utils

        job = entry["job"]
        if self.cluster == "debug":  # runs in this process, now
            return "ok", job.result()
        if job.paths.result_pickle.exists():
            try:
                return "ok", job.result()
            except utils.FailedJobError as err:  # the job raised outside safe_execute (e.g. a broken install)
                return "error", f"the {self.cluster} job {job.job_id} failed: {err}"
            except utils.UncompletedJobError as err:
                return "lost", f"job {job.job_id}: {str(err).splitlines()[0]}"
        if self.cluster == "slurm":
            state = _slurm_state(job)
            if state == "UNKNOWN":
                return self._forgotten(job, entry)
            entry.pop("unknown_since", None)
            if state in _ALIVE:
                return None
        else:
            if not job.done():
                return None
            state = str(job.state)
        if entry["ended"] is None:  # give the file system time to show a result written at the very end
            entry["ended"] = time.time()
        if time.time() - entry["ended"] < RESULT_GRACE_S:
            return None
        return "lost", f"job {job.job_id} {state}" + _log_tail(job)

    @staticmethod
    def _forgotten(job: Any, entry: dict[str, Any]) -> tuple[str, str] | None:
        """``None`` while SLURM's UNKNOWN may still turn into a state; ``("lost", why)`` after FORGOTTEN_S."""
        since = entry.setdefault("unknown_since", time.time())
        if time.time() - since < FORGOTTEN_S:
            return None
        return "lost", (f"job {job.job_id}: SLURM has answered UNKNOWN for its state for {time.time() - since:.0f} s "
                        "(sacct no longer lists it, or the accounting daemon is down) and it left no result")

    def _refresh_states(self, inflight: dict[str, dict[str, Any]]) -> bool:
        """Queued / running, as submitit last saw it, into the records (for ``study status``)."""
        changed = False
        for rid, entry in inflight.items():
            job, rec = entry["job"], self.records.get(rid)
            if rec is None:
                continue
            if self.cluster == "slurm":
                state = "queued" if _slurm_state(job, mode="cache") in _QUEUED else "running"
            else:
                state = "running" if self.cluster == "local" else "queued"
            if rec.get("state") != state:
                rec["state"], changed = state, True
        return changed

    def close(self) -> None:
        """Nothing to cancel: jobs left in the queue are reattached by the next ``study run``."""


def _slurm_state(job: Any, mode: str = "standard") -> str:
    """SLURM's state of ``job`` (first word: ``CANCELLED by 123`` -> ``CANCELLED``), via submitit's watcher."""
    try:
        state = job.watcher.get_state(job.job_id, mode=mode)
    except Exception:  # noqa: BLE001 - sacct trouble: submitit says UNKNOWN too
        state = "UNKNOWN"
    return (str(state).split() or ["UNKNOWN"])[0].upper()


def _cancel(job: Any) -> None:
    try:
        job.cancel(check=False)
    except Exception:  # noqa: BLE001 - best effort
        pass


def _log_tail(job: Any) -> str:
    """The last line of the job's stderr, when there is one (SLURM writes its reason there too)."""
    try:
        text = job.stderr() or ""
    except Exception:  # noqa: BLE001 - logs are optional
        return ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return f" ({lines[-1].strip()[:300]})" if lines else ""


def job_states(store: Any) -> dict[str, dict[str, Any]]:
    """Each run's submitit job as the coordinator last recorded it (``{}`` when submitit was not used)."""
    return dict(store.get_meta(JOBS_META, {}) or {})
