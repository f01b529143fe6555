"""Executors: where runs execute. Each takes ``(id, config)`` jobs and yields ``(id, ok, results|message)``.

Runs are handed out in a sliding window of ``workers`` jobs, and the coordinator claims a run (marks it
'running' in the store) only when it is handed out, so 'running' in ``study status`` means running.

* :class:`LocalExecutor`: ``workers = 1`` runs in this process (no start-up cost); more workers use a
  ``concurrent.futures`` process pool with the *spawn* start method (no inherited torch thread pools or
  locks from a fork).
* :class:`RayExecutor`: a Ray task per run, on a local Ray instance (``ray.init(num_cpus=workers)``) or
  an existing cluster (``address``). The data set is put into Ray's object store once, so nodes need no
  copy of a data file; results come back to the coordinator, which alone writes the store. Tasks are
  spread over the nodes; a task lost with its node is retried by Ray (``max_retries``).
* :class:`~flatminima.study.slurm.SubmititExecutor` (``submitit``): SLURM job arrays through submitit (or its
  ``local``/``debug`` clusters), job ids kept in the store so a restarted coordinator reattaches.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import FlatminimaError
from .worker import safe_execute

Job = tuple[str, dict[str, Any]]
Outcome = tuple[str, bool, Any]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


class LocalExecutor:
    """A local process pool (or this process when ``workers == 1``)."""

    name = "local"

    def __init__(self, workers: int = 1):
        if workers < 1:
            raise FlatminimaError(f"workers must be a positive integer, got {workers!r}.")
        self.workers = workers

    def run(self, jobs: list[Job], claim: Callable[[str], bool]) -> Iterator[Outcome]:
        if self.workers == 1:
            for rid, cfg in jobs:
                if claim(rid):
                    yield safe_execute(rid, cfg)
            return
        with ProcessPoolExecutor(
            self.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker
        ) as pool:
            queue, inflight = list(jobs), set()
            while queue or inflight:
                while queue and len(inflight) < self.workers:
                    rid, cfg = queue.pop(0)
                    if claim(rid):
                        inflight.add(pool.submit(safe_execute, rid, cfg))
                if not inflight:
                    continue
                finished, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()

    def close(self) -> None:
        pass


class RayExecutor:
    """Ray tasks, one CPU each, spread over the nodes of a local instance or of the cluster at ``address``.

    A task lost with its worker or node is retried by Ray up to ``max_retries`` times (Ray's task retries:
    the coordinator claimed the run once, and stores it once); a run whose task is still lost after that
    is marked failed with Ray's error. Each finished run's results name the node it ran on
    (``results["executor"] = {"kind": "ray", "node": <node id>, "host": ...}``).
    """

    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None, max_retries: int = 2):
        try:
            import ray
        except ImportError as err:
            raise FlatminimaError(
                "the Ray executor needs Ray: `pip install 'flatminima[ray]'` (or `pip install ray`)."
            ) from err
        self.ray, self.workers, self._owns = ray, workers, False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(
                    num_cpus=workers, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False
                )
            self._owns = True
        # SPREAD: a study's runs are independent and equal, so use every node rather than packing one
        self._remote = ray.remote(num_cpus=1, max_retries=max_retries, scheduling_strategy="SPREAD")(_ray_task)
        self.max_retries = max_retries
        self._data: dict[str, Any] = {}

    def _data_ref(self, config: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
        """The run's data set in the object store, with the call that made it (put once per data spec), so
        nodes need no data file; None when it cannot be made here (the node then loads it itself)."""
        from . import worker

        call = _data_call(worker.dataset_for, config)
        key = json.dumps(call, sort_keys=True, default=str)
        if key not in self._data:
            try:
                self._data[key] = (call, self.ray.put(worker.dataset_for(**call)))
            except Exception:  # noqa: BLE001 - not fatal: every node can still load the data itself
                self._data[key] = None
        return self._data[key]

    def run(self, jobs: list[Job], claim: Callable[[str], bool]) -> Iterator[Outcome]:
        ray, queue, inflight = self.ray, list(jobs), {}
        while queue or inflight:
            while queue and len(inflight) < self.workers:
                rid, cfg = queue.pop(0)
                if claim(rid):
                    given = self._data_ref(cfg)
                    call, ref = given if given is not None else (None, None)
                    inflight[self._remote.remote(rid, cfg, call, ref)] = rid
            if not inflight:
                continue
            done, _ = ray.wait(list(inflight), num_returns=1)
            for ref in done:
                rid = inflight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:  # lost beyond Ray's retries (node, worker, object)
                    outcome = (rid, False, f"Ray lost this run's task (after up to {self.max_retries} "
                                           f"retries): {type(err).__name__}: {str(err).strip()[:2000]}")
                yield outcome

    def close(self) -> None:
        if self._owns:
            self.ray.shutdown()


def _data_call(dataset_for: Callable[..., Any], config: dict[str, Any]) -> dict[str, Any]:
    """The arguments the worker gives ``dataset_for`` for this run: the data table, and the spec's own
    shifted test sets where ``dataset_for`` takes them."""
    import inspect

    params = list(inspect.signature(dataset_for).parameters)
    call = {params[0]: config["data"]}
    if len(params) > 1:
        call[params[1]] = config.get("shifts")
    return call


@contextmanager
def _given_dataset(call: dict[str, Any] | None, dataset: Any) -> Iterator[None]:
    """Serve ``dataset`` (from the object store) to the run when it asks for the data of ``call``, instead of
    loading it on this node. The worker loads its data through ``worker.dataset_for``; a Ray worker process
    runs one task at a time, so swapping that function for the task's duration is local to this run. Any
    other call (or a changed signature) goes to the original function: never a wrong data set."""
    import inspect

    from . import worker

    original = getattr(worker, "dataset_for", None)
    if dataset is None or call is None or original is None:
        yield
        return
    sig = inspect.signature(original)

    def provided(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)
        bound.apply_defaults()
        asked = {k: v for k, v in bound.arguments.items() if k in call or v is not None}
        return dataset if asked == call else original(*args, **kwargs)

    worker.dataset_for = provided
    try:
        yield
    finally:
        worker.dataset_for = original


def _ray_task(run_id: str, config: dict[str, Any], call: dict[str, Any] | None = None, dataset: Any = None
              ) -> Outcome:
    import ray
    import torch

    torch.set_num_threads(1)
    with _given_dataset(call, dataset):
        rid, ok, payload = safe_execute(run_id, config)
    if ok and isinstance(payload, dict):
        payload["executor"] = {"kind": "ray", "node": ray.get_runtime_context().get_node_id(),
                               "host": socket.gethostname()}
    return rid, ok, payload


def check_executor(kind: str, workers: int, address: str | None = None, *, option: str = "workers") -> None:
    """Refuse, before any data is loaded or run started, an executor this machine cannot use: an unknown kind,
    Ray or submitit not installed, or more local worker processes (``local``, or ``ray`` without an
    ``address``) than this machine's cores and memory hold (:func:`flatminima.validate.check_workers`)."""
    from ..validate import check_workers

    if kind not in ("local", "ray", "submitit"):
        raise FlatminimaError(f"executor must be one of ['local', 'ray', 'submitit'], got {kind!r}.")
    if kind == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise FlatminimaError("executor kind = 'ray' needs Ray, which is not installed: `pip install "
                                  "'flatminima[ray]'` (or `pip install ray`), or use executor kind = 'local'. "
                                  "Nothing was run.")
    if kind == "submitit":
        from .slurm import check_cluster_installed

        check_cluster_installed()
    if kind == "local" or (kind == "ray" and not address):
        check_workers(option, workers)


