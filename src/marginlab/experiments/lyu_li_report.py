"""The report page of the main job (and its CIFAR-10 counterpart): claims first, then the
numbers they rest on, the plots and the per-run pages. Every number comes from ``summary.json``
or the runs' metrics; no verdict is written here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from marginlab import run_report
from marginlab.claims import Claim, paired_effect, render_table_html, render_table_md
from marginlab.experiments import RunRequest
from marginlab.io import plots
from marginlab.io.plots import pyplot, save_figure
from marginlab.io.report import Report

__all__ = ["PAPER_TABLE1", "write_report"]

PAPER_TABLE1 = [  # Lyu & Li, Table 1: CNN without bias, full MNIST, loss-based schedule
    ["model-1", 38, -10.04, 5.65e-5, 1.0, 0.993],
    ["model-2", 75, -15.12, 9.50e-5, 1.0, 0.993],
    ["model-3", 107, -20.07, 1.30e-4, 1.0, 0.993],
    ["model-4", 935, -120.01, 4.61e-4, 1.0, 0.992],
    ["model-5", 10000, -881.51, 1.18e-3, 1.0, 0.991],
]


def _g(v, spec: str = ".4g") -> str:
    """A number read back from JSON (where non-finite floats are strings) in ``spec``."""
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return "–"


def _pm(values: Sequence[float]) -> str:
    m, se = paired_effect(values)
    if not math.isfinite(m):
        return "–"
    return f"{m:.4g}" + (f" ± {se:.2g}" if math.isfinite(se) else "")


def _describe(s: dict, seeds: list[int]) -> str:
    if s["model"] == "mlp":
        net = (f"a bias-free MLP 784-{'-'.join(map(str, s['widths']))}-10 (ReLU, order "
               f"{len(s['widths']) + 1}; 'first' keeps the first layer's bias)")
    else:
        net = f"{s['model']} (width ×{s['width']})"
    n = "all" if s["n_train"] is None else s["n_train"]
    nt = "all" if s["n_test"] is None else s["n_test"]
    return (f"Trained {net} on {n} training images of {s['data']} (test: {nt}), SGD with batch "
            f"size {s['batch_size']}, He-normal init, for exactly {s['epochs']} accepted epochs "
            f"per run (no wall-clock budget: a seed gives the same numbers on any machine); "
            f"schedules {', '.join(s['schedules'])} (constant lr {s['lr']:g}; loss-based α0 = "
            f"{s['alpha0']:g}, up 2^(1/5), down 2^(1/10); loss_based_momentum with its defaults); "
            f"bias modes {', '.join(s['biases'])}; seeds {', '.join(map(str, seeds))}; "
            f"{_parallelism(s)}. Rolled-back epochs of the "
            "loss-based schedules are extra work, not epochs: the wall-time view below shows "
            "their cost.")


def _parallelism(s: dict) -> str:
    if s.get("backend") == "ray":
        return "runs as one-CPU Ray tasks"
    if s["workers"] == 0:
        return "runs one after the other in one process"
    return f"{s['workers']} runs at a time, one thread each"


def _training_plots(out: Path, runs: dict[str, list[dict]], seed: int, title: str) -> list[str]:
    chosen = {k: v for k, v in runs.items() if k.endswith(f"-seed{seed}") and v}
    names = []
    if chosen:
        plots.plot_training(chosen, out / "plots" / "training.png", title=title)
        plots.plot_margin_vs_time(chosen, out / "plots" / "margin_vs_time.png", title=title)
        names = ["training.png", "margin_vs_time.png"]
    return names


def _kkt_plot(out: Path, series: dict[str, list[dict]], tau: float) -> str | None:
    pts = {k: [p for p in v if p["status"] == "ok" and p["epoch"] > 0] for k, v in series.items()}
    pts = {k: v for k, v in pts.items() if v}
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (name, p) in enumerate(pts.items()):
        ax.plot([q["epoch"] for q in p], [q["eps_relative"] for q in p],
                ls=plots.LINESTYLES[i % len(plots.LINESTYLES)],
                marker=plots.MARKERS[i % len(plots.MARKERS)], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ε / ‖θ‖")
    ax.set_title(f"KKT residual of (P) along the loss-based runs (τ = {tau:g})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, out / "plots" / "kkt.png")
    return "kkt.png"


def write_report(out: Path, title: str, request: RunRequest, summary: dict,
                 runs: dict[str, list[dict]], claims: Sequence[Claim]) -> Path:
    s = summary["settings"]
    rep = Report(title)
    if request.scale == "cpu":
        rep.paragraph("CPU scale: a smaller network and data set than the paper's, run on this "
                      "machine; compare the shape of the results, not the absolute numbers.",
                      note=True)
    if summary.get("not_evidence"):
        rep.paragraph(f"Not evidence about the paper: {summary['not_evidence']}.", note=True)
    rep.paragraph(_describe(s, summary["seeds"]))
    tf32 = "allowed" if s["allow_tf32"] else "off"
    rep.paragraph(f"Precision: float32 training, float64 margins and losses; TF32 on CUDA is "
                  f"{tf32} (set with --set allow_tf32=true|false; each run's config.json "
                  f"records it as \"tf32\"). Device: {request.device}.")
    rep.heading("Claims")
    rep.raw(render_table_html(list(claims)), render_table_md(list(claims)))
    rep.paragraph("Verdicts are computed (marginlab.claims): 'reproduced' needs an effect ≥ 3 "
                  "standard errors in the paper's direction, or an exact comparison that holds.")

    pairs = summary["pairs"]
    if pairs:
        rep.heading(f"Loss-based vs constant lr at equal epochs ({summary['epochs']})")
        rows = []
        for p in pairs:
            lb, c = p["loss_based"], p["constant"]
            ratio = (lb["normalized_margin_multi"] / c["normalized_margin_multi"]
                     if c["normalized_margin_multi"] > 0 else math.nan)
            rows.append([p["bias"], p["seed"], lb["log10_loss_mean"], c["log10_loss_mean"],
                         lb["normalized_margin_multi"], c["normalized_margin_multi"], ratio,
                         lb["smoothed_margin_multi"], c["smoothed_margin_multi"],
                         p["loss_based_epochs_to_constant_final"]])
        ratios = [r[6] for r in rows]
        rep.table(["bias", "seed", "log10 L̄, loss-based", "log10 L̄, constant",
                   "γ_multi, loss-based", "γ_multi, constant", "ratio", "γ̃_multi, loss-based",
                   "γ̃_multi, constant",
                   f"epochs for loss-based to reach constant's γ_multi at {summary['epochs']}"],
                  rows)
        rep.paragraph(f"Margin ratio at equal epochs, mean ± se over {len(rows)} pairs: "
                      f"{_pm(ratios)}. Paper (Figure 1, full MNIST, 10000 epochs): about 6.5x "
                      "(1.2e-3 vs 1.8e-4).")
        rep.heading("Second view: at equal wall time")
        rep.table(["bias", "seed", "at wall s", "γ_multi, loss-based", "γ_multi, constant",
                   "ratio", "log10 L̄, loss-based", "log10 L̄, constant"],
                  [[p["bias"], p["seed"], p["wall_time"],
                    p["loss_based_at_time"]["normalized_margin_multi"],
                    p["constant_at_time"]["normalized_margin_multi"],
                    (p["loss_based_at_time"]["normalized_margin_multi"]
                     / p["constant_at_time"]["normalized_margin_multi"]),
                    p["loss_based_at_time"]["log10_loss_mean"],
                    p["constant_at_time"]["log10_loss_mean"]] for p in pairs])
        rep.paragraph("Wall time depends on the machine and its load; the equal-epoch table "
                      "above does not.")

    rep.heading("Every run at its last epoch")
    rows = []
    for name, entry in summary["runs"].items():
        last = entry["final"]
        if last:
            rows.append([name, last["epoch"], entry["retries"], last["wall_time"],
                         last["log10_loss_mean"], last["normalized_margin_multi"],
                         last["smoothed_margin_multi"], last["train_acc"], last.get("test_acc")])
    rep.table(["run", "epochs", "rolled-back epochs", "wall s", "log10 L̄", "γ_multi",
               "γ̃_multi", "train acc", "test acc"], rows)
    by_sched: dict[str, list[float]] = {}
    for entry in summary["runs"].values():
        if entry["final"]:
            by_sched.setdefault(entry["schedule"], []).append(
                entry["final"]["normalized_margin_multi"])
    rep.paragraph("γ_multi at the last epoch, mean ± se over seeds and biases: " + "; ".join(
        f"{k} {_pm(v)}" for k, v in by_sched.items()) + ".")
    seed0 = summary["seeds"][0]
    for png in _training_plots(out, runs, seed0, title):
        rep.image(f"plots/{png}", png)
    rep.paragraph(f"Plots show seed {seed0}; every series has its own line style and marker. "
                  + plots.coincidence_note(
                      {k: v for k, v in runs.items() if k.endswith(f"-seed{seed0}")}))

    lb_none = f"loss_based-bias-{s['biases'][-1]}-seed{seed0}"
    snaps = run_report.snapshot_rows(out / "runs" / lb_none)
    rep.heading(f"Snapshots of {lb_none} (Table 1 style)")
    if snaps:
        rep.table(run_report.SNAPSHOT_HEADERS, snaps)
    rep.paragraph("Paper, Table 1 (CNN without bias, full MNIST, loss-based schedule):")
    rep.table(["snapshot", "epoch", "log10 train loss", "normalized margin", "train acc",
               "test acc"], PAPER_TABLE1)

    _kkt_section(rep, out, summary["kkt"])
    _robust_section(rep, summary.get("robustness", {}))
    rep.heading("Runs")
    for name in summary["runs"]:
        rep.raw(f'<p><a href="runs/{name}/report.html">{name}</a></p>',
                f"- [{name}](runs/{name}/report.md)\n")
    return rep.write(out)


def _kkt_section(rep: Report, out: Path, kkt: dict) -> None:
    rep.heading("KKT residual along the loss-based runs (Theorem 4.4)")
    trend = kkt["trend"]
    rows = [[name, r.get("n"), r.get("first_epoch"), r.get("first"), r.get("last_epoch"),
             r.get("last"), r.get("slope_per_decade"), r.get("slope_se")]
            for name, r in trend["per_run"].items()]
    rep.table(["run", "separated checkpoints", "first epoch", "ε/‖θ‖ first", "last epoch",
               "ε/‖θ‖ last", "slope per decade of epochs", "se of slope"], rows)
    rep.paragraph(
        f"(ε, δ)-KKT residual of problem (P) (marginlab.analysis.kkt_residual, near-active "
        f"τ = {kkt['tau']:g}, {kkt['n']} training points) at the trajectory checkpoints. Across "
        f"{trend['runs']} runs: fall first → last {_g(trend['mean_fall'])} ± "
        f"{_g(trend['mean_fall_se'], '.2g')}; slope {_g(trend['mean_slope_per_decade'])} ± "
        f"{_g(trend['mean_slope_se'], '.2g')} per decade of epochs (mean ± se over runs). The "
        "theorem's gradient-descent version assumes a C² model; these are ReLU networks "
        "trained by SGD, where autograd's gradient is one element of the Clarke "
        "subdifferential, so ε is an upper bound.")
    png = _kkt_plot(out, kkt["series"], kkt["tau"])
    if png:
        rep.image(f"plots/{png}", png)


def _robust_section(rep: Report, robust: dict) -> None:
    per = robust.get("per_snapshot", {})
    if not per:
        return
    rep.heading("L2 robustness of the snapshots (Figure 8)")
    rep.paragraph("R(z) is bracketed by a certified lower bound and a verified attack's "
                  "distance (upper bound). 'all points' counts a misclassified point as R = 0; "
                  "'correct only' averages over the points that snapshot classifies correctly. "
                  "Means ± se over points.")
    rows = []
    for name, splits in per.items():
        for split, snaps in splits.items():
            for snap, sm in snaps.items():
                a, c = sm["all"], sm["correct"]
                rows.append([name, split, snap, sm["accuracy"],
                             f"{_g(a['mean_upper'])} ± {_g(a['se_upper'], '.2g')}",
                             a["median_upper"], a["mean_lower"],
                             f"{_g(c['mean_upper'])} ± {_g(c['se_upper'], '.2g')}",
                             c["median_upper"], c["n"], a["attack_failures"]])
    rep.table(["run", "split", "snapshot", "accuracy", "mean attack distance, all points",
               "median, all points", "mean certified, all points",
               "mean attack distance, correct only", "median, correct only",
               "correct points", "attack failures"], rows)
    rows = [[p["split"], p["runs"], p["n_all"], p["mean_all"], p["se_all"], p["n_correct"],
             p["mean_correct"], p["se_correct"], p["excluded"]]
            for p in robust.get("paired", {}).values()]
    rep.heading("Paired test: model-5 vs model-1 on the same points")
    rep.table(["split", "runs averaged", "points (all)", "mean R5 − R1 (all)", "se",
               "points (correct by both)", "mean R5 − R1 (correct)", "se",
               "left out (attack failed)"], rows)
