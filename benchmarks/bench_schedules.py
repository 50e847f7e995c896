"""Margin and loss against CPU seconds: the paper's loss-based schedule, a constant rate and the
loss-based momentum schedule (marginlab.train.schedules), on the same model, data and seeds.

    .venv/bin/python benchmarks/bench_schedules.py --workload B --seeds 0 1 2 --budget 60
    nice .venv/bin/python benchmarks/bench_schedules.py --workload A --budget 400 --jobs 2
    .venv/bin/python benchmarks/bench_schedules.py --workload B --jobs 2 --rev d2dc445

With ``--rev REV`` every (schedule, seed) also runs on the code of git revision REV (its own
``src/`` and its own ``run_one``), in the same process pool, interleaved with this code's runs,
so that one run compares two versions under the same load.

Each (schedule, seed) run is a fresh process with one torch thread; it stops once that process
has used ``--budget`` CPU seconds (``time.process_time``, so other load on the machine does not
count). Training logs no test metrics (they would cost the same for every schedule); the test
accuracy is measured once, on the final model. Writes ``benchmarks/out/schedules_<workload>.png``,
``.md`` and ``.json`` (every record of every run) and prints the markdown.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from itertools import pairwise
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"

WORKLOADS = {
    "A": {"title": "paper CNN (bias-free, Lyu & Li App. K) on 1000 MNIST-subset images",
          "data": {"name": "mnist5k", "n_train": 1000, "n_test": None}, "batch_size": 100,
          "budget": 400.0},
    "B": {"title": "MLP 784-64-64-10 (bias-free) on 200 MNIST-subset images",
          "data": {"name": "mnist5k", "n_train": 200, "n_test": 1000}, "batch_size": 100,
          "budget": 60.0},
}

SCHEDULES = {  # name -> (label, schedule config)
    "loss_based": ("loss-based (paper)", {"name": "loss_based"}),
    "constant": ("constant lr 0.01", {"name": "constant", "lr": 0.01}),
    "loss_based_momentum": ("loss-based + momentum", {"name": "loss_based_momentum"}),
    # Ablation (not run by default): the same schedule with SGD steps on every sample.
    "loss_based_momentum_all": ("loss-based + momentum, every sample",
                                {"name": "loss_based_momentum", "active_gap": None}),
}
DEFAULT_SCHEDULES = ["loss_based", "constant", "loss_based_momentum"]
BASELINE, FAST = "loss_based", "loss_based_momentum"
LOSS_TARGETS = (-10.0, -50.0, -100.0)
KEEP = ("epoch", "cpu_time", "log10_loss_mean", "log_loss_sum", "smoothed_margin",
        "smoothed_margin_multi", "normalized_margin_multi", "train_acc", "alpha", "retries",
        "steps")


def _model(workload: str, seed: int):
    from marginlab import models

    if workload == "A":
        return models.mnist_cnn("none", seed=seed)
    return models.mlp(784, [64, 64], 10, bias="none", seed=seed)


def run_one(workload: str, schedule_name: str, seed: int, budget: float) -> dict:
    """Train one (schedule, seed) for ``budget`` CPU seconds; in a fresh process."""
    import torch

    torch.set_num_threads(1)
    from marginlab import data, margins
    from marginlab.train import fit, make_schedule

    w = WORKLOADS[workload]
    split = data.load(w["data"]["name"], n_train=w["data"]["n_train"],
                      n_test=w["data"]["n_test"])
    model = _model(workload, seed)
    schedule = make_schedule(SCHEDULES[schedule_name][1])
    history = fit(model, split.train, schedule=schedule, epochs=10**9,
                  batch_size=w["batch_size"], seed=seed, max_cpu_time=budget,
                  progress=False).history
    out = margins.model_outputs(model, *split.test, "cross_entropy")
    return {"workload": workload, "schedule": schedule_name, "seed": seed, "budget": budget,
            "history": [{k: r[k] for k in KEEP} for r in history],
            "test_acc": float((out.q > 0).double().mean())}


HERE = "this code"


def run_version(tree: str | None, workload: str, schedule_name: str, seed: int,
                budget: float) -> dict:
    """:func:`run_one` of the code in ``tree`` (a checkout's root; None: this code), in a fresh
    interpreter whose ``sys.path`` holds only that code's ``src`` and ``benchmarks``."""
    root = Path(__file__).resolve().parents[1] if tree is None else Path(tree)
    code = ("import json, sys; from bench_schedules import run_one; "
            "json.dump(run_one(*json.loads(sys.argv[1])), sys.stdout)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"),
                                                        str(root / "benchmarks")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-P", "-c", code,  # -P: no current directory
                           json.dumps([workload, schedule_name, seed, budget])],
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{schedule_name} seed {seed} on {tree or HERE} failed:\n"
                           f"{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout)
    result["version"] = HERE if tree is None else Path(tree).name
    return result


