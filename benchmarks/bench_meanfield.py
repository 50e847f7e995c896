"""Mean-field flow benchmark (``python -m benchmarks.run meanfield``).

10^5 particles × 10^3 steps of the discrete perturbed Wasserstein gradient flow
(marginlab.meanfield.simulate) on n = 200 points in d = 20, float64, on 2 torch threads; goal: at
most one minute. Reports wall time and particle-steps per second for plain flow (σ = 0) and for
the perturbed flow at a full particle budget (every step moves the K lightest particles to the
origin and injects K fresh ones). ``--profile`` adds the top operators of a short profiled run.
The machine is shared: the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from marginlab import meanfield as mf


def _problem(n: int, d: int, particles: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=torch.float64, generator=g) / d**0.5
    y = torch.where(x[:, 0] * x[:, 1] > 0, 1.0, -1.0).to(torch.float64)
    return x, y, mf.ParticleMeasure.uniform(particles, d, g)


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def _profile(x, y, rho, cfg: mf.FlowConfig, steps: int = 10) -> list[str]:
    from dataclasses import replace

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        mf.simulate(rho, x, y, replace(cfg, steps=steps), progress=False)
    rows = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    return ["```", rows.strip(), "```"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--particles", type=int, default=100_000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--d", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=mf.FlowConfig(lam=0.0).chunk_size)
    p.add_argument("--variants", default="plain,perturbed", help="comma-separated subset")
    p.add_argument("--profile", action="store_true", help="also profile 10 steps")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    x, y, rho = _problem(args.n, args.d, args.particles)
    configs = {
        "plain": mf.FlowConfig(lam=1e-3, eta=0.1, steps=args.steps, chunk_size=args.chunk_size),
        "perturbed": mf.FlowConfig(
            lam=1e-3,
            sigma=0.1,
            eta=0.1,
            steps=args.steps,
            fresh_per_step=64,
            max_particles=args.particles,
            chunk_size=args.chunk_size,
        ),
    }
    print("## Mean-field flow (marginlab.meanfield.simulate)\n")
    print(
        f"{args.particles} particles × {args.steps} steps, n = {args.n}, d = {args.d}, float64, "
        f"{args.threads} torch threads, chunk {args.chunk_size}; torch {torch.__version__}, "
        f"{os.cpu_count()} cores; goal ≤ 60 s.\n"
    )
    print("| variant | wall (s) | ms / step | particle-steps / s | final L | load before → after |")
    print("|---|---|---|---|---|---|")
    for name in args.variants.split(","):
        cfg = configs[name]
        before = _load()
        start = time.perf_counter()
        res = mf.simulate(rho, x, y, cfg, progress=False)
        wall = time.perf_counter() - start
        rate = args.particles * args.steps / res.wall_time
        print(
            f"| {name} (σ = {cfg.sigma:g}) | {wall:.1f} | {1000 * res.wall_time / args.steps:.1f}"
            f" | {rate:.3g} | {float(res.objective[-1]):.6g} | {before} → {_load()} |",
            flush=True,
        )
    if args.profile:
        print("\nTop operators (10 steps of the perturbed flow, self CPU time):\n")
        print("\n".join(_profile(x, y, rho, configs["perturbed"])))
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
