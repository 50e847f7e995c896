"""Benchmark of the L2 robustness tools on the bundled MNIST subset (Lyu & Li, Appendix K.2).

On 100 correctly classified training points of a bias-free MNIST CNN (``mnist_cnn("none")``,
trained here with a plain SGD loop to 100% training accuracy on a class-balanced subset, or
loaded from ``--snapshot``), in one run:

- seconds and median distance of the default attack (``fast``) and of Carlini–Wagner L2 with
  9 binary-search steps × ``--cw-steps`` (default 1000) iterations; goal: the default's median
  distance ≤ CW's at ≤ 5% of CW's time;
- the median lower/upper ratio of each certified bound on the CNN and on bias-free MLPs (goal
  for the best bound on an MLP: ≥ 0.5).

Usage::

    python benchmarks/bench_robustness.py [--snapshot PATH] [--n 100] [--cw-steps 1000]

Prints markdown tables with the date, machine, library versions and command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import time

import numpy as np
import torch
from torch import nn

from marginlab import data, models
from marginlab.robustness import attack, evaluate


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def train_to_interpolation(model: nn.Module, X, y, *, seed: int = 0, max_epochs: int = 200,
                           lr: float = 0.05) -> tuple[nn.Module, int, float]:
    """Plain SGD (momentum 0.9, batch 50, cross-entropy) until 100% training accuracy and mean
    loss below 1e-3. Returns the model, the epochs used and the seconds."""
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    t0 = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        model.train()
        perm = torch.randperm(len(X))
        for i in range(0, len(X), 50):
            idx = perm[i:i + 50]
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            out = model(X)
        if (out.argmax(1) == y).all() and nn.functional.cross_entropy(out, y) < 1e-3:
            return model, epoch, time.perf_counter() - t0
    return model, max_epochs, time.perf_counter() - t0


def balanced_correct(model: nn.Module, X, y, n: int) -> torch.Tensor:
    """Indices of n correctly classified points, classes taken in turn."""
    with torch.no_grad():
        ok = (model(X).argmax(1) == y).numpy()
    labels = y.numpy()
    queues = [list(np.flatnonzero(ok & (labels == c))) for c in np.unique(labels)]
    out: list[int] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(int(q.pop(0)))
    return torch.as_tensor(sorted(out))


def _median(v: np.ndarray) -> float:
    return float(np.median(v)) if v.size else float("nan")


def _fmt(v: float, spec: str = ".4g") -> str:
    return "—" if v is None or not np.isfinite(v) else format(v, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--snapshot", default=None, help="a saved mnist_cnn checkpoint")
    parser.add_argument("--n", type=int, default=100, help="points to attack")
    parser.add_argument("--train-n", type=int, default=1000, help="training subset size")
    parser.add_argument("--cw-steps", type=int, default=1000, help="CW steps per search step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    cli_args = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(args.threads)
    split = data.load("mnist5k", n_train=args.train_n)
    X, y = split.train
    lines = [
        "## Robustness: attacks and certified bounds (marginlab.robustness)",
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {_cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), load average at start "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}",
        f"- command: python {' '.join(shlex.quote(a) for a in [sys.argv[0], *cli_args])}",
    ]
    if args.snapshot:
        cnn = models.load(args.snapshot).eval()
        lines.append(f"- CNN: {args.snapshot}")
    else:
        cnn, epochs, secs = train_to_interpolation(models.mnist_cnn("none"), X, y)
        lines.append(f"- CNN: mnist_cnn('none') trained here on {len(X)} mnist5k images, "
                     f"{epochs} epochs of SGD (lr 0.05, momentum 0.9, batch 50), {secs:.0f} s")
    idx = balanced_correct(cnn, X, y, args.n)
    Xa, ya = X[idx], y[idx]

    fast = evaluate(cnn, Xa, ya, "fast", progress=False)
    cw = attack(cnn, Xa, ya, method="cw", steps=args.cw_steps)
    ok = np.isfinite(fast.upper) & np.isfinite(cw.distance)
    ratio = fast.upper[ok] / cw.distance[ok]
    wins = float(np.mean(ratio <= 1 + 1e-3)) if ok.any() else float("nan")
    found = {k: int(np.sum(fast.found_by == k)) for k in sorted(set(fast.found_by))}
    lines += [
        "",
        f"### Attacks: {len(idx)} correctly classified training points of the CNN",
        "",
        "| method | wall s | CPU s | median distance | failures | points where fast ≤ CW "
        "(+0.1%) | CPU time vs CW |",
        "|---|---|---|---|---|---|---|",
        f"| fast (DDN + corrected FMN from DeepFool, 100 steps, bisected) | "
        f"{fast.attack_seconds:.1f} | {fast.attack_cpu_seconds:.1f} | "
        f"{_fmt(_median(fast.upper))} | {fast.failures} | {_fmt(wins, '.0%')} | "
        f"{fast.attack_cpu_seconds / cw.cpu_seconds:.1%} |",
        f"| CW L2, 9 × {args.cw_steps} steps | {cw.seconds:.1f} | {cw.cpu_seconds:.1f} | "
        f"{_fmt(_median(cw.distance))} | {cw.failures} | | 100% |",
        "",
        f"Median per-point ratio fast/CW: {_fmt(_median(ratio))}; fast's distance "
        f"came from: {found}.",
    ]

    rows = [("CNN mnist_cnn('none')", fast)]
    for widths in ([256], [256, 256]):
        mlp, epochs, secs = train_to_interpolation(models.mlp(784, widths, 10), X, y)
        m_idx = balanced_correct(mlp, X, y, args.n)
        rows.append((f"MLP 784-{'-'.join(map(str, widths))}-10 bias-free ({epochs} epochs)",
                     evaluate(mlp, X[m_idx], y[m_idx], "fast", progress=False)))
    lines += [
        "",
        "### Certified lower bounds: median lower/upper over the points (upper = fast attack)",
        "",
        "| model | global (Π‖A_k‖) | row (last-layer rows) | local (CROWN) | best | "
        "certify seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in rows:
        s = res.summary()
        best = _median((res.lower / res.upper)[res.correct & np.isfinite(res.upper)])
        cells = [_fmt(s.get(f"median_ratio_{k}", np.nan), ".3g") for k in ("global", "row",
                                                                              "local")]
        lines.append(f"| {name} | {' | '.join(cells)} | {_fmt(best, '.3g')} | "
                     f"{res.certify_seconds:.1f} |")
    notes = {k: v for _, r in rows for k, v in r.notes.items()}
    if notes:
        lines += ["", "Not computed: " + "; ".join(f"{k}: {v}" for k, v in notes.items())]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