def export_revision(rev: str, into: Path) -> Path:
    """The ``src`` and ``benchmarks`` folders of git revision ``rev``, unpacked under ``into``."""
    repo = Path(__file__).resolve().parents[1]
    target = into / rev
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", rev, "src",
                              "benchmarks"], capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as fh:
        fh.write(archive)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(target, filter="data")
    return target


# --- analysis -----------------------------------------------------------------------------
def time_to(history: list[dict], key: str, target: float, *, below: bool) -> float | None:
    """CPU seconds of the first record with ``key`` at or past ``target``; None if never."""
    for r in history:
        if (r[key] <= target) if below else (r[key] >= target):
            return r["cpu_time"]
    return None


def value_at(history: list[dict], key: str, t: float) -> float:
    """``key`` of the last record at or before CPU second ``t`` (NaN before the first)."""
    value = math.nan
    for r in history:
        if r["cpu_time"] > t:
            break
        value = r[key]
    return value


def margin_decreases(history: list[dict], key: str = "smoothed_margin_multi") -> dict:
    """Decreases of ``key`` between consecutive records once L < ℓ(0) = log 2 (CE loss)."""
    drops = [(a[key] - b[key]) / abs(a[key]) for a, b in pairwise(history)
             if a["log_loss_sum"] < math.log(math.log(2.0)) and b[key] < a[key]]
    return {"count": len(drops), "largest": max(drops, default=0.0), "total": sum(drops)}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.4g} ± {s:.2g}"


def _times(runs: list[dict], key: str, target: float, *, below: bool) -> list[float | None]:
    return [time_to(r["history"], key, target, below=below) for r in runs]


def _time_cell(times: list[float | None], budget: float) -> str:
    hit = [t for t in times if t is not None]
    if not hit:
        return f"not reached in {budget:g} s"
    cell = _mean_std(hit)
    return cell if len(hit) == len(times) else f"{cell} ({len(hit)}/{len(times)} seeds)"


def speedups(by_schedule: dict[str, list[dict]], workload: str, budget: float) -> list[str]:
    """``speed-up ...`` lines: ratio of mean CPU seconds to reach each target, or bounds."""
    if BASELINE not in by_schedule or FAST not in by_schedule:
        return []
    base, fast = by_schedule[BASELINE], by_schedule[FAST]
    targets = [("log10_loss_mean", t, True, f"log10 L = {t:g}") for t in LOSS_TARGETS]
    for key, name in (("smoothed_margin_multi", "smoothed margin"),
                      ("normalized_margin_multi", "normalized margin")):
        finals = [r["history"][-1][key] for r in base if r["history"]]
        if finals:  # the margin every seed of the paper's schedule reached within the budget
            g = min(finals)
            targets.append((key, g, False, f"{name} = {g:.4g}"))
    lines = []
    for key, target, below, label in targets:
        tb = _times(base, key, target, below=below)
        tf = _times(fast, key, target, below=below)
        if all(t is not None for t in tb + tf):
            ratio = statistics.fmean(tb) / statistics.fmean(tf)
            per_seed = [b / f for b, f in zip(tb, tf)]
            lines.append(f"speed-up over the paper's loss-based schedule: {ratio:.1f}x "
                         f"({workload}, {label}; per seed {min(per_seed):.1f}x to "
                         f"{max(per_seed):.1f}x)")
        elif all(t is not None for t in tf):
            lines.append(f"speed-up over the paper's loss-based schedule: > "
                         f"{budget / max(tf):.1f}x ({workload}, {label}; the paper's schedule "
                         f"did not reach it in {budget:g} s on "
                         f"{sum(t is None for t in tb)}/{len(tb)} seeds, ours took "
                         f"{max(tf):.4g} s at most)")
        else:
            lines.append(f"no speed-up measured ({workload}, {label}): ours reached it on "
                         f"{sum(t is not None for t in tf)}/{len(tf)} seeds, the paper's on "
                         f"{sum(t is not None for t in tb)}/{len(tb)}, in {budget:g} s")
    return lines


def machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores (shared), {platform.platform()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}, 1 torch thread per run")


