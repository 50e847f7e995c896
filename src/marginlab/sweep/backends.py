"""Where a sweep's trials run and what one trial returns.

``execute`` runs one trial and catches its failure. ``run_local`` runs trials on a process
pool (spawn context, one torch thread per worker, at most one trial per worker in flight);
``run_ray`` runs them as ``num_cpus=1`` Ray tasks gathered with ``ray.wait``. Both hand each
:class:`TrialRecord` to a callback the moment it arrives.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import pickle
import re
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

from marginlab.errors import MarginlabError
from marginlab.io import storage
from marginlab.sweep.spec import Trial

__all__ = ["TrialRecord", "execute", "import_ray", "run_local", "run_ray"]

GRACE_SECONDS = 3.0  # after an interrupt, time the running trials get to stop by themselves
RAY_MAX_RETRIES = 3  # a Ray task whose worker dies (killed, node lost) runs again this often


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One line of ``trials.jsonl``.

    Attributes:
        id: the trial's id (see :class:`~marginlab.sweep.spec.Trial`).
        status: ``ok`` or ``failed``.
        params: the grid point and seed.
        result: what the trial function returned (JSON-safe: inf/NaN as strings); None if it
            failed.
        error: ``ExceptionType: message`` (one line) if it failed.
        traceback: the last frames of the failure's traceback.
        seconds: wall-clock time of the trial in its worker.
        finished: when it finished, ``YYYY-MM-DDTHH:MM:SS`` local time of the worker.
        host: ``hostname:pid`` of the worker.
        settings: everything the trial function received.
    """

    id: str
    status: str
    params: dict
    result: dict | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    finished: str = ""
    host: str = ""
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrialRecord:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def execute(fn: Callable[[dict], Any], trial: Trial, threads: int | None = None) -> TrialRecord:
    """Run one trial, catching its failure (any Exception; an interrupt propagates)."""
    if threads:
        _set_threads(threads)
    start = time.perf_counter()
    result = error = tb = None
    try:
        value = fn(dict(trial.settings))
        if not isinstance(value, dict):
            raise TypeError(f"a trial function returns a dict, got {type(value).__name__}")
        result = storage.to_jsonable(value)
        json.dumps(result)  # not JSON-able: a failure of this trial, not of the sweep
    except Exception as exc:
        result = None
        error = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
        tb = "".join(traceback.format_exception(exc)[-6:])
    return TrialRecord(
        id=trial.id, status="ok" if error is None else "failed", params=trial.params,
        result=result, error=error, traceback=tb, seconds=time.perf_counter() - start,
        finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
        host=f"{socket.gethostname()}:{os.getpid()}", settings=trial.settings)


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only possible before the first parallel work
        pass


def run_local(tasks: list[tuple[Callable, Trial]], record: Callable[[TrialRecord], None], *,
              workers: int, started: Callable[[Trial], None] | None = None) -> None:
    """Run ``(fn, trial)`` tasks on ``workers`` spawned processes, calling ``record`` with each
    result as it arrives (a worker that dies gives a failed record) and ``started`` with each
    trial handed to a worker."""
    try:
        pickle.dumps(tasks[0][0])
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise MarginlabError(f"the trial function cannot be sent to worker processes (define "
                             f"it at module level, or use workers=0): {exc}") from None
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                  initializer=_set_threads, initargs=(1,))
    # At most one trial per worker in flight: nothing waits in the pool's queue, so an
    # interrupt leaves no queued trial behind to run.
    queue = iter(tasks)
    running: dict[cf.Future, Trial] = {}

    def submit_next() -> None:
        task = next(queue, None)
        if task is not None:
            running[pool.submit(execute, task[0], task[1])] = task[1]
            if started is not None:
                started(task[1])

    try:
        for _ in range(workers):
            submit_next()
        while running:
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                record(_outcome(fut, running.pop(fut)))
                submit_next()
    except BaseException:
        # Interrupted: start no more trials. A Ctrl-C reaches the workers too, which then stop
        # by themselves; any still running after a grace period are terminated (a resumed
        # sweep reruns them). What succeeded meanwhile is kept.
        _, still = cf.wait(running, timeout=GRACE_SECONDS)
        for fut in running:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                record(fut.result())
        if still:
            _terminate(pool)
        else:
            pool.shutdown(wait=True)
        raise
    pool.shutdown(wait=True)


def _terminate(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a process pool's workers now (``terminate_workers`` from Python 3.14 on)."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(timeout=10)
    pool.shutdown(wait=True)  # the pool's own threads and queues, now that no worker is left


def _outcome(fut: cf.Future, trial: Trial) -> TrialRecord:
    exc = fut.exception()
    if exc is None:
        return fut.result()
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        raise exc
    # The worker process died (killed, out of memory) or the result could not be sent back.
    return _lost(trial, f"{type(exc).__name__}: {exc}")


def _lost(trial: Trial, error: str) -> TrialRecord:
    return TrialRecord(id=trial.id, status="failed", params=trial.params,
                       error=error.strip().splitlines()[0] if error.strip() else "worker lost",
                       finished=time.strftime("%Y-%m-%dT%H:%M:%S"), settings=trial.settings)


def import_ray():
    try:
        import ray
    except ImportError:
        raise MarginlabError("the ray backend needs Ray: pip install 'marginlab[ray]'") from None
    return ray


def run_ray(ray, tasks: list[tuple[Callable, Trial]], record: Callable[[TrialRecord], None],
            *, address: str | None, workers: int | None,
            started: Callable[[Trial], None] | None = None) -> int | None:
    """Run ``(fn, trial)`` tasks as Ray tasks (``num_cpus=1``), calling ``record`` with each
    result as ``ray.wait`` returns it, and ``started`` with each trial submitted (Ray queues
    them all at once, so a started trial may still wait for a CPU). A task whose worker process
    dies is run again, up to :data:`RAY_MAX_RETRIES` times (a trial's own exception is
    recorded, not retried).
    Connects to ``address`` or to a running instance, else starts a local one with ``workers``
    CPUs (and stops it afterwards). Returns the cluster's CPU count."""
    own_instance = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False}
        if address is None and workers is not None:
            kwargs["num_cpus"] = workers
        ray.init(address=address, **kwargs)
        own_instance = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0)) or None
        remote = ray.remote(num_cpus=1, max_retries=RAY_MAX_RETRIES)(execute)
        refs = {remote.remote(fn, trial, 1): trial for fn, trial in tasks}
        if started is not None:
            for trial in refs.values():
                started(trial)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        rec = ray.get(ref)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:  # the task's worker died or could not run it
                        rec = _lost(refs[ref], _ray_error(exc))
                    record(rec)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return cpus
    finally:
        if own_instance:
            ray.shutdown()


def _ray_error(exc: BaseException) -> str:
    """One line for a Ray task that did not run its trial (not the trial's own failure)."""
    cause = getattr(exc, "cause", None) or exc
    if cause.args and isinstance(cause.args[0], BaseException):
        cause = cause.args[0]
    text = re.sub(r"\x1b\[[0-9;]*m", "", f"{type(cause).__name__}: {cause}").strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(cause, ImportError):
        text += ("; the trial function must be importable on the Ray workers (install its "
                 "package there, or ship it with ray.init(runtime_env=...))")
    return text
