"""Figures of the convergence analysis: KKT residuals, smoothed margins with the monotonicity
audit, rate fits, direction cosines, and the Mexican-hat trajectory (Appendix J)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from marginlab.analysis.audit import DirectionCosines, MonotonicityAudit
from marginlab.analysis.mexican_hat import MexicanHatResult
from marginlab.analysis.rates import RateFit, log_flow_times
from marginlab.io.plots import pyplot, save_figure

__all__ = ["plot_direction", "plot_kkt", "plot_kkt_fall", "plot_mexican_hat", "plot_rates",
           "plot_smoothed_margin"]


def _save(fig, path: str | os.PathLike) -> Path:
    return save_figure(fig, path, layout=False, bbox_inches="tight")


def plot_kkt(epochs: Sequence[int], eps_relative: Sequence[float], delta: Sequence[float],
             path: str | os.PathLike, *, tau: float, n_active: Sequence[int] | None = None,
             title: str = "") -> Path:
    """ε/‖θ‖ and δ of the (ε, δ)-KKT certificate against the epoch (log scales)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    ax.plot(epochs, eps_relative, "o-", color="C0")
    positive = [v for v in eps_relative if v > 0]
    if positive and max(positive) > 10 * min(positive):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ε / ‖θ‖")
    ax.set_title(f"KKT residual of (P), near-active τ = {tau:g}")
    if n_active is not None:
        for e, v, k in zip(epochs, eps_relative, n_active):
            ax.annotate(str(k), (e, v), textcoords="offset points", xytext=(0, 5),
                        fontsize=7, ha="center", color="0.4")
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[1]
    pos = [(e, d) for e, d in zip(epochs, delta) if d > 0]
    if pos:
        ax.plot(*zip(*pos), "s-", color="C1")
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("δ = max λ_n (q_n − 1)")
    ax.set_title("complementary slackness δ")
    ax.grid(True, which="both", alpha=0.3)
    if n_active is not None:
        axes[0].text(0.01, 0.02, "labels: number of multipliers λ_n > 0",
                     transform=axes[0].transAxes, fontsize=7, color="0.4")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_smoothed_margin(records: Sequence[dict], audits: Sequence[MonotonicityAudit],
                         path: str | os.PathLike, *, title: str = "") -> Path:
    """γ̃ and γ̃_multi against the epoch, the start of the monotone regime (L < ℓ(0)) and the
    epochs where the audit found a decrease (red marks)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(audits), figsize=(5.2 * len(audits), 3.8), squeeze=False)
    for ax, audit in zip(axes[0], audits):
        pts = [(r["epoch"], r[audit.field]) for r in records
               if isinstance(r.get(audit.field), (int, float)) and math.isfinite(r[audit.field])]
        if pts:
            ax.plot(*zip(*pts), "-", color="C0", lw=1.2, label=audit.field)
        values = dict(pts)
        bad = [(e, values[e]) for e in audit.decrease_epochs if e in values]
        if bad:
            ax.plot(*zip(*bad), "v", color="red", ms=6,
                    label=f"decrease (> {audit.rel_tol:g} rel.): {audit.n_decreases}")
        last = max((e for e, _ in pts), default=1)
        first = 1
        if audit.start_epoch is not None:
            ax.axvline(audit.start_epoch, color="0.5", ls="--", lw=1, label="L < ℓ(0) from here")
            after = [v for e, v in pts if e >= audit.start_epoch]
            if after:
                lo, hi = min(after), max(after)
                pad = 0.1 * (hi - lo) if hi > lo else 0.1 * abs(hi) + 1e-12
                ax.set_ylim(lo - pad, hi + pad)
                first = max(1, int(audit.start_epoch * 0.9))
        if last > 30 * first:
            ax.set_xscale("log")
        ax.set_xlim(first, last * 1.02)
        ax.set_xlabel("epoch")
        ax.set_ylabel(audit.field)
        ax.set_title(f"{audit.field}: max relative drop {audit.max_relative_decrease:.2g}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_rates(records: Sequence[dict], fit: RateFit | None, path: str | os.PathLike, *,
               title: str = "", set_by_schedule: bool = False) -> Path:
    """log L and log ρ against log T, with the fits of Theorem 4.3's forms (no loss fit when
    the schedule sets the step from the loss: that relation is fixed by construction)."""
    plt = pyplot()
    log_T = np.array(log_flow_times(records))
    log_L = np.array([float(r["log_loss_sum"]) for r in records])
    rho = np.array([float(r["rho"]) for r in records])
    ok = np.isfinite(log_T) & np.isfinite(log_L) & (log_T > 0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    ax.plot(log_T[ok], log_L[ok], ".", color="0.3", ms=3, label="run")
    ax.set_xlabel("log T  (T = Σ steps · lr)")
    ax.set_ylabel("log L  (L summed over samples)")
    ax = axes[1]
    ax.plot(log_T[ok], np.log(rho[ok]), ".", color="0.3", ms=3, label="run")
    ax.set_xlabel("log T")
    ax.set_ylabel("log ρ")
    if fit is not None:
        lt = np.array(fit.log_t)
        if set_by_schedule:
            axes[0].set_title("fixed by the loss-based schedule (η = α/L): not evidence")
        else:
            a, b, c = fit.coefficients["loss"]
            axes[0].plot(lt, a + b * lt + c * np.log(lt), "-", color="C0",
                         label=f"fit: b = {b:.3f}, c = {c:.3f}")
            a2, b2 = fit.coefficients["loss_given_theory"]
            axes[0].plot(lt, a2 + b2 * lt + fit.theory_loss_exponent_loglog_t * np.log(lt),
                         "--", color="C1",
                         label=f"c at theory {fit.theory_loss_exponent_loglog_t:.3g}: "
                               f"b' = {b2:.3f}")
            axes[0].set_title("L ~ 1/(T (log T)^(2−2/L)): theory b = −1")
        A, B = fit.coefficients.get("rho_affine", [math.nan, math.nan])
        base = A + B * lt
        good = base > 0
        axes[1].plot(lt[good], np.log(base[good]) / fit.order, "-", color="C0",
                     label=f"ρ^L = A + B log T (A = {A:.3g}), R² {fit.r2_rho_affine:.4f}")
        a3, d = fit.coefficients["rho"]
        axes[1].plot(lt, a3 + d * np.log(lt), "--", color="C1", lw=0.9,
                     label=f"bare power law ρ ∝ (log T)^{d:.3f}")
        axes[1].set_title("ρ ~ (log T)^(1/L)" + (" (descriptive)" if set_by_schedule else ""))
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_direction(cos: DirectionCosines, path: str | os.PathLike, *, title: str = "") -> Path:
    """1 − cos between directions k epochs apart and to the last checkpoint (log scale)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    floor = 1e-16
    if cos.pairs:
        ax.plot([b for _, b in cos.pairs], [max(1 - c, floor) for c in cos.cosines], "o-",
                ms=3, label=f"1 − cos(θ(e − {cos.k}), θ(e))")
    ax.plot(cos.epochs[:-1], [max(1 - c, floor) for c in cos.cosine_to_final[:-1]], "s-",
            ms=3, label=f"1 − cos(θ(e), θ({cos.epochs[-1]}))")
    ax.set_yscale("log")
    ax.set_xlabel("epoch e")
    ax.set_ylabel("1 − cosine of normalized parameters")
    ax.set_title("direction convergence")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_mexican_hat(results: Sequence[MexicanHatResult], path: str | os.PathLike) -> Path:
    """Appendix J: the direction (u, v) spiralling to the unit circle, 1 − r → 0 while the
    turns grow, ψ settling in the valley, and log(1 − γ̃) = log f falling (γ̃ non-decreasing)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.5))
    theta = np.linspace(0, 2 * np.pi, 400)
    ax = axes[0, 0]
    ax.plot(np.cos(theta), np.sin(theta), "k--", lw=1, label="circle x² + y² = 1, z = 0")
    for i in reversed(range(len(results))):  # the first result drawn last, on top
        res = results[i]
        # resample evenly in the angle: outputs spaced in log τ are turns apart late on
        phi = np.linspace(res.phi[0], res.phi[-1], max(2000, int(200 * abs(res.windings))))
        r = np.interp(phi, res.phi, res.r) if np.all(np.diff(res.phi) > 0) else None
        u, v = ((r * np.cos(phi), r * np.sin(phi)) if r is not None
                else (res.direction[:, 0], res.direction[:, 1]))
        ax.plot(u, v, "-", lw=0.6 if i else 0.8, color=f"C{i}", alpha=0.6 if i else 1.0,
                label=f"p = {res.flow.c_power}: {res.windings:.1f} turns, r → {res.r[-1]:.4f}")
        ax.plot(*res.direction[0, :2], "o", color=f"C{i}")
    ax.set_aspect("equal")
    ax.set_xlabel("u = x/ρ")
    ax.set_ylabel("v = y/ρ")
    ax.set_title("direction (u, v) from Theorem J.1's start (dot)")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[0, 1]
    for i, res in enumerate(results):
        ax.plot(res.tau[1:], 1.0 - res.r[1:], "-", color=f"C{i}",
                label=f"1 − r, p = {res.flow.c_power}")
        ax.plot(res.tau[1:], (res.phi[1:] - res.phi[0]) / (2 * np.pi), ":", color=f"C{i}",
                label=f"turns (φ − φ0)/2π, p = {res.flow.c_power}")
    ax.axhline(0.01, color="0.5", ls="--", lw=0.8, label="1 − r = 0.01")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("τ (time-changed flow)")
    ax.set_title("r → 1 while the angle keeps turning")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[1, 0]
    for i, res in enumerate(results):
        ax.plot(res.tau[1:], res.psi[1:], "-", color=f"C{i}", label=f"p = {res.flow.c_power}")
    ax.axhline(np.pi / 2, color="0.5", ls="--", lw=0.8, label="valley floor ψ = π/2")
    ax.set_xscale("log")
    ax.set_xlabel("τ")
    ax.set_ylabel("ψ = φ − 1/(1 − r²)")
    ax.set_title("ψ leaves the theorem's curve ψ = 0 for the valley ψ ≡ π/2")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax = axes[1, 1]
    for i, res in enumerate(results):
        ax.plot(res.tau[1:], res.log_f[1:], "-", color=f"C{i}", label=f"p = {res.flow.c_power}")
    ax.set_xscale("log")
    ax.set_xlabel("τ")
    ax.set_ylabel("log(1 − γ̃) = log f(u, v)")
    ax.set_title("smoothed margin γ̃ = 1 − f: non-decreasing")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_kkt_fall(results: Mapping[str, Sequence[dict]], path: str | os.PathLike, *,
                  tau: float) -> Path:
    """ε/‖θ‖ of (P) along training, one colour per arm and one line per seed: against the
    step (left; dotted: ReLU with h over Clarke's hull at near-kink units), against log T
    (middle; dashed: one constraint per sample, arg-max), and the loss."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    markers = "osd^v<>"
    for i, (arm, runs) in enumerate(results.items()):
        for k, run in enumerate(runs):
            ok = [r for r in run["rows"] if r["status"] == "ok"]
            if not ok:
                continue
            steps = [r["step"] for r in ok]
            eps = [r["eps_relative"] for r in ok]
            log_t = [r["log_T"] for r in ok]
            label = arm if k == 0 else None
            kw = dict(color=f"C{i}", marker=markers[k % len(markers)], ms=3, lw=1)
            axes[0].plot(steps, eps, label=label, **kw)
            hull = [r.get("eps_relative_hull") for r in ok]
            if all(h is not None for h in hull):
                axes[0].plot(steps, hull, color=f"C{i}", ls=":", marker=markers[k % 7], ms=3,
                             lw=1.2, label=f"{arm}, Clarke hull" if k == 0 else None)
            axes[1].plot(log_t, eps, label=label, **kw)
            axes[1].plot(log_t, [r["eps_relative_arg_max"] for r in ok], color=f"C{i}", ls="--",
                         lw=0.8, label=f"{arm}, arg-max" if k == 0 else None)
            axes[2].plot(steps, [-r["log10_loss"] for r in ok], label=label, **kw)
    for ax in axes[:2]:
        ax.set_yscale("log")
        ax.set_ylabel("ε / ‖θ‖")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("GD step")
    axes[0].set_title(f"KKT residual of (P), pairs, τ = {tau:g}")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("log T  (T = Σ η, flow time)")
    axes[1].set_title("against log T; dashed: one constraint per sample")
    axes[2].set_xscale("log")
    axes[2].set_yscale("log")
    axes[2].set_xlabel("GD step")
    axes[2].set_ylabel("−log10 L")
    axes[2].set_title("training loss")
    axes[2].grid(True, which="both", alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_flow_rates(paths: Mapping[str, Sequence[tuple[dict, dict]]],
                    fits: Mapping[str, Sequence[dict]], path: str | os.PathLike) -> Path:
    """Theorem 4.3 for each model (one colour) and seed: the loss against T (lines: gradient
    flow, dots: constant-step GD), L·T·(log T)^(2−2/L), flat when the theorem's form holds, and
    ‖θ‖^L against log T with the fitted line (intercept: the initial norm)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for i, (kind, runs) in enumerate(paths.items()):
        for k, (flow, gd) in enumerate(runs):
            order = fits[kind][k].get("order") or {"linear": 1, "deep-linear": 2,
                                                   "quadratic": 3}.get(kind, 1)
            label = f"{kind} (L = {order})" if k == 0 else None
            T, ll = flow["T"], flow["log_loss"]
            axes[0].plot(T, -ll / math.log(10), color=f"C{i}", lw=1, label=label)
            axes[0].plot(gd["T"][::8], -gd["log_loss"][::8] / math.log(10), "o", ms=2.5,
                         color=f"C{i}", mfc="none",
                         label=f"{kind}, GD" if k == 0 else None)
            m = T > 3.0
            comp = ll[m] + np.log(T[m]) + (2 - 2 / order) * np.log(np.log(T[m]))
            axes[1].plot(T[m], comp, color=f"C{i}", lw=1, label=label)
            axes[2].plot(np.log(T[m]), flow["rho"][m] ** order, color=f"C{i}", lw=1,
                         label=label)
            f = fits[kind][k]
            if np.isfinite(f.get("k", np.nan)) and abs(f["k"] - order) < 0.5:
                xs = np.log(T[T >= f["T_from"]])
                axes[2].plot(xs, (f["rho_intercept"] + f["rho_slope"] * xs) ** (order / f["k"]),
                             ":", color="k", lw=0.8)
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("T")
    axes[0].set_ylabel("−log10 L")
    axes[0].set_title("loss (lines: gradient flow, circles: GD)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("T")
    axes[1].set_ylabel("log (L · T · (log T)^(2−2/L))")
    axes[1].set_title("compensated loss: flat under Theorem 4.3")
    axes[2].set_xlabel("log T")
    axes[2].set_ylabel("‖θ‖^L")
    axes[2].set_yscale("log")
    axes[2].set_title("‖θ‖^L against log T (dotted: fit ‖θ‖^k = A + B log T)")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)
