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

import dataclasses
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from marginlab.errors import MarginlabError
from marginlab.io import storage
from marginlab.io.environment import versions
from marginlab.progress import Progress
from marginlab.sweep import backends
from marginlab.sweep.aggregate import write_report
from marginlab.sweep.backends import TrialRecord
from marginlab.sweep.spec import SweepSpec, Trial, TrialSource, bind_run_dir, expand

__all__ = ["SweepResult", "TrialRecord", "TrialsRun", "read_records", "run_sweep", "run_trials"]

MARKER = "sweep.json"
TRIALS = "trials.jsonl"
BACKENDS = ("local", "ray")
STATUS_SECONDS = 2.0  # between calls of run_trials' status callback


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
              report: bool = True, source: TrialSource | None = None) -> SweepResult:
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
        source: the trial an experiment sweep names (see :class:`TrialSource`; an experiment
            gives it by ``experiments.trial_source(id)``).

    Raises:
        MarginlabError: bad settings, or ``out`` holds something else.
        KeyboardInterrupt: interrupted; every result recorded so far stays in ``out``.
    """
    if backend not in BACKENDS:
        raise MarginlabError(f"unknown backend {backend!r}; expected {', '.join(BACKENDS)}")
    if workers is not None and workers < (0 if backend == "local" else 1):
        raise MarginlabError(f"workers must be {'>= 0' if backend == 'local' else '>= 1'}, "
                             f"got {workers}")
    if address is not None and backend != "ray":
        raise MarginlabError("--address is for the ray backend")
    trials, fn = expand(spec, source)
    if backend == "ray":  # fail before touching the directory when Ray is not installed
        backends.import_ray()
    out = _prepare(Path(out), spec, resume=resume, overwrite=overwrite)
    start = time.perf_counter()
    run = run_trials(out / TRIALS, trials, lambda t: _bind(fn, spec, out, t), resume=True,
                     workers=workers, backend=backend, address=address, progress=progress)
    records, failed = run.records, [r for r in run.records if not r.ok]
    result = SweepResult(out=out, total=len(trials), skipped=run.skipped, ran=run.ran,
                         records=records, failed=failed, report=None,
                         seconds=time.perf_counter() - start, backend=run.backend,
                         workers=run.workers)
    if report:
        result = dataclasses.replace(result, report=write_report(spec, result))
    return result


@dataclasses.dataclass(frozen=True)
class TrialsRun:
    """What :func:`run_trials` did: the latest record of every trial that has one (in the
    order of the trials), how many were skipped and run, and on what."""

    records: list[TrialRecord]
    skipped: int
    ran: int
    backend: str
    workers: int


def run_trials(path: Path, trials: list[Trial], fn: Callable[[Trial], Callable], *,
               resume: bool = True, workers: int | None = None, backend: str = "local",
               address: str | None = None, progress: bool | None = None,
               desc: str = "sweep", unit: str = "trial",
               status: Callable[[list[Trial]], Mapping[str, Any]] | None = None,
               status_every: float = STATUS_SECONDS) -> TrialsRun:
    """Run ``trials``, appending each result to the JSONL file ``path`` the moment it arrives.

    This is the engine of :func:`run_sweep`, for callers (experiments) that keep their own
    directory layout.

    Args:
        path: the trials file; a line cut off by a crash is removed first.
        trials: the trials, each with a stable id.
        fn: gives the function to call on a trial's settings (``fn(trial)(settings)``).
        resume: skip the trials that already have a successful record in ``path``.
        workers, backend, address, progress: as for :func:`run_sweep`.
        desc: the progress bar's label; unit: what a trial is called on it.
        status: called in this process every ``status_every`` seconds while trials run, with
            the trials started and not yet finished; what it returns (label -> value, e.g.
            ``{"run-3": "epoch 40"}``) is shown on the progress line until the next call. It
            runs on a background thread, so it only reads (files a trial writes, say); if it
            raises, the error is noted once and the status display stops.
        status_every: seconds between calls of ``status``.
    """
    if status is not None and not (math.isfinite(status_every) and status_every > 0):
        raise MarginlabError(f"status_every must be > 0 seconds, got {status_every}")
    path.parent.mkdir(parents=True, exist_ok=True)
    _repair_tail(path)
    latest = _latest(TrialRecord.from_dict(d) for d in storage.read_jsonl(path)) if resume else {}
    todo = [t for t in trials if not (t.id in latest and latest[t.id].ok)]
    skipped = len(trials) - len(todo)
    tasks = [(fn(t), t) for t in todo]
    bar = Progress(desc, total=len(trials), initial=skipped, unit=unit,
                   quiet=None if progress is None else not progress)
    # (no display, no status to compute)
    monitor = _Monitor(status, status_every, bar) if status is not None and not bar.quiet \
        else None
    started = monitor.started if monitor is not None else None
    n_failed = 0

    def record(rec: TrialRecord) -> None:
        nonlocal n_failed
        storage.append_jsonl(path, rec.to_dict())
        latest[rec.id] = rec
        if monitor is not None:
            monitor.finished(rec.id)
        n_failed += not rec.ok
        bar.update(1, failed=n_failed or None)
        if not rec.ok:
            bar.note(f"{unit} {rec.id} failed")

    try:
        if not tasks:
            used, name = 0, "none (nothing left to run)"
        elif backend == "ray":
            used = backends.run_ray(backends.import_ray(), tasks, record, address=address,
                                    workers=workers, started=started)
            name = "ray"
        elif workers == 0:
            used, name = 0, "inprocess"
            for fn_t, trial in tasks:
                if started is not None:
                    started(trial)
                record(backends.execute(fn_t, trial))
        else:
            used = min(workers or os.cpu_count() or 1, len(tasks))
            name = "local"
            backends.run_local(tasks, record, workers=used, started=started)
    finally:
        if monitor is not None:
            monitor.stop()
        bar.close()
    return TrialsRun(records=[latest[t.id] for t in trials if t.id in latest], skipped=skipped,
                     ran=len(tasks), backend=name, workers=used)


class _Monitor:
    """Calls ``status`` with the trials in flight every ``every`` seconds on a background
    thread and shows what it returns on ``bar``."""

    def __init__(self, status: Callable[[list[Trial]], Mapping[str, Any]], every: float,
                 bar: Progress):
        self._status, self._every, self._bar = status, every, bar
        self._running: dict[str, Trial] = {}
        self._shown: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="marginlab-trial-status")
        self._thread.start()

    def started(self, trial: Trial) -> None:
        with self._lock:
            self._running[trial.id] = trial

    def finished(self, trial_id: str) -> None:
        with self._lock:
            self._running.pop(trial_id, None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self.tick()

    def tick(self) -> None:
        with self._lock:
            running = list(self._running.values())
        try:
            values = dict(self._status(running))
        except Exception as exc:  # a display must not stop the trials
            self._bar.note(f"status display stopped: {type(exc).__name__}: {exc}")
            self._stop.set()
            return
        if self._stop.is_set():  # the run ended while the status was computed
            return
        gone = {label: None for label in self._shown if label not in values}
        self._shown = set(values)
        self._bar.update(0, **gone, **values)


def _bind(fn: Callable, spec: SweepSpec, out: Path, trial: Trial) -> Callable:
    if spec.kind == "train" and spec.run_dirs:
        return bind_run_dir(fn, out / "runs" / trial.id)
    return fn


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
    env = versions()
    storage.write_json(marker, {"identity": spec.identity, "spec": spec.to_dict(),
                                "marginlab": env["marginlab"], "python": env["python"],
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
