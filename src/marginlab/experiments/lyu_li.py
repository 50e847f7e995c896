"""Lyu & Li, Figure 1 and Table 1: margins of CNNs trained with constant vs loss-based rates.

``lyu-li-mnist`` trains bias {first, none} × schedule {constant, loss-based} and reports the loss,
the normalized margins and the loss-threshold snapshots next to the paper's Table 1.
``lyu-li-cifar`` is the same procedure for VGG-16 on CIFAR-10 (Figures 5 and 6).
"""

from __future__ import annotations

import math
from pathlib import Path

from marginlab import run_report as report
from marginlab.experiments import Experiment, RunRequest, register
from marginlab.experiments.runs import prepare_output, run_specs, value_at_time
from marginlab.io import plots
from marginlab.io.report import Report
from marginlab.io.storage import read_jsonl, write_json

PAPER_TABLE1 = [  # Lyu & Li, Table 1: CNN without bias, full MNIST, loss-based schedule
    ["model-1", 38, -10.04, 5.65e-5, 1.0, 0.993],
    ["model-2", 75, -15.12, 9.50e-5, 1.0, 0.993],
    ["model-3", 107, -20.07, 1.30e-4, 1.0, 0.993],
    ["model-4", 935, -120.01, 4.61e-4, 1.0, 0.992],
    ["model-5", 10000, -881.51, 1.18e-3, 1.0, 0.991],
]

MNIST_SCALES = {
    "cpu": {
        # A bias-free 3-layer MLP (homogeneous of order 3) on 200 images of the bundled MNIST
        # subset: the paper's procedure (SGD, batch 100, both schedules) at CPU cost.
        "model": "mlp", "widths": [64, 64], "width": 1.0, "data": "mnist5k", "n_train": 200,
        "n_test": 1000, "batch_size": 100, "lr": 0.01, "alpha0": 0.1, "epochs": 1000000,
        "seconds_per_run": 120.0, "workers": 2, "biases": ["first", "none"],
        "trajectory_every": 100, "extra_schedules": [],
    },
    "paper": {
        "model": "mnist_cnn", "widths": [], "width": 1.0, "data": "mnist", "n_train": None,
        "n_test": None, "batch_size": 100, "lr": 0.01, "alpha0": 0.1, "epochs": 10000,
        "seconds_per_run": None, "workers": 1, "biases": ["first", "none"],
        "trajectory_every": 500, "extra_schedules": [],
    },
}

CIFAR_SCALES = {
    "cpu": {
        "model": "vgg16", "widths": [], "width": 0.125, "data": "cifar10", "n_train": 500,
        "n_test": 500, "batch_size": 100, "lr": 0.1, "alpha0": 0.1, "epochs": 1000000,
        "seconds_per_run": 120.0, "workers": 2, "biases": ["first", "none"],
        "trajectory_every": 100, "extra_schedules": [],
    },
    "paper": {
        "model": "vgg16", "widths": [], "width": 1.0, "data": "cifar10", "n_train": None,
        "n_test": None, "batch_size": 100, "lr": 0.1, "alpha0": 0.1, "epochs": 10000,
        "seconds_per_run": None, "workers": 1, "biases": ["first", "none"],
        "trajectory_every": 500, "extra_schedules": [],
    },
}


def _specs(request: RunRequest) -> dict[str, dict]:
    s = request.settings
    specs = {}
    for bias in s["biases"]:
        # Any registered schedule can join the comparison: --set extra_schedules='["NAME"]'.
        for sched in ("constant", "loss_based", *s.get("extra_schedules", [])):
            if sched == "constant":
                schedule = {"name": "constant", "lr": s["lr"]}
            elif sched == "loss_based":
                schedule = {"name": "loss_based", "alpha0": s["alpha0"]}
            else:
                schedule = {"name": sched}
            specs[f"{sched}-bias-{bias}"] = {
                "model": s["model"], "bias": bias, "widths": list(s["widths"]),
                "width": s["width"], "data": s["data"],
                "root": None if request.root is None else str(request.root),
                "n_train": s["n_train"], "n_test": s["n_test"], "schedule": schedule,
                "epochs": s["epochs"], "batch_size": s["batch_size"], "seed": request.seed,
                "device": request.device, "max_time": s["seconds_per_run"],
                "margin_convention": "homogeneous",
                "trajectory_every": s.get("trajectory_every"),
            }
    return specs


def _describe(s: dict) -> str:
    if s["model"] == "mlp":
        net = f"a bias-free MLP 784-{'-'.join(map(str, s['widths']))}-10 (ReLU, order " \
              f"{len(s['widths']) + 1})"
    else:
        net = f"{s['model']} (width ×{s['width']})"
    n = "all" if s["n_train"] is None else s["n_train"]
    budget = ("until the epoch budget" if s["seconds_per_run"] is None
              else f"for {s['seconds_per_run']:g} s of wall-clock time each")
    return (f"Trained {net} on {n} training images of {s['data']} (test: "
            f"{'all' if s['n_test'] is None else s['n_test']} images), SGD with batch size "
            f"{s['batch_size']}, no momentum, He-normal init; constant lr {s['lr']:g} vs the "
            f"loss-based schedule (α0 = {s['alpha0']:g}, up 2^(1/5), down 2^(1/10)); bias modes "
            f"{', '.join(s['biases'])}; {budget}, {s['workers']} runs at a time, one thread each.")


