"""The convergence analysis of one run directory (``marginlab analyze RUN_DIR``).

Reads ``config.json``, ``metrics.jsonl`` and ``trajectory/epoch-NNNNNN.safetensors``; writes
``analysis.json``, ``plots/analysis-*.png`` and the report fragments ``report/analysis.html``
and ``report/analysis.md``:

- (ε, δ)-KKT residuals of (P) at trajectory checkpoints (:func:`~marginlab.analysis.kkt_residual`)
  on the run's training set (rebuilt with :func:`marginlab.data.load` from the config's
  ``data`` entry), optionally a class-balanced subset of it;
- the monotonicity audit of γ̃ and γ̃_multi (:func:`~marginlab.analysis.audit_monotonicity`);
- the rate fits of Theorem 4.3 (:func:`~marginlab.analysis.fit_rates`);
- direction cosines between checkpoints (:func:`~marginlab.analysis.direction_cosines`);
- the tangent-kernel SVM of Corollary 4.5 at the last checkpoint, when the N×N kernel is small.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from marginlab import data, models, validate
from marginlab.analysis import plots
from marginlab.analysis.audit import (
    DirectionCosines,
    MonotonicityAudit,
    audit_monotonicity,
    direction_cosines,
    trajectory_checkpoints,
)
from marginlab.analysis.kkt import kkt_residual
from marginlab.analysis.rates import RateFit, fit_rates, loss_sets_step
from marginlab.analysis.tangent_svm import tangent_svm
from marginlab.errors import (
    MarginlabError,
    NotHomogeneousError,
    NotSeparatedError,
    RunDirectoryError,
)
from marginlab.io import storage
from marginlab.io.report import Report
from marginlab.progress import Progress
from marginlab.train.rundir import RunDir

__all__ = ["RunAnalysis", "analyze_run", "balanced_subset"]

SVM_MAX_SAMPLES = 2000


@dataclass
class RunAnalysis:
    """What :func:`analyze_run` found (also written to ``RUN_DIR/analysis.json``).

    Attributes:
        run_dir: the run directory.
        tau: near-active tolerance of the KKT residuals.
        n_samples: training samples used for KKT and the SVM.
        kkt: one dict per analyzed checkpoint (``epoch``, ``status`` and, when ``ok``, the
            fields of :meth:`KKTResult.summary` plus ``seconds``).
        monotonicity: the audits of γ̃ and γ̃_multi.
        rates: the rate fit, or None (see ``notes``).
        direction: direction cosines, or None (see ``notes``).
        tangent_svm: summary of the tangent-kernel SVM at the last checkpoint, or None.
        notes: why a part was skipped.
        files: paths written, relative to ``run_dir``.
        rates_set_by_schedule: the run's step is set from its loss (loss-based schedules), so
            its loss-rate fit is fixed by construction and reported as descriptive only.
    """

    run_dir: Path
    tau: float
    n_samples: int | None
    kkt: list[dict] = field(default_factory=list)
    monotonicity: list[MonotonicityAudit] = field(default_factory=list)
    rates: RateFit | None = None
    direction: DirectionCosines | None = None
    tangent_svm: dict | None = None
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rates_set_by_schedule: bool = False

    def as_dict(self) -> dict:
        return {
            "run_dir": str(self.run_dir), "tau": self.tau, "n_samples": self.n_samples,
            "kkt": self.kkt, "monotonicity": [a.as_dict() for a in self.monotonicity],
            "rates": None if self.rates is None else self.rates.as_dict(),
            "direction": None if self.direction is None else self.direction.as_dict(),
            "tangent_svm": self.tangent_svm, "notes": self.notes, "files": self.files,
            "rates_set_by_schedule": self.rates_set_by_schedule,
        }


def balanced_subset(y: Tensor, n: int | None) -> Tensor:
    """Indices of the first ⌈n/C⌉ samples of each of the C label values (in data order), at
    most n in total, sorted; all indices when ``n`` is None or ≥ len(y)."""
    if n is None or n >= y.numel():
        return torch.arange(y.numel())
    if n <= 0:
        raise MarginlabError(f"--n must be positive, got {n}")
    values = torch.unique(y)
    per = -(-n // values.numel())
    idx = torch.cat([torch.nonzero(y == v).reshape(-1)[:per] for v in values])
    return torch.sort(idx).values[:n]


def _training_set(config: dict, n: int | None) -> tuple[Tensor, Tensor]:
    entry = config.get("data")
    if not isinstance(entry, dict) or not entry.get("name"):
        raise RunDirectoryError("config.json's data entry names no data set; the KKT analysis "
                                "needs data marginlab.data.load can rebuild")
    options = {k: v for k, v in entry.items() if k not in ("name", "root", "n_train", "n_test")}
    split = data.load(entry["name"], entry.get("root"), n_train=entry.get("n_train"),
                      n_test=entry.get("n_test"), **options)
    X, y = split.train
    if n is not None and n > y.numel():
        raise MarginlabError(f"--n {n} exceeds the run's {y.numel()} training samples")
    keep = balanced_subset(y, n)
    return X[keep], y[keep]


def analyze_run(run_dir: str | os.PathLike, *, kkt_every: int = 1, n: int | None = None,
                tau: float = 1e-2, rel_tol: float = 1e-9, svm: bool = True,
                memory_limit: float = 2 * 2**30, progress: bool | None = None) -> RunAnalysis:
    """Analyze a run directory and write analysis.json, plots and report fragments.

    Args:
        run_dir: the run directory.
        kkt_every: KKT residual at every this-many-th trajectory checkpoint (and the last).
        n: class-balanced subset of the run's training set for KKT/SVM (default: all of it;
            a subset makes (P) the problem of those samples only).
        tau: near-active tolerance.
        rel_tol: relative decrease of γ̃ the monotonicity audit ignores.
        svm: solve the tangent-kernel SVM at the last checkpoint (if N ≤ 2000).
        memory_limit: bytes for Gram matrices.
        progress: progress bar over checkpoints (default: when attached to a terminal).

    Raises:
        RunDirectoryError: missing config or metrics.
        MarginlabError: bad arguments.
    """
    run = Path(run_dir)
    files = RunDir(run)
    if not files.config_path.is_file():
        raise RunDirectoryError(f"{run} has no config.json; is it a marginlab run directory?")
    kkt_every = validate.integer(kkt_every, "--kkt-every", minimum=1)
    n = validate.optional_integer(n, "--n", minimum=1)
    tau = validate.number(tau, "--tau", minimum=0)
    rel_tol = validate.number(rel_tol, "--rel-tol", minimum=0)
    memory_limit = validate.number(memory_limit, "memory limit (bytes)", positive=True)
    config = storage.read_json_object(files.config_path)
    records = storage.read_metrics(files.metrics_path)
    if not records:
        raise RunDirectoryError(f"{files.metrics_path} holds no epochs")
    loss = config.get("loss", "cross_entropy")
    result = RunAnalysis(run_dir=run, tau=float(tau), n_samples=None,
                         rates_set_by_schedule=loss_sets_step(config))
    result.monotonicity = audit_monotonicity(records, loss, rel_tol=rel_tol)
    try:
        result.rates = fit_rates(records, loss)
    except MarginlabError as exc:
        result.notes.append(f"rates: {exc}")
    ckpts = trajectory_checkpoints(run)
    if len(ckpts) >= 2:
        result.direction = direction_cosines(run)
    else:
        result.notes.append(f"direction: {len(ckpts)} trajectory checkpoints (need 2)")
    if not ckpts:
        result.notes.append("kkt: no trajectory checkpoints")
    else:
        X, y = _training_set(config, n)
        result.n_samples = int(y.numel())
        epochs = list(ckpts)
        chosen = epochs[::kkt_every]
        if chosen[-1] != epochs[-1]:
            chosen.append(epochs[-1])
        with Progress("analyze KKT", total=len(chosen), unit="checkpoint",
                      quiet=None if progress is None else not progress) as bar:
            for epoch in chosen:
                bar.update(0, epoch=epoch)
                model = models.load(ckpts[epoch])
                t0 = time.perf_counter()
                try:
                    res = kkt_residual(model, X, y, tau, memory_limit=memory_limit)
                except NotSeparatedError:
                    result.kkt.append({"epoch": epoch, "status": "not separated"})
                    continue
                except NotHomogeneousError as exc:
                    result.notes.append(f"kkt: {exc}")
                    break
                finally:
                    bar.update(1)
                result.kkt.append({"epoch": epoch, "status": "ok", **res.summary(),
                                   "seconds": time.perf_counter() - t0})
        ok = [k for k in result.kkt if k["status"] == "ok"]
        if svm and ok and ok[-1]["epoch"] == epochs[-1]:
            if y.numel() > SVM_MAX_SAMPLES:
                result.notes.append(f"tangent SVM: skipped, N = {y.numel()} > "
                                    f"{SVM_MAX_SAMPLES} (use --n)")
            else:
                t0 = time.perf_counter()
                s = tangent_svm(models.load(ckpts[epochs[-1]]), X, y, memory_limit=memory_limit)
                result.tangent_svm = {"epoch": epochs[-1], **s.summary(),
                                      "seconds": time.perf_counter() - t0}
    _write_outputs(result, records, config)
    return result


def _relative(path: Path, run: Path) -> str:
    return Path(path).relative_to(run).as_posix()


def _write_outputs(result: RunAnalysis, records: list[dict], config: dict) -> None:
    run = result.run_dir
    name = run.name
    rd = RunDir(run)
    written = []
    ok = [k for k in result.kkt if k["status"] == "ok"]
    if ok:
        written.append(plots.plot_kkt(
            [k["epoch"] for k in ok], [k["eps_relative"] for k in ok], [k["delta"] for k in ok],
            rd.plots_dir / "analysis-kkt.png", tau=result.tau,
            n_active=[k["n_active"] for k in ok], title=name))
    written.append(plots.plot_smoothed_margin(
        records, result.monotonicity, rd.plots_dir / "analysis-smoothed-margin.png", title=name))
    written.append(plots.plot_rates(records, result.rates, rd.plots_dir / "analysis-rates.png",
                                    title=name, set_by_schedule=result.rates_set_by_schedule))
    if result.direction is not None:
        written.append(plots.plot_direction(result.direction,
                                            rd.plots_dir / "analysis-direction.png", title=name))
    fragment = rd.fragments_dir / "analysis.html"
    result.files = [_relative(p, run) for p in (rd.analysis_path, *written, fragment,
                                                fragment.with_suffix(".md"))]

    rep = Report("analysis")
    rep.heading("Convergence analysis (Lyu & Li, Section 4.3 and Appendix C)")
    rep.paragraph(
        f"KKT residuals of (P): min ½‖θ‖² s.t. q_n(θ) ≥ 1, at the direction of each analyzed "
        f"trajectory checkpoint rescaled to q_min = 1, with multipliers on the near-active set "
        f"q_n ≤ 1 + τ (τ = {result.tau:g}) found by non-negative least squares; "
        f"{result.n_samples if result.n_samples is not None else 'no'} training samples. "
        "ε/‖θ‖ → 0 and δ → 0 along a run that converges to a KKT point (Theorem 4.4).")
    if result.kkt:
        rows = []
        for k in result.kkt:
            if k["status"] != "ok":
                rows.append([k["epoch"], k["status"], None, None, None, None, None])
            else:
                rows.append([k["epoch"], k["method"], k["q_min"], k["eps_relative"],
                             k["delta"], f"{k['n_active']}/{k['n_near_active']}", k["seconds"]])
        rep.table(["epoch", "method", "q_min", "ε/‖θ‖", "δ", "active/near-active", "seconds"],
                  rows)
    if ok:
        rep.image("plots/analysis-kkt.png", "KKT residual per epoch")
    if result.tangent_svm is not None:
        s = result.tangent_svm
        rep.paragraph(
            f"Tangent-kernel SVM at epoch {s['epoch']} (Corollary 4.5; features ∇_θ q_n): "
            f"cos(w_SVM, θ) = {s['cosine']:.6g}, kernel margin {s['svm_margin']:.4g}, "
            f"{s['n_support']} support vectors, duality gap {s['duality_gap']:.2g}.")
    rep.heading("Monotonicity of the smoothed margin (Theorem A.7, Appendix H)", 3)
    rep.table(["series", "L < ℓ(0) from epoch", "pairs checked", "decreases",
               "max relative decrease", "first decrease epochs"],
              [[a.field, a.start_epoch, a.n_checked, a.n_decreases, a.max_relative_decrease,
                ", ".join(map(str, a.decrease_epochs[:8])) or "–"]
               for a in result.monotonicity])
    rep.image("plots/analysis-smoothed-margin.png", "smoothed margins")
    rep.heading("Rates (Theorem 4.3)", 3)
    if result.rates_set_by_schedule:
        sched = config.get("schedule", {})
        rep.paragraph(
            f"This run's step is set from its loss (schedule "
            f"{sched.get('name') if isinstance(sched, dict) else sched}: η = α/L̄), so "
            "T = Σ η grows as 1/L by construction and log L against log T is fixed by the "
            "schedule: it is not evidence for Theorem 4.3, and no loss rate is reported. The "
            "theorem is tested with constant steps and gradient flow by `marginlab reproduce "
            "lyu-li-rates`. The norm fit below is descriptive only.", note=True)
    if result.rates is not None:
        r = result.rates
        rows = [
            ["ρ^L = A + B log T (theorem's form; A carries the initial norm): R²",
             r.r2_rho_affine, 1.0],
            ["best k in ρ^k = A + B log T", r.rho_best_power, r.order],
            ["log ρ vs log log T (bare power law)", r.rho_exponent_loglog_t,
             r.theory_rho_exponent_loglog_t],
        ]
        if not result.rates_set_by_schedule:
            rows = [
                ["log L vs log T (joint fit with log log T)", r.loss_exponent_t,
                 r.theory_loss_exponent_t],
                ["log L vs log log T (joint fit)", r.loss_exponent_loglog_t,
                 r.theory_loss_exponent_loglog_t],
                ["log L vs log T, log log T term at theory", r.loss_exponent_t_given_theory,
                 r.theory_loss_exponent_t],
                *rows]
        rep.table(["fit", "fitted", "theory"], rows)
        span = r.log_t[-1] - r.log_t[0] if r.log_t else 0.0
        rep.paragraph(f"{len(r.epochs)} epochs from {r.epochs[0]} to {r.epochs[-1]}, T spanning "
                      f"a factor e^{span:.3g}; R² {r.r2_loss:.4f} (loss), {r.r2_rho:.4f} "
                      "(ρ, power law). T = Σ steps·lr with lr the step on the mean loss. "
                      "Theorem 4.3 is asymptotic: over less than a few decades of T these "
                      "numbers describe the run, they do not test the theorem.")
    rep.image("plots/analysis-rates.png", "rates")
    if result.direction is not None:
        d = result.direction
        rep.heading("Direction convergence (Theorem 4.4)", 3)
        last = d.cosines[-1] if d.cosines else math.nan
        rep.paragraph(f"{len(d.epochs)} trajectory checkpoints; cos(θ(e − {d.k}), θ(e)) at the "
                      f"last pair: {last:.8g}; cos(θ(first), θ(last)): "
                      f"{d.cosine_to_final[0]:.6g}.")
        rep.image("plots/analysis-direction.png", "direction cosines")
    for note in result.notes:
        rep.paragraph(note, note=True)
    frag_html, frag_md = rep.fragment()
    storage.atomic_write_text(fragment, f"<section>\n{frag_html}\n</section>\n")
    storage.atomic_write_text(fragment.with_suffix(".md"), frag_md + "\n")
    storage.write_json(rd.analysis_path, result.as_dict())
