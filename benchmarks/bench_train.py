"""Trainer benchmarks (``python -m benchmarks.run train``).

(a) cost of the log-space rescaled loss: one SGD pass of ``fit``'s epoch loop vs a plain float32
    ``F.cross_entropy`` loop on the same model, data and shuffles, as a ratio measured in one run
    (interleaved repetitions, median); also the whole epoch (with the end-of-epoch evaluation
    both loops need to record the loss);
(b) epochs and CPU seconds of the loss-based schedule to reach log10 L <= -10, -100, -300, on the
    reference workload (paper CNN, no bias, 1000 MNIST-subset images, batch 100) and on the
    main job's cpu-scale model (MLP 784-64-64-10 on 200 images), each under a CPU budget;
(c) normalized and smoothed margin of loss-based vs constant lr at equal CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from marginlab import data, models
from marginlab.losses import get_loss
from marginlab.train import ConstantLR, LossBasedLR, fit
from marginlab.train.steps import sgd_epoch


def _plain_epoch(model, opt, X, y, bs, gen):
    order = torch.randperm(X.shape[0], generator=gen)
    for start in range(0, X.shape[0], bs):
        idx = order[start:start + bs]
        loss = F.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _plain_eval(model, X, y, bs=1000):
    with torch.no_grad():
        return sum(float(F.cross_entropy(model(X[i:i + bs]), y[i:i + bs], reduction="sum"))
                   for i in range(0, X.shape[0], bs))


def epoch_overhead(reps: int = 7) -> list[str]:
    split = data.load("mnist5k", n_train=1000)
    X, y = split.train
    # Both loops on the channels-last layout that fit uses for image batches on CPU.
    X = X.contiguous(memory_format=torch.channels_last)
    model_a = models.mnist_cnn("none").to(memory_format=torch.channels_last)
    model_b = models.mnist_cnn("none").to(memory_format=torch.channels_last)
    loss = get_loss("cross_entropy")
    params_a = list(model_a.parameters())
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.01)
    ratios, ratios_full = [], []
    from marginlab import margins

    for r in range(reps):
        g1, g2 = torch.Generator().manual_seed(r), torch.Generator().manual_seed(r)
        t0 = time.process_time()
        sgd_epoch(model_a, params_a, X, y, loss, 0.0, 0.01, 0.0, 2.0, 100, g1)
        t1 = time.process_time()
        margins.measure(model_a, X, y, loss, check_inputs=False)
        t2 = time.process_time()
        _plain_epoch(model_b, opt_b, X, y, 100, g2)
        t3 = time.process_time()
        _plain_eval(model_b, X, y)
        t4 = time.process_time()
        ratios.append((t1 - t0) / (t3 - t2))
        ratios_full.append((t2 - t0) / (t4 - t2))
    return [
        "## (a) Epoch cost of the log-space loss (paper CNN, 1000 images, batch 100)",
        "",
        f"- SGD pass, fit vs plain float32 F.cross_entropy: median ratio "
        f"{statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}, "
        f"{reps} interleaved repetitions); goal <= 1.05",
        f"- whole epoch incl. end-of-epoch evaluation (fit: MarginStats in float64; plain: "
        f"summed cross-entropy): median ratio {statistics.median(ratios_full):.3f}",
        "",
    ]


def _cpu_to(history, target):
    for h in history:
        if h["log10_loss_mean"] <= target:
            return h["epoch"], h["cpu_time"]
    return None, None


def schedule_race(name: str, make_model, split, budget: float) -> list[str]:
    lines = [f"## (b, c) {name}: CPU budget {budget:g} s per run", ""]
    runs = {}
    for label, sched in (("loss-based", LossBasedLR()), ("constant 0.01", ConstantLR(0.01))):
        res = fit(make_model(), split.train, split.test, schedule=sched, epochs=10**7,
                  snapshots_at=(), progress=False, max_time=budget, stop_at_log10_loss=-300)
        runs[label] = res.history
    lines += ["| schedule | target log10 L | epoch | CPU s |", "|---|---|---|---|"]
    for label, hist in runs.items():
        for target in (-10, -100, -300):
            ep, cpu = _cpu_to(hist, target)
            lines.append(f"| {label} | {target} | {ep if ep else 'not reached'} | "
                         f"{f'{cpu:.1f}' if cpu else '–'} |")
    lb, const = runs["loss-based"], runs["constant 0.01"]
    t = min(lb[-1]["cpu_time"], const[-1]["cpu_time"])

    def at(hist, key):
        return [h for h in hist if h["cpu_time"] <= t][-1][key]

    lines += ["", f"At equal CPU time ({t:.0f} s):", "",
              "| schedule | log10 L | normalized margin | smoothed margin | test acc |",
              "|---|---|---|---|---|"]
    for label, hist in runs.items():
        lines.append(f"| {label} | {at(hist, 'log10_loss_mean'):.2f} | "
                     f"{at(hist, 'normalized_margin_multi'):.4g} | "
                     f"{at(hist, 'smoothed_margin_multi'):.4g} | {at(hist, 'test_acc'):.3f} |")
    ratio = at(lb, "smoothed_margin_multi") / at(const, "smoothed_margin_multi")
    lines += ["", f"smoothed margin ratio loss-based / constant at equal CPU time: {ratio:.2f}x",
              f"rolled-back epochs of the loss-based run: "
              f"{sum(h['retries'] for h in lb)} of {sum(h['retries'] for h in lb) + len(lb)}", ""]
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench_train")
    p.add_argument("--budget-cnn", type=float, default=600.0, help="wall s per CNN run")
    p.add_argument("--budget-mlp", type=float, default=120.0, help="wall s per MLP run")
    p.add_argument("--skip-cnn", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = ["# Trainer", ""]
    out += epoch_overhead()
    mlp_split = data.load("mnist5k", n_train=200, n_test=1000)
    out += schedule_race("main job cpu-scale model (MLP 784-64-64-10, 200 images)",
                         lambda: models.mlp(784, [64, 64], 10), mlp_split, args.budget_mlp)
    if not args.skip_cnn:
        cnn_split = data.load("mnist5k", n_train=1000, n_test=1000)
        out += schedule_race("reference workload (paper CNN, 1000 images)",
                             lambda: models.mnist_cnn("none"), cnn_split, args.budget_cnn)
    print("\n".join(out))


if __name__ == "__main__":
    main()