def _run(request: RunRequest, experiment_id: str, title: str) -> Path:
    out = prepare_output(request, experiment_id)
    s = dict(request.settings)
    specs = _specs(request)
    per_run = s["seconds_per_run"]
    waves = math.ceil(len(specs) / max(1, s["workers"]))
    run_specs(specs, out, workers=s["workers"], resume=request.resume,
              expected_seconds=None if per_run is None else per_run * waves)
    runs = {name: read_jsonl(out / "runs" / name / "metrics.jsonl") for name in specs}
    plot_dir = out / "plots"
    plots.plot_training(runs, plot_dir / "training.png", title=title)
    plots.plot_margin_vs_time(runs, plot_dir / "margin_vs_time.png", title=title)
    for name in specs:
        report.write_run_report(out / "runs" / name)

    rep = Report(title)
    if request.scale == "cpu":
        rep.paragraph("CPU scale: a smaller network and data set than the paper's, run on this "
                      "machine; compare the shape of the results, not the absolute numbers.",
                      note=True)
    rep.paragraph(_describe(s))
    rep.heading("Summary")
    rows = []
    for name, recs in runs.items():
        if recs:
            last = recs[-1]
            rows.append([name, last["epoch"], last["wall_time"], last["log10_loss_mean"],
                         last["normalized_margin_multi"], last["smoothed_margin_multi"],
                         last["train_acc"], last.get("test_acc"),
                         sum(r["retries"] for r in recs)])
    rep.table(["run", "epochs", "wall s", "log10 loss", "normalized margin (multi)",
               "smoothed margin (multi)",
               "train acc", "test acc", "rolled-back epochs"], rows)
    ratios = []
    for bias in s["biases"]:
        lb, const = runs.get(f"loss_based-bias-{bias}"), runs.get(f"constant-bias-{bias}")
        if lb and const:
            t = min(lb[-1]["wall_time"], const[-1]["wall_time"])
            m_lb = value_at_time(lb, "normalized_margin_multi", t)
            m_c = value_at_time(const, "normalized_margin_multi", t)
            ratio = m_lb / m_c if m_c > 0 else math.inf
            ratios.append({"bias": bias, "wall_time": t, "loss_based": m_lb, "constant": m_c,
                           "ratio": ratio, "loss_based_log10_loss":
                               value_at_time(lb, "log10_loss_mean", t)})
    if ratios:
        rep.heading("Loss-based vs constant learning rate at equal wall time")
        rep.table(["bias", "at wall s", "margin (multi), loss-based", "margin (multi), constant",
                   "ratio",
                   "log10 loss, loss-based"],
                  [[r["bias"], r["wall_time"], r["loss_based"], r["constant"], r["ratio"],
                    r["loss_based_log10_loss"]] for r in ratios])
        rep.paragraph("Paper (Figure 1, full MNIST, 10000 epochs): the loss-based schedule's "
                      "normalized margin is about 6.5x the constant rate's (1.18e-3 vs 1.8e-4).")
    rep.image("plots/training.png", "training curves")
    rep.image("plots/margin_vs_time.png", "margin vs wall time")
    lb_none = f"loss_based-bias-{s['biases'][-1]}"
    snaps = report.snapshot_rows(out / "runs" / lb_none)
    rep.heading(f"Snapshots of {lb_none} (Table 1 style)")
    if snaps:
        rep.table(report.SNAPSHOT_HEADERS, snaps)
    rep.paragraph("Paper, Table 1 (CNN without bias, full MNIST, loss-based schedule):")
    rep.table(["snapshot", "epoch", "log10 train loss", "normalized margin", "train acc",
               "test acc"], PAPER_TABLE1)
    rep.heading("Runs")
    for name in specs:
        rep.raw(f'<p><a href="runs/{name}/report.html">{name}</a></p>',
                f"- [{name}](runs/{name}/report.md)\n")
    write_json(out / "summary.json", {"experiment": experiment_id, "scale": request.scale,
                                      "settings": s, "ratios": ratios,
                                      "final": {k: (v[-1] if v else None)
                                                for k, v in runs.items()}})
    return rep.write(out)


def run_mnist(request: RunRequest) -> Path:
    return _run(request, "lyu-li-mnist",
                "Lyu & Li, Figure 1 / Table 1: normalized margin under constant vs loss-based "
                "learning rates (MNIST)")


def run_cifar(request: RunRequest) -> Path:
    return _run(request, "lyu-li-cifar",
                "Lyu & Li, Figures 5–6: VGG-16 under constant vs loss-based learning rates "
                "(CIFAR-10)")


register(Experiment(id="lyu-li-mnist", title="CNN on MNIST, constant vs loss-based lr",
                    reference="Lyu & Li, Figure 1, Table 1, Appendix K.1", scales=MNIST_SCALES,
                    run=run_mnist))
register(Experiment(id="lyu-li-cifar", title="VGG-16 on CIFAR-10, constant vs loss-based lr",
                    reference="Lyu & Li, Figures 5-6, Appendix K.1", scales=CIFAR_SCALES,
                    run=run_cifar))