def markdown(results: list[dict], workload: str, budget: float, command: str,
             date: str | None = None) -> str:
    by = {name: runs for name in SCHEDULES
          if (runs := [r for r in results if r["schedule"] == name])}
    seeds = sorted({r["seed"] for r in results})
    lines = [f"## Schedules on workload {workload}: {WORKLOADS[workload]['title']}", "",
             f"{date or time.strftime('%Y-%m-%d %H:%M %Z')}; {machine()}.", "",
             f"Command: `{command}`", "",
             f"Seeds {', '.join(map(str, seeds))}; batch {WORKLOADS[workload]['batch_size']}; "
             f"{budget:g} CPU seconds per run; mean ± std over seeds. CPU time starts before "
             "the initial evaluation and includes every evaluation and rolled-back epoch.", "",
             "### CPU seconds to reach a mean training loss", "",
             "| schedule | " + " | ".join(f"log10 L = {t:g}" for t in LOSS_TARGETS) + " |",
             "|---" * (len(LOSS_TARGETS) + 1) + "|"]
    for name, runs in by.items():
        cells = [_time_cell(_times(runs, "log10_loss_mean", t, below=True), budget)
                 for t in LOSS_TARGETS]
        lines.append(f"| {SCHEDULES[name][0]} | " + " | ".join(cells) + " |")
    checkpoints = [budget / 4, budget / 2, budget]
    lines += ["", "### Smoothed margin γ̃ (per-layer norms) at equal CPU time", "",
              "| schedule | " + " | ".join(f"at {t:g} s" for t in checkpoints) + " |",
              "|---" * (len(checkpoints) + 1) + "|"]
    for name, runs in by.items():
        cells = [_mean_std([value_at(r["history"], "smoothed_margin_multi", t) for r in runs])
                 for t in checkpoints]
        lines.append(f"| {SCHEDULES[name][0]} | " + " | ".join(cells) + " |")
    lines += ["", "### At the end of the budget", "",
              "| schedule | log10 L | normalized margin | smoothed margin | train acc | test acc "
              "| epochs kept | attempts rolled back | γ̃ decreases (count, largest relative) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in by.items():
        last = [r["history"][-1] for r in runs if r["history"]]
        kept = [len(r["history"]) for r in runs]
        back = [sum(x["retries"] for x in r["history"]) for r in runs]
        share = [b / (k + b) for k, b in zip(kept, back) if k + b]
        dec = [margin_decreases(r["history"]) for r in runs]
        lines.append(
            f"| {SCHEDULES[name][0]} | {_mean_std([x['log10_loss_mean'] for x in last])} | "
            f"{_mean_std([x['normalized_margin_multi'] for x in last])} | "
            f"{_mean_std([x['smoothed_margin_multi'] for x in last])} | "
            f"{_mean_std([x['train_acc'] for x in last])} | "
            f"{_mean_std([r['test_acc'] for r in runs])} | {_mean_std(kept)} | "
            f"{_mean_std([100 * s for s in share])}% | "
            f"{sum(d['count'] for d in dec)}, {max(d['largest'] for d in dec):.2g} |")
    lines += ["", "γ̃ decreases are counted between consecutive records (epochs) once "
              "L < ℓ(0), over all seeds; the momentum schedule rejects epochs that would "
              "decrease it.", ""]
    lines += [f"- {s}" for s in speedups(by, workload, budget)]
    lines += ["", f"![margin vs CPU seconds](schedules_{workload}.png)", ""]
    return "\n".join(lines)


def versions_markdown(results: list[dict], workload: str, budget: float, command: str,
                      date: str | None = None) -> str:
    """Each version's CPU seconds to the loss targets and its speed-ups, then each schedule's
    CPU seconds on the other version relative to this code's, at the same targets."""
    versions = list(dict.fromkeys(r["version"] for r in results))
    lines = [f"## Two versions on workload {workload}: {WORKLOADS[workload]['title']}", "",
             f"{date or time.strftime('%Y-%m-%d %H:%M %Z')}; {machine()}.", "",
             f"Command: `{command}`", "",
             f"Every (version, schedule, seed) ran in one process pool, interleaved; "
             f"{budget:g} CPU seconds per run; mean ± std over seeds.", ""]
    by_version = {}
    for v in versions:
        by = {name: runs for name in SCHEDULES
              if (runs := [r for r in results if r["version"] == v and r["schedule"] == name])}
        by_version[v] = by
        lines += [f"### {v}", "",
                  "| schedule | " + " | ".join(f"log10 L = {t:g}" for t in LOSS_TARGETS)
                  + f" | γ̃ at {budget:g} s |", "|---" * (len(LOSS_TARGETS) + 2) + "|"]
        for name, runs in by.items():
            cells = [_time_cell(_times(runs, "log10_loss_mean", t, below=True), budget)
                     for t in LOSS_TARGETS]
            final = _mean_std([value_at(r["history"], "smoothed_margin_multi", budget)
                               for r in runs])
            lines.append(f"| {SCHEDULES[name][0]} | " + " | ".join(cells) + f" | {final} |")
        lines += [""] + [f"- {s}" for s in speedups(by, workload, budget)] + [""]
    if len(versions) == 2:
        here, other = versions if versions[0] == HERE else versions[::-1]
        lines += [f"### CPU seconds on {other} relative to {here}", "",
                  "| schedule | " + " | ".join(f"log10 L = {t:g}" for t in LOSS_TARGETS)
                  + " |", "|---" * (len(LOSS_TARGETS) + 1) + "|"]
        for name in by_version[here]:
            if name not in by_version[other]:
                continue
            cells = []
            for t in LOSS_TARGETS:
                a = _times(by_version[other][name], "log10_loss_mean", t, below=True)
                b = _times(by_version[here][name], "log10_loss_mean", t, below=True)
                if None in a or None in b:
                    cells.append("—")
                else:
                    cells.append(f"{statistics.fmean(a) / statistics.fmean(b):.2f}x")
            lines.append(f"| {SCHEDULES[name][0]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(results: list[dict], workload: str, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    colors = {name: f"C{i}" for i, name in enumerate(SCHEDULES)}
    panels = (("smoothed_margin_multi", "smoothed margin γ̃ (per-layer norms)"),
              ("normalized_margin_multi", "normalized margin γ (per-layer norms)"),
              ("log10_loss_mean", "log10 mean training loss"))
    for ax, (key, title) in zip(axes, panels):
        for r in results:
            h = r["history"]
            label = SCHEDULES[r["schedule"]][0] if r["seed"] == min(
                x["seed"] for x in results) else None
            ax.plot([x["cpu_time"] for x in h], [x[key] for x in h], color=colors[r["schedule"]],
                    alpha=0.8, lw=1.2, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("CPU seconds (one thread)")
        ax.grid(alpha=0.3)
        if key != "log10_loss_mean":  # margins are negative until the data are fitted
            top = max((x[key] for r in results for x in r["history"]), default=1.0)
            ax.set_ylim(0, 1.1 * top if top > 0 else 1.0)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Workload {workload}: {WORKLOADS[workload]['title']} "
                 f"({len({r['seed'] for r in results})} seeds, one line each)", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="B")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=float, default=None,
                   help="CPU seconds per run (default: A 400, B 60)")
    p.add_argument("--schedules", nargs="+", choices=sorted(SCHEDULES),
                   default=DEFAULT_SCHEDULES)
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (one process each)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--rev", default=None,
                   help="also run every (schedule, seed) on the code of this git revision, in "
                        "the same pool")
    p.add_argument("--from-json", type=Path, default=None,
                   help="write the table and plot again from a saved schedules_<workload>.json")
    args = p.parse_args(argv)
    budget = args.budget or WORKLOADS[args.workload]["budget"]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])

    from tqdm.auto import tqdm

    from marginlab import storage

    if args.from_json is not None:
        saved = storage.read_json(args.from_json)
        return _write(saved["results"], args.workload, saved["budget"], saved["command"],
                      args.out, saved.get("date"))
    if args.rev is not None:
        return _compare(args, budget, command)
    tasks = [(args.workload, s, seed, budget) for seed in args.seeds for s in args.schedules]
    results = []
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = [pool.submit(run_one, *t) for t in tasks]
        for fut in tqdm(cf.as_completed(futures), total=len(futures), desc="runs",
                        disable=None):
            results.append(fut.result())
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    storage.write_json(args.out / f"schedules_{args.workload}.json",
                       {"command": command, "budget": budget, "date": date,
                        "results": results})
    return _write(results, args.workload, budget, command, args.out, date)


