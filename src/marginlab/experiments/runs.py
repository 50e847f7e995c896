"""Running several training runs of one experiment side by side, with a live progress line.

Each run is a :class:`~marginlab.train.spec.TrainSpec` trained in its own worker process (one
torch thread each), writing its own run directory; the parent polls the runs' metrics files to
show progress. A run's directory is resumable, so an interrupted experiment continues with
``--resume``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from marginlab.errors import MarginlabError
from marginlab.experiments import RunRequest
from marginlab.io import storage
from marginlab.progress import Progress
from marginlab.train.rundir import RunDir
from marginlab.train.spec import TrainSpec, run_training

__all__ = ["prepare_output", "run_specs", "run_tasks", "value_at_time"]

MARKER = "experiment.json"


def prepare_output(request: RunRequest, experiment_id: str) -> Path:
    """Create ``request.out``, refusing to touch a directory holding something else.

    An existing directory of the same experiment is continued with ``resume`` or replaced with
    ``overwrite``; any other non-empty directory is an error.
    """
    out = request.out
    if out.exists() and any(out.iterdir()):
        marker = out / MARKER
        if not marker.exists():
            raise MarginlabError(f"{out} is not empty and holds no marginlab experiment; "
                                 "choose another directory")
        if request.overwrite:
            shutil.rmtree(out)
        elif not request.resume:
            raise MarginlabError(f"{out} already holds a run of "
                                 f"{storage.read_json(marker).get('id')}; use --resume to "
                                 "continue it or --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    storage.write_json(out / MARKER, {"id": experiment_id, "scale": request.scale,
                                      "settings": dict(request.settings),
                                      "device": request.device, "seed": request.seed})
    return out


def _worker(spec: dict, out: str, resume: bool, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    result = run_training(TrainSpec.from_dict(spec), out, resume=resume, progress=False)
    return {"stop_reason": result.stop_reason, "epochs": len(result.history)}


def _last_line(path: Path) -> dict | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            lines = fh.read().decode("utf-8", "replace").strip().split("\n")
        return json.loads(lines[-1]) if lines and lines[-1] else None
    except (OSError, ValueError):
        return None


def run_specs(specs: Mapping[str, dict], out: Path, *, workers: int = 2, resume: bool = False,
              threads: int = 1, expected_seconds: float | None = None) -> dict[str, dict]:
    """Train every spec (name -> TrainSpec dict) into ``out/runs/<name>``, ``workers`` at once.

    Returns name -> {"stop_reason", "epochs"}. The first failure is re-raised after the other
    runs were stopped.
    """
    run_root = out / "runs"
    run_root.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    ctx = mp.get_context("spawn")
    bar = Progress(f"runs of {out.name}", total=len(specs), unit="run",
                   max_time=expected_seconds)
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(_worker, spec, str(run_root / name), resume, threads): name
                   for name, spec in specs.items()}
        pending = set(futures)
        try:
            while pending:
                done, pending = cf.wait(pending, timeout=2.0)
                for fut in done:
                    results[futures[fut]] = fut.result()
                status = {}
                for name in specs:
                    rec = _last_line(RunDir(run_root / name).metrics_path)
                    if rec is not None:
                        status[name] = (f"epoch {rec['epoch']} "
                                        f"log10 L {rec['log10_loss_mean']:.4g}")
                bar.update(len(done), **status)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        finally:
            bar.close()
    return results


def run_tasks(fn: Callable[[dict], object], tasks: list[dict], *, workers: int = 2) -> list:
    """``fn(task)`` for every task in ``workers`` spawned processes (in this process when
    ``workers`` ≤ 1 or there is one task); returns the results in order. ``fn`` must be a
    module-level function; the first failure is re-raised."""
    if not tasks:
        return []
    if workers <= 1 or len(tasks) == 1:
        return [fn(t) for t in tasks]
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
        return list(pool.map(fn, tasks))


def value_at_time(records: list[dict], key: str, seconds: float) -> float:
    """``key`` of the last record whose wall time is at most ``seconds``."""
    best = float("nan")
    for r in records:
        if r["wall_time"] <= seconds:
            best = r[key]
    return best
