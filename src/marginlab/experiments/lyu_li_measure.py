"""Measurements on the main job's finished runs: equal-epoch comparisons, KKT residuals along a
run, and the L2 robustness of its snapshots (Lyu & Li, Figure 1, Table 1, Theorem 4.4, Figure 8).

Everything here reads run directories written by the trainer and returns plain JSON-able dicts,
so an interrupted experiment can keep what it measured and the claims can be recomputed from
``summary.json`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from marginlab import models
from marginlab.analysis import kkt_residual, trajectory_checkpoints
from marginlab.analysis.run import balanced_subset
from marginlab.claims import paired_effect
from marginlab.errors import NotSeparatedError
from marginlab.robustness import evaluate
from marginlab.train.rundir import RunDir

__all__ = [
    "epochs_to_reach",
    "kkt_along_run",
    "kkt_trend",
    "ols_slope",
    "paired_robustness",
    "robustness_of_snapshots",
    "value_at_epoch",
    "value_at_time",
]


def value_at_epoch(records: Sequence[dict], key: str, epoch: int) -> float:
    """``key`` of the last record whose epoch is at most ``epoch`` (NaN if none)."""
    best = math.nan
    for r in records:
        if r["epoch"] <= epoch:
            v = r.get(key)
            best = float(v) if isinstance(v, (int, float)) else math.nan
    return best


def value_at_time(records: Sequence[dict], key: str, seconds: float) -> float:
    """``key`` of the last record whose wall time is at most ``seconds``."""
    best = float("nan")
    for r in records:
        if r["wall_time"] <= seconds:
            best = r[key]
    return best


def epochs_to_reach(records: Sequence[dict], key: str, level: float) -> int | None:
    """First epoch whose ``key`` is at least ``level`` (None if never)."""
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and v >= level:
            return int(r["epoch"])
    return None


def ols_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error (NaN se for fewer than 3 points)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = xs.size
    if n < 2 or np.ptp(xs) == 0:
        return math.nan, math.nan
    xc = xs - xs.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (ys - ys.mean())) / sxx
    if n < 3:
        return slope, math.nan
    resid = ys - ys.mean() - slope * xc
    return slope, math.sqrt(float(resid @ resid) / (n - 2) / sxx)


def kkt_along_run(run_dir: Path, X: Tensor, y: Tensor, tau: float) -> list[dict]:
    """(ε, δ)-KKT residual of (P) at every trajectory checkpoint of a run (Theorem 4.4).

    Returns one dict per checkpoint: ``epoch``, ``status`` (``ok``, ``not separated``) and, when
    ``ok``, ``eps_relative`` = ε/‖θ‖, ``delta``, ``n_near_active`` and ``n_active``.
    """

    out = []
    for epoch, path in trajectory_checkpoints(run_dir).items():
        try:
            res = kkt_residual(models.load(path), X, y, tau)
        except NotSeparatedError:
            out.append({"epoch": epoch, "status": "not separated"})
            continue
        s = res.summary()
        out.append({"epoch": epoch, "status": "ok", "eps_relative": s["eps_relative"],
                    "delta": s["delta"], "n_near_active": s["n_near_active"],
                    "n_active": s["n_active"]})
    return out


def kkt_trend(series: Mapping[str, list[dict]]) -> dict:
    """Trend of ε/‖θ‖ over log10(epoch) per run and across runs.

    Per run: the least-squares slope of ε/‖θ‖ on log10(epoch) with its standard error, and the
    fall first − last of the separated checkpoints. Across runs: the mean fall with its
    standard error (runs as the unit), and the mean slope with its standard error.
    """
    per_run, falls, slopes = {}, [], []
    for name, points in series.items():
        ok = [p for p in points if p["status"] == "ok" and p["epoch"] > 0]
        if len(ok) < 2:
            per_run[name] = {"n": len(ok)}
            continue
        x = [math.log10(p["epoch"]) for p in ok]
        v = [float(p["eps_relative"]) for p in ok]  # JSON keeps a NaN as "nan"
        slope, se = ols_slope(x, v)
        per_run[name] = {"n": len(ok), "first_epoch": ok[0]["epoch"], "first": v[0],
                         "last_epoch": ok[-1]["epoch"], "last": v[-1], "fall": v[0] - v[-1],
                         "slope_per_decade": slope, "slope_se": se}
        falls.append(v[0] - v[-1])
        slopes.append(slope)
    fall, fall_se = paired_effect(falls)
    slope, slope_se = paired_effect(slopes)
    return {"per_run": per_run, "runs": len(falls), "mean_fall": fall, "mean_fall_se": fall_se,
            "mean_slope_per_decade": slope, "mean_slope_se": slope_se}


def _points(split, which: str, n: int) -> tuple[Tensor, Tensor, list[int]]:
    X, y = split.train if which == "train" else split.test
    idx = balanced_subset(y, n)
    return X[idx], y[idx], idx.tolist()


def robustness_of_snapshots(run_dir: Path, split, *, splits: Sequence[str], n: int,
                            certificates: Sequence[str], device: str = "cpu",
                            seed: int = 0) -> dict:
    """Attack (upper bound) and certify (lower bound) every snapshot model-1 … model-5 of a run
    on ``n`` class-balanced points of each split (Lyu & Li, Appendix K.2, Figure 8).

    Returns ``{split: {"indices": [...], "snapshots": {name: {"meta", "upper", "lower",
    "correct", "summary"}}}}``; upper = lower = 0 on misclassified points.
    """

    snaps = RunDir(run_dir).snapshot_paths()
    out: dict = {}
    for which in splits:
        X, y, idx = _points(split, which, n)
        entry: dict = {"indices": idx, "snapshots": {}}
        for path in snaps:
            model = models.load(path).to(device).eval()
            res = evaluate(model, X.to(device), y.to(device), "fast",
                           certificates=tuple(certificates), seed=seed, progress=False)
            entry["snapshots"][path.stem] = {
                "meta": models.metadata(path).get("extra", {}),
                "upper": res.upper.tolist(), "lower": res.lower.tolist(),
                "correct": res.correct.tolist(), "summary": robustness_summary(res.upper,
                                                                             res.lower,
                                                                             res.correct)}
        out[which] = entry
    return out


def robustness_summary(upper, lower, correct) -> dict:
    """Robustness over ALL points (misclassified count as 0) and over correctly classified
    points only: mean and median of the attack distance (an upper bound on R(z)) and of the
    certified lower bound, with the standard error of the means."""
    u, lo = np.asarray(upper, dtype=np.float64), np.asarray(lower, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    finite = np.isfinite(u)

    def stats(mask: np.ndarray) -> dict:
        uu, ll = u[mask & finite], lo[mask]
        return {"n": int(mask.sum()), "attack_failures": int((mask & ~finite).sum()),
                "mean_upper": _mean(uu), "se_upper": _se(uu), "median_upper": _median(uu),
                "mean_lower": _mean(ll), "median_lower": _median(ll)}

    return {"accuracy": float(ok.mean()) if ok.size else math.nan,
            "all": stats(np.ones_like(ok)), "correct": stats(ok)}


def paired_robustness(results: Mapping[str, dict], split: str, a: str = "model-1",
                      b: str = "model-5") -> dict:
    """Paired comparison of snapshot ``b`` with ``a`` on the same points.

    For each point, d = upper_b − upper_a (attack distances, misclassified = 0), averaged over
    the runs (seeds) that measured the same points; points where an attack failed (upper = ∞)
    in any of them are left out. Over all points and over the points both snapshots classify
    correctly in every run. Returns mean difference, its standard error (points as the unit)
    and counts.
    """
    diffs_all, diffs_ok, used = [], [], 0
    per_point: dict[int, list[tuple[float, bool]]] = {}
    for res in results.values():
        entry = res.get(split)
        if not entry or a not in entry["snapshots"] or b not in entry["snapshots"]:
            continue
        used += 1
        sa, sb = entry["snapshots"][a], entry["snapshots"][b]
        for i, ua, ub, ca, cb in zip(entry["indices"], sa["upper"], sb["upper"], sa["correct"],
                                     sb["correct"]):
            per_point.setdefault(i, []).append((float(ub) - float(ua), bool(ca and cb)))
    excluded = 0
    for values in per_point.values():
        d = [v for v, _ in values]
        if len(values) != used or not all(math.isfinite(v) for v in d):
            excluded += 1
            continue
        diffs_all.append(float(np.mean(d)))
        if all(ok for _, ok in values):
            diffs_ok.append(float(np.mean(d)))
    m_all, se_all = paired_effect(diffs_all)
    m_ok, se_ok = paired_effect(diffs_ok)
    return {"split": split, "a": a, "b": b, "runs": used, "n_all": len(diffs_all),
            "n_correct": len(diffs_ok), "excluded": excluded, "mean_all": m_all,
            "se_all": se_all, "mean_correct": m_ok, "se_correct": se_ok}


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if v.size else math.nan


def _median(v: np.ndarray) -> float:
    return float(np.median(v)) if v.size else math.nan


def _se(v: np.ndarray) -> float:
    return float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
