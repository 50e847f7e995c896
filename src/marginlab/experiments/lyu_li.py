"""Lyu & Li, Figure 1, Table 1 and Figure 8: margins of networks trained with constant vs
loss-based rates, and the robustness of their snapshots.

``lyu-li-mnist`` trains schedule {constant, loss-based, loss-based + momentum} × bias {first,
none} × seeds for a fixed number of epochs (never a wall-clock budget, so a seed gives the same
numbers on any machine), compares the schedules at equal epochs (and, second, at equal wall
time), follows the KKT residual along the loss-based runs, attacks the snapshots model-1 …
model-5, and writes ``claims.json`` with computed verdicts (:mod:`.lyu_li_claims`).
``lyu-li-cifar`` is the same procedure for VGG-16 on CIFAR-10 (Figures 5 and 6).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

from marginlab import claims as claims_mod
from marginlab import data
from marginlab import run_report as report
from marginlab.analysis import audit_monotonicity
from marginlab.analysis.run import balanced_subset
from marginlab.device import configure
from marginlab.errors import MarginlabError
from marginlab.experiments import Experiment, RunRequest, register
from marginlab.experiments import lyu_li_measure as measure
from marginlab.experiments.datacheck import check_data, not_paper_data
from marginlab.experiments.lyu_li_claims import claims_from_summary
from marginlab.experiments.lyu_li_measure import value_at_time
from marginlab.experiments.lyu_li_report import write_report
from marginlab.experiments.runs import prepare_output
from marginlab.io.storage import write_json
from marginlab.sweep import Trial, TrialRecord, run_trials, trial_id
from marginlab.sweep.spec import bind_run_dir, train_trial
from marginlab.train.rundir import RunDir

SCHEDULES = ("constant", "loss_based", "loss_based_momentum")
BACKENDS = ("local", "ray")
TRIALS = "trials.jsonl"  # OUT/trials.jsonl: the record of every training run and measurement

_COMMON = {"batch_size": 100, "alpha0": 0.1, "kkt_tau": 0.01, "allow_tf32": False,
           "schedules": list(SCHEDULES), "biases": ["first", "none"],
           # where runs and measurements run: "local" (``workers`` processes, one torch thread
           # each; 0: in this process) or "ray" (one-CPU tasks on the Ray cluster at RAY_ADDRESS
           # or the one running on this node, else on a new local instance; the output
           # directory must be on a file system every node shares)
           "backend": "local"}

MNIST_SCALES = {
    "cpu": {
        # A bias-free 3-layer MLP (homogeneous of order 3) on 200 images of the bundled MNIST
        # subset: the paper's procedure (SGD, batch 100, both schedules) at CPU cost.
        **_COMMON, "model": "mlp", "widths": [64, 64], "width": 1.0, "data": "mnist5k",
        "n_train": 200, "n_test": 1000, "lr": 0.01, "epochs": 2000, "seeds": 3, "workers": 2,
        "kkt_checkpoints": 8, "kkt_n": None, "robust_n": 200,
        "robust_splits": ["train", "test"], "certificates": ["global", "row"],
    },
    "paper": {
        **_COMMON, "model": "mnist_cnn", "widths": [], "width": 1.0, "data": "mnist",
        "n_train": None, "n_test": None, "lr": 0.01, "epochs": 10000, "seeds": 3, "workers": 1,
        "kkt_checkpoints": 20, "kkt_n": 2000, "robust_n": 1000,
        "robust_splits": ["train", "test"], "certificates": ["global", "row", "local"],
    },
}

CIFAR_SCALES = {
    "cpu": {
        **_COMMON, "model": "vgg16", "widths": [], "width": 0.125, "data": "cifar10",
        "n_train": 500, "n_test": 500, "lr": 0.1, "epochs": 100, "seeds": 2, "workers": 2,
        "kkt_checkpoints": 5, "kkt_n": 200, "robust_n": 0, "robust_splits": ["test"],
        "certificates": ["global", "row"],
    },
    "paper": {
        **_COMMON, "model": "vgg16", "widths": [], "width": 1.0, "data": "cifar10",
        "n_train": None, "n_test": None, "lr": 0.1, "epochs": 10000, "seeds": 3, "workers": 1,
        "kkt_checkpoints": 20, "kkt_n": 1000, "robust_n": 0, "robust_splits": ["test"],
        "certificates": ["global", "row", "local"],
    },
}


def run_name(schedule: str, bias: str, seed: int) -> str:
    return f"{schedule}-bias-{bias}-seed{seed}"


def _schedule(name: str, s: dict) -> dict:
    if name == "constant":
        return {"name": "constant", "lr": s["lr"]}
    if name == "loss_based":
        return {"name": "loss_based", "alpha0": s["alpha0"]}
    return {"name": name}


def seeds(request: RunRequest) -> list[int]:
    return [request.seed + i for i in range(int(request.settings["seeds"]))]


def specs(request: RunRequest) -> dict[str, dict]:
    """name -> TrainSpec dict of every run: schedules × biases × seeds, all for the same epochs."""
    s = request.settings
    every = max(1, int(s["epochs"]) // max(1, int(s["kkt_checkpoints"])))
    out = {}
    for seed in seeds(request):
        for bias in s["biases"]:
            for sched in s["schedules"]:
                out[run_name(sched, bias, seed)] = {
                    "model": s["model"], "bias": bias, "widths": list(s["widths"]),
                    "width": s["width"], "data": s["data"],
                    "root": None if request.root is None else str(request.root),
                    "n_train": s["n_train"], "n_test": s["n_test"],
                    "schedule": _schedule(sched, s), "epochs": s["epochs"],
                    "batch_size": s["batch_size"], "seed": seed, "device": request.device,
                    "max_time": None, "margin_convention": "homogeneous",
                    "trajectory_every": every, "allow_tf32": bool(s["allow_tf32"]),
                }
    return out


def _run_entry(name: str, spec: dict, records: list[dict], run_dir: Path) -> dict:
    snaps = {row[0]: {"epoch": row[1], "log10_loss_mean": row[2],
                      "normalized_margin_multi": row[3], "normalized_margin": row[4],
                      "smoothed_margin_multi": _at_epoch(records, row[1], "smoothed_margin_multi"),
                      "train_acc": row[5], "test_acc": row[6]}
             for row in report.snapshot_rows(run_dir)}
    audits = [a.as_dict() for a in audit_monotonicity(records, "cross_entropy")]
    for a in audits:
        a.pop("decrease_epochs", None)
    return {"schedule": spec["schedule"]["name"], "bias": spec["bias"], "seed": spec["seed"],
            "final": records[-1] if records else {}, "snapshots": snaps, "monotonicity": audits,
            "retries": sum(r.get("retries", 0) for r in records),
            "wall_time": records[-1]["wall_time"] if records else math.nan}


def _at_epoch(records: list[dict], epoch, key: str) -> float:
    return measure.value_at_epoch(records, key, int(epoch)) if epoch is not None else math.nan


KEYS = ("log10_loss_mean", "normalized_margin_multi", "smoothed_margin_multi")


def _pairs(request: RunRequest, runs: dict[str, list[dict]]) -> list[dict]:
    """Loss-based vs constant at equal epochs (primary) and at equal wall time (second view)."""
    s, e = request.settings, int(request.settings["epochs"])
    pairs = []
    for seed in seeds(request):
        for bias in s["biases"]:
            lb, c = runs.get(run_name("loss_based", bias, seed)), runs.get(
                run_name("constant", bias, seed))
            if not lb or not c or lb[-1]["epoch"] < e or c[-1]["epoch"] < e:
                continue
            t = min(lb[-1]["wall_time"], c[-1]["wall_time"])
            # The constant rate's last normalized margin (its γ̃ may still be negative: L ≥ ℓ(0)).
            level = c[-1]["normalized_margin_multi"]
            pairs.append({
                "seed": seed, "bias": bias, "epoch": e,
                "loss_based": {k: measure.value_at_epoch(lb, k, e) for k in KEYS},
                "constant": {k: measure.value_at_epoch(c, k, e) for k in KEYS},
                "wall_time": t,
                "loss_based_at_time": {k: value_at_time(lb, k, t) for k in KEYS},
                "constant_at_time": {k: value_at_time(c, k, t) for k in KEYS},
                "constant_final_margin": level,
                "loss_based_epochs_to_constant_final":
                    measure.epochs_to_reach(lb, "normalized_margin_multi", level),
            })
    return pairs


def _engine(request: RunRequest) -> dict:
    """How :func:`~marginlab.sweep.run_trials` runs this experiment's trials."""
    s = request.settings
    if s["backend"] not in BACKENDS:
        raise MarginlabError(f"setting 'backend' takes {' or '.join(BACKENDS)}, "
                             f"got {s['backend']!r}")
    if s["backend"] == "ray":
        return {"backend": "ray", "workers": None}
    return {"backend": "local", "workers": int(s["workers"])}


