"""One point of ``wei-fig2`` (Wei et al., Figure 2, Appendix F.1): a sample size n and one seed,
the two-layer network and the ℓ2 kernel method side by side on the teacher's classification and
regression tasks, with their test errors, margins, norms and the leading terms of the bounds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np

from marginlab import data
from marginlab.errors import MarginlabError
from marginlab.experiments.wei_generalization import (
    certified,
    directions,
    fit_two_layer,
    norm_sq_value,
    outputs,
    path_norm,
    teacher_of,
    teacher_path_norm,
)
from marginlab.twolayer import bounds, features
from marginlab.twolayer import margins as svm_margins

__all__ = ["fig2_trial"]


def _classification(s: Mapping, n: int, seed: int) -> dict:
    split = data.load("teacher_classification", n_train=n, n_test=s["n_test"], d=s["d"],
                      hidden=s["teacher_hidden"], min_margin=s["min_margin"], seed=seed,
                      teacher_seed=s["teacher_seed"])
    X, y = split.X_train.double(), split.y_train.double()
    Xt, yt = split.X_test.double(), split.y_test.double().numpy()
    Xn, yn = X.numpy(), y.numpy()
    C = float(np.linalg.norm(Xn, axis=1).max())
    teacher = teacher_of(s, seed)
    t0 = time.perf_counter()
    net, evals = fit_two_layer(X, y, n, "logistic", s, seed)
    t_net = time.perf_counter() - t0
    q = yn * outputs(net, X)
    norm_sq, path = norm_sq_value(net), path_norm(net)
    margin = float(q.min()) / norm_sq
    t0 = time.perf_counter()
    svm = svm_margins.l2_margin(Xn, yn)
    scores = features.arccos_kernel(Xt.numpy(), Xn) @ (svm.dual * yn)
    t_kernel = time.perf_counter() - t0
    U = directions(net, s["d"], s["lp_directions"], seed)
    lp = svm_margins.l1_margin(Xn, yn, U)
    bound = (bounds.network_margin_bound(margin, C=C, n=n) if margin > 0 else math.inf)
    out = {
        "test_error_net": float(np.mean(np.sign(outputs(net, Xt)) != yt)),
        "test_error_kernel": float(np.mean(np.sign(scores) != yt)),
        "bound_net": bound,
        "bound_kernel": bounds.kernel_margin_bound(svm.margin, C=C, n=n, d=s["d"]),
        "margin_net": margin,
        "margin_net_balanced": float(q.min()) / (2 * path) if path > 0 else math.nan,
        "margin_kernel": svm.margin,
        "margin_kernel_gap": svm.gap,
        "gamma_l1_lp": lp.margin,
        "bound_l1_lp": (bounds.network_margin_bound(lp.margin / 2, C=C, n=n)
                        if lp.margin > 0 else math.inf),
        "margin_teacher": float(np.min(yn * teacher(X).numpy())) / (
            2 * teacher_path_norm(teacher)),
        "train_error_net": float(np.mean(q <= 0)),
        "norm_sq_net": norm_sq,
        "C": C,
        "seconds_net": t_net,
        "seconds_kernel": t_kernel,
        "function_evals": evals,
    }
    out.update(certified(net, X, y, s["lam"], U))
    return out


def _regression(s: Mapping, n: int, seed: int) -> dict:
    split = data.load("teacher_regression", n_train=n, n_test=s["n_test"], d=s["d"],
                      hidden=s["teacher_hidden"], seed=seed, teacher_seed=s["teacher_seed"])
    X, y = split.X_train.double(), split.y_train.double()
    Xt, yt = split.X_test.double(), split.y_test.double().numpy()
    Xn, yn = X.numpy(), y.numpy()
    t0 = time.perf_counter()
    net, evals = fit_two_layer(X, y, n, "squared", s, seed)
    t_net = time.perf_counter() - t0
    path = path_norm(net)
    t0 = time.perf_counter()
    interp = svm_margins.l2_interpolation(Xn, yn)
    t_kernel = time.perf_counter() - t0
    lp = svm_margins.l1_interpolation(Xn, yn, directions(net, s["d"], s["lp_directions"], seed))
    return {
        "test_mse_net": float(np.mean((outputs(net, Xt) - yt) ** 2)),
        "test_mse_kernel": float(np.mean((interp.predict(Xt.numpy()) - yt) ** 2)),
        "bound_net": float(bounds.l1_regression_bound(path, X=Xn)),
        "bound_kernel": float(bounds.l2_regression_bound(interp.norm, X=Xn)),
        "path_norm_net": path,
        "norm_sq_net": norm_sq_value(net),
        "l1_norm_lp": lp.norm,
        "norm_kernel": interp.norm,
        "teacher_path_norm": teacher_path_norm(teacher_of(s, seed)),
        "train_mse_net": float(np.mean((outputs(net, X) - yn) ** 2)),
        "test_mse_zero": float(np.mean(yt ** 2)),
        "seconds_net": t_net,
        "seconds_kernel": t_kernel,
        "function_evals": evals,
    }


def fig2_trial(settings: Mapping) -> dict:
    """One point of Figure 2: sample size ``n``, one seed, both tasks of ``tasks``.

    The seed draws the teacher (unless ``teacher_seed`` is set), the data and the network's
    initialization. Result keys start with ``cls_`` (classification) and ``reg_`` (regression).
    """
    s, n, seed = settings, int(settings["n"]), int(settings["seed"])
    unknown = set(s["tasks"]) - {"classification", "regression"}
    if unknown or not s["tasks"]:
        raise MarginlabError(f"tasks must be a non-empty subset of classification, regression; "
                             f"got {s['tasks']!r}")
    parts = {}
    if "classification" in s["tasks"]:
        parts["cls"] = _classification(s, n, seed)
    if "regression" in s["tasks"]:
        parts["reg"] = _regression(s, n, seed)
    # Headline numbers first: a sweep report plots the first few keys.
    first = ["test_error_net", "test_error_kernel", "test_mse_net", "test_mse_kernel",
             "bound_net", "bound_kernel"]
    out = {}
    for key in first:
        for prefix, part in parts.items():
            if key in part:
                out[f"{prefix}_{key}"] = part[key]
    for prefix, part in parts.items():
        out.update({f"{prefix}_{k}": v for k, v in part.items() if k not in first})
    return out
