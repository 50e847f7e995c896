"""What the Wei et al. experiments share beyond the sweep engine: running a list of (params,
settings) points on :func:`marginlab.sweep.run_trials`, log-log slopes with their standard
errors, and the figure backend. Trial ids, the version record and mean ± std (ddof = 1) are the
sweep package's own (:func:`~marginlab.sweep.trial_id`, :func:`~marginlab.sweep.versions`,
:func:`~marginlab.sweep.mean_std`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from marginlab.errors import MarginlabError
from marginlab.io.report import Report
from marginlab.sweep import Trial, TrialRecord, format_mean_std, trial_id, versions
from marginlab.sweep import mean_std as _mean_std
from marginlab.sweep import run_trials as run_sweep_trials

__all__ = ["MIN_SLOPE_POINTS", "log_slope", "mean_std", "ms_text", "numbers", "settings_block",
           "raise_failures", "run_trials", "versions"]

ms_text = format_mean_std
MIN_SLOPE_POINTS = 4  # a slope's standard error needs at least 2 residual degrees of freedom


def mean_std(values) -> tuple[float, float, int]:
    """(mean, sample std with ddof = 1, count) of the finite values (:func:`sweep.mean_std
    <marginlab.sweep.mean_std>` as a tuple)."""
    m = _mean_std(values)
    return m.mean, m.std, m.n


def run_trials(out: Path, fn: Callable[[dict], dict], points: Sequence[tuple[dict, dict]], *,
               workers: int, resume: bool = False, desc: str = "trials") -> list[TrialRecord]:
    """Run ``fn`` on every (params, settings) point with the sweep engine, appending each result
    to ``out/trials.jsonl`` the moment it finishes.

    With ``resume``, trials already recorded as successful are not run again. A failing trial is
    recorded with its error and the others go on. ``workers`` > 1 runs trials on that many
    spawned processes (one torch thread each); otherwise they run here, one after the other.

    Returns:
        The latest record of every point, in the order of ``points``.
    """
    trials = [Trial(trial_id(s), dict(p), dict(s)) for p, s in points]
    parallel = workers > 1 and len(trials) > 1
    return run_sweep_trials(out / "trials.jsonl", trials, lambda _trial: fn, resume=resume,
                            workers=min(workers, len(trials)) if parallel else 0,
                            desc=desc).records


def raise_failures(records: Sequence[TrialRecord], out: Path) -> None:
    """Raise MarginlabError naming the first failure if any trial failed."""
    failed = [r for r in records if not r.ok]
    if failed:
        raise MarginlabError(f"{len(failed)} of {len(records)} trials failed (first: "
                             f"{failed[0].error}); see {out / 'trials.jsonl'}; the report "
                             "covers the others")


def numbers(values) -> list[float]:
    """Values from JSON results as floats (inf/NaN were stored as strings)."""
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def log_slope(x: Sequence[float], values: Sequence[float]) -> tuple[float, float, int]:
    """Least-squares slope of log(value) against log(x) over the points with finite positive
    values, its standard error (scipy.stats.linregress) and the number of points used; NaN
    slope for fewer than 2 distinct x, NaN se for fewer than :data:`MIN_SLOPE_POINTS` points
    (a residual variance on one degree of freedom can be zero by chance)."""
    x, v = np.asarray(x, dtype=float), np.asarray(values, dtype=float)
    ok = np.isfinite(v) & (v > 0) & np.isfinite(x) & (x > 0)
    if ok.sum() < 2 or len(set(x[ok])) < 2:
        return math.nan, math.nan, int(ok.sum())
    fit = stats.linregress(np.log(x[ok]), np.log(v[ok]))
    se = float(fit.stderr) if ok.sum() >= MIN_SLOPE_POINTS else math.nan
    return float(fit.slope), se, int(ok.sum())


def settings_block(rep: Report, settings: Mapping, extra: Mapping | None = None) -> None:
    """The report's "Settings" section: the experiment's settings, ``extra`` (resolved values)
    and the library versions, one ``key = value`` per line."""
    rep.heading("Settings")
    rep.code("\n".join(f"{k} = {v}"
                       for k, v in {**dict(settings), **(extra or {}), **versions()}.items()))