def _raise_failures(records: list[TrialRecord], what: str, out: Path) -> None:
    """Raise MarginlabError naming the first failed trial, once every trial was recorded."""
    failed = [r for r in records if not r.ok]
    if failed:
        first = failed[0]
        label = " of ".join(str(first.params[k]) for k in ("measure", "run") if k in first.params)
        raise MarginlabError(f"{len(failed)} of {len(records)} {what} failed (first: {label}: "
                             f"{first.error}); tracebacks in {out / TRIALS}; --resume runs "
                             "them again")


def _progress(run_root: Path, names: dict[str, str], running: list[Trial]) -> dict[str, str]:
    """run name -> ``epoch E log10 L V`` of every run in flight that finished an epoch."""
    status = {}
    for trial in running:
        name = names[trial.id]
        last = RunDir(run_root / name).last_metrics()
        if last is not None:
            loss = last.get("log10_loss_mean")
            loss = f"{loss:.4g}" if isinstance(loss, float) else loss
            status[name] = f"epoch {last.get('epoch')} log10 L {loss}"
    return status


def train_runs(request: RunRequest, out: Path, all_specs: dict[str, dict]
               ) -> dict[str, list[dict]]:
    """Train every run (name -> TrainSpec dict) into ``out/runs/<name>`` on the sweep engine
    and return name -> its metrics records.

    A run whose directory holds a checkpoint (an interrupted experiment, continued with
    ``--resume``) continues from it; a run recorded as finished in ``out/trials.jsonl`` is not
    run again. The progress line shows each running run's epoch and log10 L.

    Raises:
        MarginlabError: a run failed (after every other run finished and was recorded).
    """
    run_root = out / "runs"
    names = {trial_id({"train": spec}): name for name, spec in all_specs.items()}
    trials = [Trial(tid, {"run": name}, all_specs[name]) for tid, name in names.items()]
    done = run_trials(out / TRIALS, trials,
                      lambda t: bind_run_dir(train_trial, run_root / names[t.id]),
                      desc=f"runs of {out.name}", unit="run",
                      status=functools.partial(_progress, run_root, names), **_engine(request))
    _raise_failures(done.records, "runs", out)
    return {name: RunDir(run_root / name).metrics() for name in all_specs}