def _compare(args: argparse.Namespace, budget: float, command: str) -> int:
    from tqdm.auto import tqdm

    from marginlab import storage

    with tempfile.TemporaryDirectory() as tmp:
        tree = str(export_revision(args.rev, Path(tmp)))
        tasks = [(version, args.workload, s, seed, budget) for seed in args.seeds
                 for s in args.schedules for version in (None, tree)]
        results = []
        with cf.ThreadPoolExecutor(args.jobs) as pool:  # each task is its own interpreter
            futures = [pool.submit(run_version, *t) for t in tasks]
            for fut in tqdm(cf.as_completed(futures), total=len(futures), desc="runs",
                            disable=None):
                results.append(fut.result())
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    stem = f"versions_{args.workload}"
    storage.write_json(args.out / f"{stem}.json", {"command": command, "budget": budget,
                                                    "date": date, "results": results})
    results.sort(key=lambda r: (r["version"] != HERE, list(SCHEDULES).index(r["schedule"]),
                                r["seed"]))
    text = versions_markdown(results, args.workload, budget, command, date)
    storage.atomic_write_text(args.out / f"{stem}.md", text + "\n")
    print(text)
    return 0


def _write(results: list[dict], workload: str, budget: float, command: str, out: Path,
           date: str | None) -> int:
    from marginlab import storage

    results = sorted(results, key=lambda r: (list(SCHEDULES).index(r["schedule"]), r["seed"]))
    stem = f"schedules_{workload}"
    plot(results, workload, out / f"{stem}.png")
    text = markdown(results, workload, budget, command, date)
    storage.atomic_write_text(out / f"{stem}.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
