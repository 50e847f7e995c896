"""``marginlab analyze RUN_DIR``: KKT residuals, margin monotonicity, rates and direction
convergence of a training run (Lyu & Li, Section 4; DESIGN.md §5)."""

from __future__ import annotations

import argparse

from marginlab.cli import _options

NAME = "analyze"
HELP = "convergence analysis of a run: KKT residuals, smoothed-margin audit, rates, direction"
DESCRIPTION = (
    "Reads RUN_DIR/config.json, metrics.jsonl and trajectory/ checkpoints; writes "
    "RUN_DIR/analysis.json, plots/analysis-*.png and report/analysis.html|md.")
ORDER = 40
PROGRESS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by marginlab train")
    p.add_argument("--kkt-every", type=int, default=1, metavar="K",
                   help="KKT residual at every K-th trajectory checkpoint and the last "
                        "(default 1)")
    p.add_argument("--n", type=int, default=None, metavar="N",
                   help="use a class-balanced subset of N of the run's training samples "
                        "(default: all)")
    p.add_argument("--tau", type=float, default=1e-2, metavar="T",
                   help="near-active tolerance: multipliers on q_n <= 1 + T (default 0.01)")
    p.add_argument("--rel-tol", type=float, default=1e-9,
                   help="relative decrease of the smoothed margin counted by the audit")
    p.add_argument("--no-svm", action="store_true",
                   help="skip the tangent-kernel SVM at the last checkpoint")
    p.add_argument("--memory-gb", type=_options.number(positive=True), default=2.0,
                   help="memory for Gram matrices, GB (default 2)")


def run(args: argparse.Namespace) -> int:
    from marginlab.analysis.run import analyze_run

    result = analyze_run(args.run_dir, kkt_every=args.kkt_every, n=args.n, tau=args.tau,
                         rel_tol=args.rel_tol, svm=not args.no_svm,
                         memory_limit=args.memory_gb * 2**30)
    ok = [k for k in result.kkt if k["status"] == "ok"]
    if ok:
        last = ok[-1]
        print(f"KKT at epoch {last['epoch']}: eps/|theta| = {last['eps_relative']:.4g}, "
              f"delta = {last['delta']:.4g}, {last['n_active']} active of "
              f"{last['n_near_active']} near-active ({last['method']})")
    for a in result.monotonicity:
        print(f"{a.field}: {a.n_decreases} decreases in {a.n_checked} pairs after epoch "
              f"{a.start_epoch} (max relative {a.max_relative_decrease:.3g})")
    if result.rates_set_by_schedule:
        print("rates: the loss-based schedule sets the step from the loss (eta = alpha/L), so "
              "the loss rate is fixed by construction and is not evidence for Theorem 4.3 "
              "(see `marginlab reproduce lyu-li-rates`)")
    elif result.rates is not None:
        r = result.rates
        print(f"rates: log L ~ {r.loss_exponent_t_given_theory:.4f} log T (theory -1), "
              f"rho^k affine in log T at k = {r.rho_best_power:.3g} (theory {r.order:.4g}); "
              "descriptive over this run's span of T")
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {', '.join(result.files)} in {result.run_dir}")
    from marginlab.run_report import write_run_report

    print(f"report: {write_run_report(result.run_dir)}")
    return 0