def measure_trial(settings: dict, run_dir: str) -> dict:
    """One measurement of the finished run in ``run_dir``: the KKT residuals along it
    (``{"kkt": [...]}``) or the robustness of its snapshots (``{"robustness": {...}}``).

    ``settings``: ``measure`` (``kkt`` or ``robustness``), ``train`` (the run's TrainSpec
    dict: data, device, TF32), the measurement settings of the experiment and ``seed``.
    """
    spec = settings["train"]
    configure(spec["device"], allow_tf32=bool(spec["allow_tf32"]))
    split = data.load(spec["data"], spec["root"], n_train=spec["n_train"],
                      n_test=spec["n_test"])
    if settings["measure"] == "kkt":
        X, y = split.train
        keep = balanced_subset(y, settings["kkt_n"])
        return {"kkt": measure.kkt_along_run(Path(run_dir), X[keep], y[keep],
                                             settings["kkt_tau"])}
    return {"robustness": measure.robustness_of_snapshots(
        Path(run_dir), split, splits=settings["robust_splits"], n=settings["robust_n"],
        certificates=settings["certificates"], device=spec["device"], seed=settings["seed"])}


MEASURE_KEYS = ("kkt_tau", "kkt_n", "robust_n", "robust_splits", "certificates")


def _measure(request: RunRequest, out: Path, all_specs: dict[str, dict]) -> tuple[dict, dict]:
    """KKT residuals along the loss-based runs and robustness of their snapshots, measured on
    the sweep engine; each result is recorded in ``out/trials.jsonl`` (a resumed experiment
    does not measure a run twice) and written to ``out/measure/<kind>-<run>.json``."""
    s = dict(request.settings)
    jobs = []
    for name, spec in all_specs.items():
        if not name.startswith("loss_based-"):
            continue
        kinds = ["kkt"] + (["robustness"] if s["robust_n"] > 0 and "-bias-none-" in name
                           else [])
        jobs += [(kind, name, spec) for kind in kinds]
    trials, where = [], {}
    for kind, name, spec in jobs:
        settings = {"measure": kind, "train": spec, **{k: s[k] for k in MEASURE_KEYS},
                    "seed": request.seed}
        tid = trial_id(settings)
        trials.append(Trial(tid, {"measure": kind, "run": name}, settings))
        where[tid] = name
    done = run_trials(out / TRIALS, trials,
                      lambda t: bind_run_dir(measure_trial, out / "runs" / where[t.id]),
                      desc=f"measurements of {out.name}", unit="measurement",
                      **_engine(request))
    _raise_failures(done.records, "measurements", out)
    kkt_series, robust = {}, {}
    for rec in done.records:
        kind, name = rec.params["measure"], rec.params["run"]
        write_json(out / "measure" / f"{kind}-{name}.json", rec.result[kind])
        (kkt_series if kind == "kkt" else robust)[name] = rec.result[kind]
    paired = {sp: measure.paired_robustness(robust, sp) for sp in s["robust_splits"]} \
        if robust else {}
    per_snapshot = {name: {sp: {k: v["summary"] for k, v in entry["snapshots"].items()}
                           for sp, entry in res.items()} for name, res in robust.items()}
    n_kkt = s["n_train"] if s["kkt_n"] is None else min(s["kkt_n"], s["n_train"] or s["kkt_n"])
    kkt = {"tau": s["kkt_tau"], "n": n_kkt, "series": kkt_series,
           "trend": measure.kkt_trend(kkt_series)}
    return kkt, {"per_snapshot": per_snapshot, "paired": paired}


