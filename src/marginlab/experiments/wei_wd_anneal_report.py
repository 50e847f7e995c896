"""The claim, figure and report page of ``wei-wd-anneal`` (Wei et al., Appendix F.4, Table 1).

The claim is Table 1's on each data set: annealing the weight decay lowers the test error, as the
paired difference fixed − annealed over seeds with its standard error. The figure shows the test
error per epoch and the recorded λ(t) and lr(t); the page sets this run's numbers next to Table 1
and checks every epoch's recorded schedule.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from marginlab.claims import (
    Claim,
    by_effect,
    paired_effect,
    read_claims,
    render_table_html,
    render_table_md,
)
from marginlab.experiments import RunRequest
from marginlab.experiments.wei_common import ms_text, numbers, settings_block
from marginlab.experiments.wei_wd_anneal_schedules import (
    ARMS,
    PAPER_WEIGHT_DECAY,
    paper_cumulative_decay,
    scale_milestones,
)
from marginlab.io.plots import pyplot, save_figure
from marginlab.io.report import Report, fmt
from marginlab.train.rundir import RunDir

__all__ = ["PAPER_NAMES", "PAPER_TABLE", "paired_differences", "plot_wd_anneal", "wd_claim",
           "write_report"]

# Wei et al., Table 1: test error (%) with initial weight decay as in Appendix F.4.
PAPER_TABLE = {"annealed": {"CIFAR-10": 5.86, "CIFAR-100": 26.22},
               "fixed": {"CIFAR-10": 6.01, "CIFAR-100": 27.00}}
PAPER_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def paired_differences(ok: Sequence, d: str) -> list[float]:
    """Fixed minus annealed test error (percentage points), paired by seed, on data set d."""
    diffs = []
    for seed in sorted({r.params["seed"] for r in ok if r.params["data"] == d}):
        by = {r.params["weight_decay_schedule"]: r.result for r in ok
              if r.params["seed"] == seed and r.params["data"] == d}
        if all(a in by for a in ARMS):
            diffs.append(100 * (by["fixed"]["test_error"] - by["annealed"]["test_error"]))
    return diffs


def wd_claim(scale: str, d: str, resolved: Mapping, diffs: Sequence[float]) -> Claim:
    """Table 1's claim on one data set: annealing lowers the test error, as the paired
    difference fixed − annealed (percentage points) with its standard error."""
    names = _paper_names(d)
    paper = "; ".join(f"{n}: fixed {PAPER_TABLE['fixed'][n]:.2f}% vs annealed "
                      f"{PAPER_TABLE['annealed'][n]:.2f}% "
                      f"({PAPER_TABLE['fixed'][n] - PAPER_TABLE['annealed'][n]:+.2f} pp)"
                      for n in names)
    mean, se = paired_effect(diffs)
    what = (f"{d} ({_model_text(resolved)}; a substitute for the paper's CIFAR WideResNet)"
            if d not in PAPER_NAMES else f"{PAPER_NAMES[d]}, {_model_text(resolved)}")
    measured = (f"{what}, initial λ = {resolved['weight_decay']:g}: fixed − annealed test error "
                f"{mean:+.3f} ± {se:.3f} pp (mean ± se over {len(diffs)} paired seeds)")
    return by_effect("Annealing the weight decay lowers the test error compared with keeping "
                     "the initial weight decay (tuned for the fixed arm) fixed",
                     f"Wei et al., Table 1 / Appendix F.4 ({scale} scale)", paper, measured,
                     mean, se)


def _milestones(s: Mapping) -> tuple[dict[int, float], dict[int, float]]:
    """The lr and (annealed arm's) λ milestones of one data set's resolved settings."""
    return (scale_milestones(s["lr_milestones"], s["epochs"], s["milestone_epochs"]),
            scale_milestones(s["wd_milestones"], s["epochs"], s["milestone_epochs"]))


def plot_wd_anneal(curves: Mapping[str, Mapping[str, list[list[dict]]]],
                   per_data: Mapping[str, Mapping], plots: Path) -> None:
    """One row per data set: test error per epoch, and the recorded λ(t) and lr(t)."""
    plt = pyplot()
    plots.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(len(curves), 2, figsize=(13, 4.6 * len(curves)), squeeze=False)
    for (d, by_arm), (ax, bx) in zip(curves.items(), axes):
        for arm, color in zip(ARMS, ("C0", "C3")):
            runs = [r for r in by_arm[arm] if r]
            if not runs:
                continue
            epochs = min(len(r) for r in runs)
            marker = {"marker": "o", "ms": 3} if epochs <= 30 else {}  # short runs: show points
            err = np.array([[1 - h["test_acc"] for h in r[:epochs]] for r in runs]) * 100
            x = np.arange(1, epochs + 1)
            mean = err.mean(0)
            ax.plot(x, mean, color=color, label=f"{arm} weight decay ({len(runs)} seeds)",
                    **marker)
            if len(runs) > 1:
                sd = err.std(0, ddof=1)
                ax.fill_between(x, mean - sd, mean + sd, color=color, alpha=0.15)
            first = runs[0][:epochs]
            bx.step(x, [h["weight_decay"] for h in first], where="post", color=color,
                    label=f"λ(t), {arm}", **marker)
            if arm == "annealed":
                bx.step(x, [h["lr"] for h in first], where="post", color="k", ls="--",
                        label="learning rate (both arms)", **marker)
        lr_ms, wd_ms = _milestones(per_data[d])
        for e in sorted(set(lr_ms) | set(wd_ms)):
            ax.axvline(e, color="gray", lw=0.6, ls=":")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test error (%)")
        ax.set_title(f"{d}: test error per epoch (mean ± std over seeds); dotted: milestones")
        ax.legend(fontsize=8)
        bx.set_yscale("log")
        bx.set_xlabel("epoch")
        bx.set_title(f"{d}: recorded weight decay λ(t) and learning rate (first seed)")
        bx.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, plots / "wd_anneal.png", dpi=120, layout=False)


def _model_text(s: Mapping) -> str:
    if s["model"] == "mlp":
        return f"a bias-free MLP with hidden widths {list(s['widths'])} (ReLU, homogeneous)"
    if s["model"] == "wrn16":
        return ("WideResNet-16-4 without batch-norm and without biases (marginlab.models.wrn16; "
                "residual connections make it non-homogeneous)")
    return f"{s['model']} (bias {s['bias']}, width ×{s['width']})"


def _paper_names(d: str) -> list[str]:
    """Table 1 columns to print next to a data set's results: its own, or both for a data set
    the paper did not use."""
    return [PAPER_NAMES[d]] if d in PAPER_NAMES else list(PAPER_NAMES.values())


def write_report(request: RunRequest, out: Path, per_data: Mapping[str, Mapping], records,
                 selection: Mapping[str, list], wall: float) -> Path:
    """Write the run's report page into ``out`` (claims read from ``out``); returns its path."""
    s = request.settings
    ok = [r for r in records if r.ok]
    rep = Report("wei-wd-anneal: weight-decay annealing vs fixed weight decay (Wei et al., "
                 "Appendix F.4, Table 1)")
    rep.paragraph(
        "Paper: a WideResNet-16 without batch-norm on CIFAR-10 and CIFAR-100, 200 epochs, lr "
        "0.1 ×0.2 at epochs 60, 120, 160; CIFAR-10 weight decay 2e-4, ×0.2 at 60 and ×0.5 at "
        "90, 120, 140, 160; CIFAR-100 weight decay 5e-4, ×0.2 at 60, 120, 160; the initial "
        "weight decay was the one that worked best for the model without annealing. 'We see "
        "that the simple change of annealing weight decay can decrease the test error for this "
        "architecture.'")
    if request.scale == "cpu":
        rep.paragraph(
            f"CPU scale — a substitute, not the paper's experiment: {_model_text(s)} on "
            f"{s['n_train']} training images of {s['data']} (the bundled 5000-image MNIST "
            f"subset; test: {s['n_test']} images) for {s['epochs']} epochs instead of a "
            f"WideResNet on CIFAR for 200; the milestones are moved to the same fractions of "
            f"the run. {s['trials']} paired seeds per arm. Its numbers are not comparable with "
            "the paper's CIFAR errors, which are listed in their own table.", note=True)
    claims = read_claims(out)
    rep.heading("Claim")
    rep.raw(render_table_html(claims), render_table_md(claims))
    for d, rows in selection.items():
        best = per_data[d]["weight_decay"]
        rep.heading(f"{d}: initial λ chosen on held-out data (fixed arm)")
        rep.table(["λ", "validation error (%)", "train error (%)", "seeds", "chosen"],
                  [[f"{lam:g}", 100 * v, 100 * t, k, "yes" if lam == best else ""]
                   for lam, v, t, k in rows])
        rep.paragraph(
            f"The fixed arm trained on {s['n_train'] - s['validation']} of the training images "
            f"at each λ, its error measured on the other {s['validation']} (a fixed held-out "
            f"set; the test set is not used). The λ with the lowest mean validation error is "
            f"the initial λ of both arms below, trained on all {s['n_train']} images.")
    schedules = []
    for d, sd in per_data.items():
        lr_ms, wd_ms = _milestones(sd)
        schedules.append(f"{d}: lr {sd['lr']:g} with milestones {_ms_text(lr_ms)}; annealed "
                         f"arm λ = {sd['weight_decay']:g} with milestones {_ms_text(wd_ms)}; "
                         f"fixed arm λ = {sd['weight_decay']:g} throughout")
    rep.paragraph(
        f"Both arms: {_model_text(s)}, SGD without momentum (marginlab.train.fit), batch "
        f"{s['batch_size']}, {s['epochs']} epoch(s), mean cross-entropy + λ(t)‖θ‖². "
        f"{'. '.join(schedules)}. Epoch milestones: factors apply from that epoch on. The "
        f"recorded training loss (log10_loss_mean) is the data loss without the penalty. Seeds "
        f"{request.seed}…{request.seed + s['trials'] - 1} (initialization and shuffling). Wall "
        f"time {wall:.0f} s on {platform.machine()} CPU, {s['workers']} worker process(es).")
    if request.scale == "paper":
        rep.paragraph(
            "Differences from the paper's setup that remain at paper scale: no momentum and no "
            "data augmentation (the trainer has neither; the paper does not state its own), "
            "batch size 128 and widen factor 4 assumed (not stated). Table 1's caption gives an "
            "initial λ of 0.0005 for both data sets, while the text of Appendix F.4 gives "
            "0.0002 for CIFAR-10; this run follows the text. Expect higher errors than the "
            "paper's; compare the two arms with each other.", note=True)
    for d in per_data:
        _data_tables(rep, d, [r for r in ok if r.params["data"] == d])
    rep.heading("Paper (Table 1: WideResNet-16 on CIFAR, test error %)")
    rep.table(["weight decay", *PAPER_TABLE["annealed"]],
              [[arm, *PAPER_TABLE[arm].values()] for arm in ARMS])
    rep.image("plots/wd_anneal.png", "test error, weight decay and learning rate per epoch")
    rows = []
    for r in ok:
        rows.append([r.params["data"], r.params["weight_decay_schedule"], r.params["seed"],
                     _changes_text(r.result["wd_changes"]),
                     _changes_text(r.result["lr_changes"]), r.result["schedule_ok"]])
    rep.heading("Schedule check: recorded weight decay and learning rate")
    rep.table(["data", "arm", "seed", "λ recorded (epoch: value)", "lr recorded (epoch: value)",
               "every epoch matches the schedule"], rows)
    for d, sd in per_data.items():
        lr_ms, wd_ms = _milestones(sd)
        rep.paragraph(f"Expected changes on {d}: lr at {_ms_text(lr_ms)}; annealed λ at "
                      f"{_ms_text(wd_ms)}.")
    rep.heading("Runs")
    for d in per_data:
        for arm in ARMS:
            for k in range(s["trials"]):
                name = f"{d}-{arm}-seed{request.seed + k}"
                link = f"runs/{name}/{RunDir(name).metrics_path.name}"
                rep.raw(f'<p><a href="{link}">{name}</a></p>', f"- [{name}]({link})\n")
    resolved = {f"{key} ({d})": sd[key] for d, sd in per_data.items()
                for key in ("weight_decay", "wd_milestones")}
    settings_block(rep, s, resolved)
    return rep.write(out)


def _data_tables(rep: Report, d: str, ok: Sequence) -> None:
    """One data set's results: test error per arm next to Table 1, and the paired difference."""
    # the cpu scale's λ was matched to the paper's CIFAR-10 Σ 2ηλ
    paper_sigma = d if d in PAPER_WEIGHT_DECAY else "cifar10"
    rows = []
    for arm in ARMS:
        g = lambda k, arm=arm: numbers(  # noqa: E731
            [r.result.get(k) for r in ok if r.params["weight_decay_schedule"] == arm])
        rows.append([arm, len(g("test_error")), ms_text([100 * v for v in g("test_error")]),
                     ms_text([100 * v for v in g("min_test_error")]),
                     ms_text([100 * v for v in g("train_error")]), ms_text(g("log10_loss_mean")),
                     ms_text(g("cumulative_decay")),
                     round(paper_cumulative_decay(arm, data=paper_sigma), 3)])
    rep.heading(f"{d}: this run's test error (%), final epoch (mean ± std over seeds)")
    rep.table(["weight decay", "seeds", "test error (%)", "best epoch's test error (%)",
               "train error (%)", "log10 train loss", "Σ 2ηλ",
               f"paper Σ 2ηλ ({PAPER_NAMES[paper_sigma]})"], rows)
    rep.paragraph("Σ 2ηλ: the weight-decay shrinkage over the whole run, summed over SGD steps "
                  "(the weights shrink by the factor e^{−Σ2ηλ} from the penalty alone); the "
                  "paper's value assumes batch 128 (391 steps per epoch).")
    m, se = paired_effect(paired_differences(ok, d))
    rep.paragraph(f"{d}: fixed minus annealed test error, paired by seed: {fmt(m, 3)} ± "
                  f"{fmt(se, 2)} percentage points (mean ± standard error).", note=True)


def _ms_text(milestones: Mapping[int, float]) -> str:
    return ", ".join(f"×{f:g} at {e}" for e, f in milestones.items()) or "none"


def _changes_text(changes) -> str:
    return ", ".join(f"{int(e)}: {float(v):.3g}" for e, v in changes)
