"""Executors: where runs execute. Each takes ``(id, config)`` jobs and yields ``(id, ok, results|message)``.

Runs are handed out in a sliding window of ``workers`` jobs, and the coordinator claims a run (marks it
'running' in the store) only when it is handed out, so 'running' in ``study status`` means running.

* :class:`LocalExecutor`: ``workers = 1`` runs in this process (no start-up cost); more workers use a
  ``concurrent.futures`` process pool with the *spawn* start method (no inherited torch thread pools or
  locks from a fork).
* :class:`RayExecutor`: a Ray task per run, on a local Ray instance (``ray.init(num_cpus=workers)``) or
  an existing cluster (``address``). Results come back to the coordinator, which alone writes the store.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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
    """Ray tasks, one CPU each, on a local instance or the cluster at ``address``."""

    name = "ray"

    def __init__(self, workers: int = 2, address: str | None = None):
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
        self._remote = ray.remote(num_cpus=1)(_ray_task)

    def run(self, jobs: list[Job], claim: Callable[[str], bool]) -> Iterator[Outcome]:
        ray, queue, inflight = self.ray, list(jobs), []
        while queue or inflight:
            while queue and len(inflight) < self.workers:
                rid, cfg = queue.pop(0)
                if claim(rid):
                    inflight.append(self._remote.remote(rid, cfg))
            if not inflight:
                continue
            done, inflight = ray.wait(inflight, num_returns=1)
            for ref in done:
                yield ray.get(ref)

    def close(self) -> None:
        if self._owns:
            self.ray.shutdown()


def _ray_task(run_id: str, config: dict[str, Any]) -> Outcome:
    import torch

    torch.set_num_threads(1)
    return safe_execute(run_id, config)


def make_executor(
    kind: str = "local", workers: int = 1, address: str | None = None
) -> LocalExecutor | RayExecutor:
    """An executor by name: ``local`` (process pool) or ``ray``."""
    if kind == "local":
        if address:
            raise FlatminimaError(f"address={address!r} needs executor='ray' (got executor='local').")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise FlatminimaError(f"executor must be one of ['local', 'ray'], got {kind!r}.")