def _run(request: RunRequest, experiment_id: str, title: str, variant: str) -> Path:
    s = dict(request.settings)
    check_data(experiment_id, request.scale, s, request.root)
    _engine(request)  # a bad backend is an error before anything is written
    out = prepare_output(request, experiment_id)
    not_evidence = not_paper_data(s, request.root)
    all_specs = specs(request)
    runs = train_runs(request, out, all_specs)
    for name in all_specs:
        report.write_run_report(out / "runs" / name)
    kkt, robust = _measure(request, out, all_specs)
    summary = {
        "experiment": experiment_id, "scale": request.scale, "settings": s,
        "epochs": int(s["epochs"]), "seeds": seeds(request), "not_evidence": not_evidence,
        "runs": {n: _run_entry(n, all_specs[n], runs[n], out / "runs" / n) for n in all_specs},
        "pairs": _pairs(request, runs), "kkt": kkt, "robustness": robust,
    }
    claims = [dataclasses.replace(c, experiment=experiment_id)
              for c in claims_from_summary(summary, variant=variant)]
    write_json(out / "summary.json", summary)
    page = write_report(out, title, request, summary, runs, claims)
    claims_mod.write_claims(out, experiment_id, claims)
    return page


def run_mnist(request: RunRequest) -> Path:
    return _run(request, "lyu-li-mnist",
                "Lyu & Li, Figure 1 / Table 1 / Figure 8: normalized margin under constant vs "
                "loss-based learning rates, and robustness of the snapshots (MNIST)", "mnist")


def run_cifar(request: RunRequest) -> Path:
    return _run(request, "lyu-li-cifar",
                "Lyu & Li, Figures 5–6: VGG-16 under constant vs loss-based learning rates "
                "(CIFAR-10)", "cifar")


register(Experiment(id="lyu-li-mnist", title="MNIST, constant vs loss-based lr, robustness",
                    reference="Lyu & Li, Figure 1, Table 1, Figure 8, Appendix K",
                    scales=MNIST_SCALES, run=run_mnist))
register(Experiment(id="lyu-li-cifar", title="VGG-16 on CIFAR-10, constant vs loss-based lr",
                    reference="Lyu & Li, Figures 5-6, Appendix K.1", scales=CIFAR_SCALES,
                    run=run_cifar))