def make_executor(
    kind: str = "local",
    workers: int = 1,
    address: str | None = None,
    *,
    options: Any = None,
    folder: str | Path | None = None,
    store: Any = None,
) -> Any:
    """An executor by name: ``local`` (process pool), ``ray`` or ``submitit``.

    ``options`` is the spec's ``[executor]`` table (:class:`~flatminima.study.spec.ExecutorSpec`: retries and
    the SLURM settings); ``store`` (the coordinator's open store) and ``folder`` (the study folder, by
    default the store's) are where the submitit executor keeps its job ids and logs.
    """
    max_retries = options.max_retries if options is not None else 2
    if kind == "local":
        if address:
            raise FlatminimaError(f"address={address!r} needs executor='ray' (got executor='local').")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address, max_retries)
    if kind == "submitit":
        from .slurm import SubmititExecutor
        from .spec import ExecutorSpec

        if address:
            raise FlatminimaError(f"address={address!r} needs executor='ray' (got executor='submitit').")
        if options is None or options.kind != "submitit":  # --executor submitit on a spec without the table
            options = ExecutorSpec(kind="submitit", max_retries=max_retries)
        where = folder if folder is not None else getattr(store, "folder", None)
        if where is None:
            raise FlatminimaError("the submitit executor needs the study folder (make_executor(..., folder=...)).")
        return SubmititExecutor(options, where, store, workers)
    raise FlatminimaError(f"executor must be one of ['local', 'ray', 'submitit'], got {kind!r}.")
