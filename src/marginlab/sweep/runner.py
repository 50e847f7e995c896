"""Running a sweep's trials in parallel, recording each result the moment it arrives.

Layout of a sweep directory::

    OUT/sweep.json      the spec (what makes the directory resumable)
    OUT/trials.jsonl    one fsynced line per finished trial, in the order they finished
    OUT/runs/ID/        training sweeps with ``run_dirs``: each trial's run directory
    OUT/plots/sweep.png, OUT/report.html, OUT/report.md

Backends: ``local`` (a process pool with the spawn context and one torch thread per worker;
``workers=0`` runs the trials in this process) and ``ray`` (one ``num_cpus=1`` task per trial
on a Ray cluster, results gathered with ``ray.wait`` as they finish). Either way only this
process writes ``trials.jsonl``. A failed trial is recorded with its error and the others go
on; a resumed sweep skips the trials that succeeded and retries the ones that failed.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import pickle
import platform
import re
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from marginlab import storage
from marginlab.errors import MarginlabError
from marginlab.sweep.spec import SweepSpec, Trial, bind_run_dir, expand

__all__ = ["SweepResult", "TrialRecord", "read_records", "run_sweep"]

MARKER = "sweep.json"
TRIALS = "trials.jsonl"
BACKENDS = ("local", "ray")


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


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What :func:`run_sweep` did.

    Attributes:
        out: the sweep directory.
        total: trials in the spec.
        skipped: trials already finished by an earlier run (not run again).
        ran: trials run now (succeeded or failed).
        records: the latest record of every finished or failed trial of the spec, in grid order.
        failed: the records among them whose trial failed.
        report: the report page (HTML), if written.
        seconds: wall-clock time of this run.
        backend: ``local``, ``inprocess`` or ``ray``; workers: parallel trials (Ray: CPUs).
    """

    out: Path
    total: int
    skipped: int
    ran: int
    records: list[TrialRecord]
    failed: list[TrialRecord]
    report: Path | None
    seconds: float
    backend: str
    workers: int | None

    @property
    def ok(self) -> bool:
        return not self.failed and len(self.records) == self.total

    def summary(self) -> str:
        """One line: trials run, skipped and failed."""
        text = (f"{self.total} trials: {self.ran} ran, {self.skipped} already done, "
                f"{len(self.failed)} failed")
        return text + (f" (errors in {self.out / TRIALS})" if self.failed else "")


def read_records(out: str | os.PathLike) -> list[TrialRecord]:
    """Every record of ``OUT/trials.jsonl`` in file order (a line cut off by a crash is
    dropped)."""
    return [TrialRecord.from_dict(d) for d in storage.read_jsonl(Path(out) / TRIALS)]


def run_sweep(spec: SweepSpec, out: str | os.PathLike, *, workers: int | None = None,
              backend: str = "local", address: str | None = None, resume: bool = False,
              overwrite: bool = False, progress: bool | None = None,
              report: bool = True) -> SweepResult:
    """Run every trial of ``spec`` not yet finished in ``out``, appending each result to
    ``out/trials.jsonl`` as it arrives, then write the report.

    Args:
        spec: the sweep.
        out: the sweep directory; an existing sweep there is continued with ``resume`` or
            replaced with ``overwrite``.
        workers: trials run at once. Local backend: worker processes (default: CPU count, at
            most the number of trials), 0 to run in this process. Ray: the CPUs of a local
            instance it starts (default: all); ignored with a running cluster.
        backend: ``local`` or ``ray``.
        address: Ray cluster address (``auto`` for a running one; default: start a local one).
        resume: continue the sweep in ``out``: finished trials are skipped, failed ones rerun.
        overwrite: replace the sweep in ``out``.
        progress: tqdm progress bar over trials (None: only on a terminal).
        report: write ``report.html``, ``report.md`` and ``plots/sweep.png``.

    Raises:
        MarginlabError: bad settings, or ``out`` holds something else.
        KeyboardInterrupt: interrupted; every result recorded so far stays in ``out``.
    """
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise MarginlabError(f"unknown backend {backend!r}; expected {', '.join(BACKENDS)}")
    if workers is not None and workers < (0 if backend == "local" else 1):
        raise MarginlabError(f"workers must be {'>= 0' if backend == 'local' else '>= 1'}, "
                             f"got {workers}")
    if address is not None and backend != "ray":
        raise MarginlabError("--address is for the ray backend")
    trials, fn = expand(spec)
    out = _prepare(Path(out), spec, resume=resume, overwrite=overwrite)
    path = out / TRIALS
    _repair_tail(path)
    latest = _latest(read_records(out))
    todo = [t for t in trials if not (t.id in latest and latest[t.id].ok)]
    skipped = len(trials) - len(todo)
    tasks = [(_bind(fn, spec, out, t), t) for t in todo]

    start = time.perf_counter()
    bar = tqdm(total=len(trials), initial=skipped, desc="sweep", unit="trial",
               dynamic_ncols=True, disable=None if progress is None else not progress)
    n_failed = 0

    def record(rec: TrialRecord) -> None:
        nonlocal n_failed
        storage.append_jsonl(path, rec.to_dict())
        latest[rec.id] = rec
        n_failed += not rec.ok
        bar.update(1)
        if n_failed:
            bar.set_postfix_str(f"{n_failed} failed")

    try:
        if backend == "ray":
            used = _run_ray(tasks, record, address=address, workers=workers)
            name = "ray"
        elif workers == 0 or not tasks:
            used, name = 0, "inprocess"
            for fn_t, trial in tasks:
                record(execute(fn_t, trial))
        else:
            used = min(workers or os.cpu_count() or 1, len(tasks))
            name = "local"
            _run_local(tasks, record, workers=used)
    finally:
        bar.close()
    records = [latest[t.id] for t in trials if t.id in latest]
    failed = [r for r in records if not r.ok]
    result = SweepResult(out=out, total=len(trials), skipped=skipped, ran=len(tasks),
                         records=records, failed=failed, report=None,
                         seconds=time.perf_counter() - start, backend=name, workers=used)
    if report:
        from marginlab.sweep.aggregate import write_report

        result = dataclasses.replace(result, report=write_report(spec, result))
    return result


