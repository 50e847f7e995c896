"""KKT-residual benchmark (``python -m benchmarks.run kkt``, or ``python -m benchmarks.bench_kkt``).

``marginlab.analysis.kkt_residual`` on the paper's MNIST CNN without biases (3.24M parameters)
and N = 1000 images of the bundled MNIST subset (``data.load("mnist5k", n_train=1000)``).
Goals: at most 5 minutes wall time on 2 cores and 2 GB peak memory.

The model must separate the 1000 images (q_min > 0): it is trained with a plain float32 SGD loop
(batch 100, lr 0.05, cross-entropy) until every training margin is positive, then cached in
``benchmarks/out/`` (git-ignored). Each measurement runs in a fresh subprocess, which reports its
wall time for the call and its peak resident set size from ``resource.getrusage(RUSAGE_SELF)``
(``ru_maxrss``; it includes the interpreter, torch and the data, so the RSS before the call is
reported too). Rows: τ = 0.01 (the default near-active set) and τ = ∞ (all N samples carry a
multiplier: the largest Gram matrix), and the tangent-kernel SVM over all N.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def _cache_path(n: int) -> Path:
    return OUT / f"bench_kkt_mnist_cnn_n{n}.safetensors"


def train_until_separated(n: int, path: Path, *, max_epochs: int = 200) -> dict:
    """Train mnist_cnn(bias="none") on ``n`` MNIST-subset images until q_min > 0; save it."""
    import torch
    import torch.nn.functional as F

    from marginlab import data, margins, models

    split = data.load("mnist5k", n_train=n, n_test=10)
    X, y = split.train
    model = models.mnist_cnn(bias="none", seed=0)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, 100):
            idx = order[start:start + 100]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.05 * p.grad
        q_min = float(margins.per_sample(model.eval(), X, y).min())
        if q_min > 0:
            info = {"epochs": epoch, "q_min": q_min, "seconds": time.perf_counter() - t0}
            models.save(model, path, extra=info)
            return info
    raise RuntimeError(f"mnist_cnn did not separate {n} images in {max_epochs} epochs")


def _child(args: argparse.Namespace) -> None:
    """Run one measurement and print a JSON line (executed in a fresh process)."""
    import resource

    import torch

    from marginlab import data, models
    from marginlab.analysis import kkt_residual, tangent_svm

    torch.set_num_threads(args.threads)
    split = data.load("mnist5k", n_train=args.n, n_test=10)
    X, y = split.train
    model = models.load(_cache_path(args.n))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if args.what == "svm":
        res = tangent_svm(model, X, y)
        row = {"cosine": res.cosine, "n_support": int(res.support.numel()),
               "duality_gap": res.duality_gap, "method": "L-BFGS-B dual",
               "builder": res.gram_builder}
    else:
        res = kkt_residual(model, X, y, tau=float(args.what))
        row = {"eps_relative": res.eps_relative, "delta": res.delta,
               "n_near_active": int(res.near_active.numel()), "n_active": int(res.active.numel()),
               "method": res.method, "builder": res.gram_builder}
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"what": args.what, "seconds": seconds, "peak_rss_mb": peak,
                      "rss_before_mb": rss_before, **row}))


def _measure(what: str, n: int, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_kkt", "--child", "--what", what, "--n",
           str(n), "--threads", str(threads)]
    proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {what} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="training images (default 1000)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--what", default=None,
                   help="comma-separated: tau values and/or 'svm' (default 0.01,inf,svm)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args)
        return 0
    path = _cache_path(args.n)
    if not path.exists():
        info = train_until_separated(args.n, path)
        trained = (f"trained for this benchmark: {info['epochs']} epochs, "
                   f"{info['seconds']:.0f} s, q_min {info['q_min']:.3g}")
    else:
        from marginlab import models

        info = models.metadata(path).get("extra", {})
        trained = f"cached model {path.name} ({info.get('epochs')} epochs, q_min " \
                  f"{info.get('q_min', math.nan):.3g})"
    whats = (args.what or "0.01,inf,svm").split(",")
    rows = [_measure(w, args.n, args.threads) for w in whats]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    print(f"## KKT residual on mnist_cnn (bias none), N = {args.n} MNIST-subset images\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {platform.platform()}, {os.cpu_count()} cores, "
          f"torch threads {args.threads}, 1-min load average at the end {load:.1f}; "
          f"{trained}. Peak RSS = getrusage(RUSAGE_SELF).ru_maxrss of the measuring process "
          "(includes Python, torch and the data; 'before' is its value just before the call).\n")
    print("| call | near-active / active | method (Gram by) | ε/‖θ‖ or cos | δ | wall s "
          "| peak RSS MB (before) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["what"] == "svm":
            print(f"| tangent_svm (all N) | {r['n_support']} support | {r['method']} "
                  f"({r['builder']}) | cos {r['cosine']:.6f} | – | {r['seconds']:.1f} | "
                  f"{r['peak_rss_mb']:.0f} ({r['rss_before_mb']:.0f}) |")
        else:
            print(f"| kkt_residual τ = {r['what']} | {r['n_near_active']} / {r['n_active']} | "
                  f"{r['method']} ({r['builder']}) | {r['eps_relative']:.4g} | "
                  f"{r['delta']:.3g} | {r['seconds']:.1f} | {r['peak_rss_mb']:.0f} "
                  f"({r['rss_before_mb']:.0f}) |")
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
