"""Certified gaps of the two-layer convex problem on the cases of
tests/twolayer/test_meanfield.py and tests/twolayer/test_regularized.py: value, dual lower
bound, gap and seconds, as JSON.

``PYTHONPATH=src python benchmarks/twolayer_certificates.py``; it uses only the former module
paths, so the same script measures older checkouts.
"""

import json
import sys
import time

import numpy as np
import torch

from marginlab import meanfield, regularized, regularized_1d

F64 = torch.float64


def _data(n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    w = torch.randn(d, generator=g, dtype=F64)
    y = torch.sign(x @ w + 0.3 * torch.randn(n, generator=g, dtype=F64))
    y[y == 0] = 1
    return x, y


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 2)


def main() -> dict:
    out = {}

    def reference(name, *args, **kwargs):
        r, sec = _timed(lambda: meanfield.reference_optimum(*args, **kwargs))
        out[name] = {"value": r.value, "lower": r.lower_bound, "gap": r.gap,
                     "certified": r.certified, "grid_values": list(r.grid_values),
                     "rounds": r.rounds, "seconds": sec}

    two = (torch.tensor([[1.0], [-1.0]], dtype=F64), torch.tensor([1.0, -1.0], dtype=F64))
    for reduction in ("sum", "mean"):
        for lam in (0.02, 0.1):
            reference(f"two_points_{reduction}_{lam}", *two, lam, reduction=reduction)
    g = torch.Generator().manual_seed(2)
    x9 = torch.randn(9, 1, generator=g, dtype=F64)
    y9 = torch.tensor([1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=F64)
    reference("d1_nine", x9, y9, 0.05)
    g = torch.Generator().manual_seed(11)
    xs = torch.linspace(-2, 2, 14, dtype=F64) + 0.05 * torch.randn(14, generator=g, dtype=F64)
    ys = torch.where(torch.cos(2.2 * xs) > 0, 1.0, -1.0).to(F64)
    reference("bias_1d_mean", torch.stack([xs, torch.ones_like(xs)], 1), ys, 1e-3,
              reduction="mean")
    for n, d, seed, lam in [(25, 2, 4, 0.02), (20, 3, 1, 0.05)]:
        x, y = _data(n, d, seed)
        reference(f"grid_n{n}_d{d}", x, y, lam, n_directions=24 if d == 2 else None,
                  refinements=2)
    o, sec = _timed(lambda: regularized_1d.convex_optimum_1d(xs.numpy(), ys.numpy(), 1e-3,
                                                             tol=1e-6))
    out["convex_optimum_1d"] = {"value": o.value, "lower": o.lower_bound, "gap": o.gap,
                                "seconds": sec}
    rng = np.random.default_rng(5)
    X = rng.standard_normal((20, 3))
    yy = np.where(X[:, 0] + 0.5 * X[:, 1] ** 2 - 0.3 >= 0, 1.0, -1.0)
    U = rng.standard_normal((200, 3))
    for lam in (1e-2, 1e-4):
        c, sec = _timed(lambda lam=lam: regularized.convex_optimum(X, yy, lam, U))
        out[f"convex_optimum_d3_{lam}"] = {"value": c.value, "lower": c.lower_bound,
                                           "gap": c.gap, "seconds": sec}
    return out


if __name__ == "__main__":
    json.dump(main(), sys.stdout, indent=1)