# --------------------------------------------------------------------------- one trial


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


def _bind(fn: Callable, spec: SweepSpec, out: Path, trial: Trial) -> Callable:
    if spec.kind == "train" and spec.run_dirs:
        return bind_run_dir(fn, out / "runs" / trial.id)
    return fn


# --------------------------------------------------------------------------- backends


def _run_local(tasks: list[tuple[Callable, Trial]], record: Callable[[TrialRecord], None], *,
               workers: int) -> None:
    try:
        pickle.dumps(tasks[0][0])
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise MarginlabError(f"the trial function cannot be sent to worker processes (define "
                             f"it at module level, or use workers=0): {exc}") from None
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                  initializer=_set_threads, initargs=(1,))
    futures = {pool.submit(execute, fn, trial): trial for fn, trial in tasks}
    unrecorded = set(futures)
    try:
        while unrecorded:
            done, _ = cf.wait(unrecorded, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                unrecorded.discard(fut)
                record(_outcome(fut, futures[fut]))
    except BaseException:
        # Interrupted: start no more trials, let the running ones end and keep those that
        # succeeded.
        pool.shutdown(wait=True, cancel_futures=True)
        for fut in unrecorded:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                record(fut.result())
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


def _run_ray(tasks: list[tuple[Callable, Trial]], record: Callable[[TrialRecord], None], *,
             address: str | None, workers: int | None) -> int | None:
    try:
        import ray
    except ImportError:
        raise MarginlabError("the ray backend needs Ray: pip install 'marginlab[ray]'") from None
    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False}
        if address is None and workers is not None:
            kwargs["num_cpus"] = workers
        ray.init(address=address, **kwargs)
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0)) or None
        if not tasks:
            return cpus
        remote = ray.remote(num_cpus=1)(execute)
        refs = {remote.remote(fn, trial, 1): trial for fn, trial in tasks}
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
        if started:
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


# --------------------------------------------------------------------------- the directory


def _prepare(out: Path, spec: SweepSpec, *, resume: bool, overwrite: bool) -> Path:
    """Create ``out`` for ``spec``, refusing to touch a directory holding something else."""
    if out.exists() and not out.is_dir():
        raise MarginlabError(f"{out} exists and is not a directory")
    marker = out / MARKER
    if out.exists() and any(out.iterdir()):
        if not marker.exists():
            raise MarginlabError(f"{out} is not empty and holds no marginlab sweep; "
                                 "choose another directory")
        old = storage.read_json(marker)
        old_identity = old.get("identity") if isinstance(old, dict) else None
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise MarginlabError(f"{out} already holds a sweep of {old_identity}; use --resume "
                                 "to continue it or --overwrite to start again")
        elif old_identity != spec.identity:
            raise MarginlabError(f"{out} holds a sweep of {old_identity}, not of "
                                 f"{spec.identity}; use --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    from marginlab import __version__

    storage.write_json(marker, {"identity": spec.identity, "spec": spec.to_dict(),
                                "marginlab": __version__, "python": platform.python_version(),
                                "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return out


def _repair_tail(path: Path) -> None:
    """Cut a last line left unterminated by a crash, so that the next append starts a line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        fh.truncate(fh.read().rfind(b"\n") + 1)
        fh.flush()
        os.fsync(fh.fileno())


def _latest(records: Iterable[TrialRecord]) -> dict[str, TrialRecord]:
    """The last record of each trial id (a rerun of a failed trial supersedes it)."""
    latest: dict[str, TrialRecord] = {}
    for rec in records:
        latest[rec.id] = rec
    return latest
