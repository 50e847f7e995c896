"""The claims of Wei et al.'s Figures 2 and 3, computed from their trial records, and Figure 3's
trend plot (one axis per quantity, error bars over trials).

- Figure 2: at the largest n the two-layer network's test error (classification) or squared
  error (regression) is below the kernel method's: the paired difference kernel − network over
  trials (same teacher, data and test set), with its standard error.
- Figure 3: the normalized margin rises with the hidden width (log-log slope over every fitted
  trial, with its standard error) and the test error falls with it (slope of the test error
  against log₂ width).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from marginlab.claims import Claim, by_effect, paired_effect
from marginlab.experiments.wei_common import (
    MIN_SLOPE_POINTS,
    log_slope,
    mean_std,
    numbers,
)
from marginlab.io.plots import pyplot, save_figure

__all__ = ["fig2_claims", "fig3_claims", "linear_slope", "plot_fig3"]

FIG2_METRIC = {"classification": ("cls", "test_error", "0-1 test error"),
               "regression": ("reg", "test_mse", "squared test error")}


def linear_slope(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Least-squares slope of y against x over the finite pairs, its standard error
    (scipy.stats.linregress) and the number of points; NaN when it cannot be fitted, NaN se
    for fewer than MIN_SLOPE_POINTS points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or len(set(x[ok])) < 2:
        return math.nan, math.nan, int(ok.sum())
    if ok.sum() < MIN_SLOPE_POINTS:
        return float(stats.linregress(x[ok], y[ok]).slope), math.nan, int(ok.sum())
    fit = stats.linregress(x[ok], y[ok])
    return float(fit.slope), float(fit.stderr), int(ok.sum())


def fig2_claims(ok: Sequence, ns: Sequence[int], tasks: Sequence[str], scale: str,
                trainer: str) -> list[Claim]:
    """Per task: kernel − network error at the largest n, paired by trial."""
    n = max(ns)
    claims = []
    for task in (t for t in FIG2_METRIC if t in tasks):
        prefix, key, label = FIG2_METRIC[task]
        diffs, nets, kers = [], [], []
        for r in ok:
            if r.params.get("n") != n:
                continue
            net, ker = (numbers([r.result.get(f"{prefix}_{key}_{m}")]) for m in ("net", "kernel"))
            if net and ker:
                diffs.append(ker[0] - net[0])
                nets.append(net[0])
                kers.append(ker[0])
        mean, se = paired_effect(diffs)
        claims.append(by_effect(
            f"{task}: two-layer networks have lower {label} than the ℓ2 kernel method at "
            f"large n", f"Wei et al., Figure 2 / Section 6 ({scale} scale)",
            "'two-layer networks clearly outperform kernel methods in test error as n grows' "
            "(figure, n up to 640, 100 trials)",
            f"n = {n}: network {np.mean(nets):.4g}, kernel {np.mean(kers):.4g}; kernel − "
            f"network {mean:+.4g} ± {se:.2g} (mean ± se over {len(diffs)} paired trials); "
            f"network trained by {trainer}", mean, se))
    return claims


def _fitted(records, part: str) -> list:
    return [r for r in records if r.ok and r.params.get("part") == part
            and r.result.get("fitted")]


def fig3_claims(records: Sequence, widths: Mapping[str, Sequence[int]], scale: str,
                trainers: Mapping[str, str]) -> list[Claim]:
    """Per part (synthetic, mnist): margin slope and test-error slope against the width."""
    claims = []
    for part, ws in widths.items():
        if len(ws) < 2:
            continue
        rs = _fitted(records, part)
        w = [r.params["width"] for r in rs]
        source = f"Wei et al., Figure 3, Theorem 3.3 ({part}, {scale} scale)"
        m, se, k = log_slope(w, numbers(r.result["normalized_margin"] for r in rs))
        claims.append(by_effect(
            f"{part}: the normalized margin rises with the hidden width", source,
            "'margin is increasing' in width (figure); Theorem 3.3: the max margin is "
            "non-decreasing in width",
            f"log-log slope of q_min/‖Θ‖² against width {m:+.3f} ± {se:.3f} (se; {k} fitted "
            f"trials, widths {min(ws)}–{max(ws)}; {trainers[part]})", m, se))
        m, se, k = linear_slope([math.log2(v) for v in w],
                                numbers(r.result["test_error"] for r in rs))
        claims.append(by_effect(
            f"{part}: the test error falls with the hidden width", source,
            "'test error is decreasing in hidden layer size' (figure)",
            f"slope of test error per doubling of the width {m:+.4f} ± {se:.4f} (se; {k} "
            f"fitted trials; {trainers[part]})", -m, se))
    return claims


def plot_fig3(records: Sequence, widths: Mapping[str, Sequence[int]], path: Path) -> None:
    """Test error and normalized margin against width, each on its own axis (columns: parts),
    mean ± std over the fitted trials, thin lines: single seeds."""
    plt = pyplot()
    parts = [p for p, ws in widths.items() if ws]
    fig, axes = plt.subplots(2, len(parts), figsize=(6.5 * len(parts), 8), squeeze=False)
    for col, part in enumerate(parts):
        rs, ws = _fitted(records, part), list(widths[part])
        for row, (key, label, color) in enumerate((
                ("test_error", "test error", "C3"),
                ("normalized_margin", "normalized margin q_min/‖Θ‖²", "C0"))):
            ax = axes[row][col]
            for seed in sorted({r.params["seed"] for r in rs}):
                pts = sorted((r.params["width"], float(r.result[key])) for r in rs
                             if r.params["seed"] == seed)
                if len(pts) > 1:
                    ax.plot(*zip(*pts), "-", color=color, alpha=0.2, lw=1)
            st = [mean_std(numbers(r.result[key] for r in rs if r.params["width"] == w))
                  for w in ws]
            ax.errorbar(ws, [m for m, _, _ in st], yerr=[0 if k < 2 else s for _, s, k in st],
                        fmt="o-", color=color, capsize=3, ms=5)
            ax.set_xscale("log", base=2)
            ax.set_xticks(ws, [str(w) for w in ws])
            ax.set_xlabel("hidden width")
            ax.set_ylabel(label)
            ax.set_title(f"{part}: {label} (mean ± std over {len(rs)} fitted trials; thin: "
                         "seeds)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path, dpi=120, layout=False)
