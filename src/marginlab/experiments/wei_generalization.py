"""Wei, Lee, Liu & Ma, Figures 2 and 3: generalization of weakly regularized two-layer networks.

- ``wei-fig2`` (Section 6, Appendix F.1): a random teacher with 6 hidden units labels inputs in
  d = 20; a two-layer network of width n trained on the weakly regularized loss (λ = 1e-8)
  against the ℓ2 kernel method with ReLU features (the exact arc-cosine kernel, the limit of
  infinitely many random ReLU features), as the number of samples n grows. Classification:
  logistic loss vs the hard-margin kernel SVM (Eq. (4.3)), 0-1 test error and the leading terms
  of Proposition 3.1 and Lemma 4.2. Regression: squared loss vs minimum ℓ2-norm kernel
  interpolation (Eq. (D.4)), squared test error and the terms of Lemmas D.8 and D.9.
- ``wei-fig3`` (Section 6, Appendix F.2): test error and normalized margin q_min/‖Θ‖² against
  the hidden width, on teacher data (10 hidden units, d = 20) and on MNIST. Theorem 3.3: the
  *maximum* normalized margin is non-decreasing in width; the run reports whether the trained
  networks' margins are.

Networks are trained either as the paper did (``gd``: full-batch gradient descent for a fixed
number of steps; ``sgd`` on MNIST through :func:`marginlab.train.fit`) or towards the minimizer
of L_λ that the theory is about (``lbfgs``: full-batch L-BFGS on L_λ/λ, λ lowered from
``lam_start`` by ``lam_ratio`` per solve so that every solve starts near its optimum). Binary
classifiers are then checked with the dual certificate of :mod:`marginlab.regularized` and the
ℓ1-SVM of :mod:`marginlab.kernels` over their own and random directions.

Every run writes ``trials.jsonl`` (one :class:`~marginlab.sweep.TrialRecord` per trial, the same
format ``marginlab sweep`` writes), PNG figures in ``plots/`` and ``report.html``/``report.md``.
"""

from __future__ import annotations

import itertools
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from marginlab import data, kernels, models, regularized
from marginlab.claims import read_claims, render_table_html, render_table_md, write_claims
from marginlab.core import margins
from marginlab.core.losses import get_loss, log_loss_from_logits, log_loss_from_margins, log_sum
from marginlab.errors import MarginlabError
from marginlab.experiments import Experiment, RunRequest, register
from marginlab.experiments.runs import prepare_output
from marginlab.experiments.wei_common import (
    mean_std,
    ms_text,
    numbers,
    pyplot,
    raise_failures,
    run_trials,
    versions,
)
from marginlab.experiments.wei_fig_claims import fig2_claims, fig3_claims, plot_fig3
from marginlab.io.report import Report, fmt
from marginlab.sweep.backends import TrialRecord

__all__ = ["fig2_trial", "fig3_trial", "lambda_path", "run_fig2", "run_fig3", "run_trials",
           "train_gd", "train_lbfgs"]

TASKS = ("logistic", "squared", "cross_entropy")


# ----------------------------------------------------------------------------- training


def lambda_path(start: float, end: float, ratio: float = 10.0) -> list[float]:
    """λ from ``start`` down to ``end``, divided by ``ratio`` at each step (``[end]`` if
    start ≤ end); the last step may be shorter."""
    if not (end > 0 and start > 0 and ratio > 1):
        raise MarginlabError(f"need λ > 0 and ratio > 1, got start {start}, end {end}, "
                             f"ratio {ratio}")
    if start <= end:
        return [float(end)]
    k = math.ceil(math.log(start / end) / math.log(ratio) - 1e-9)
    return [float(start) / ratio ** i for i in range(k)] + [float(end)]


def _norm_sq(model: nn.Module) -> Tensor:
    return sum((p * p).sum() for p in model.parameters())


def _norm_sq_value(model: nn.Module) -> float:
    with torch.no_grad():
        return float(_norm_sq(model))


def _scaled_mean_loss(model: nn.Module, X: Tensor, target: Tensor, task: str,
                      log_scale: float = 0.0) -> Tensor:
    """mean_i loss_i · e^{−log_scale}: logistic (target ±1, one output), squared (real target,
    one output) or cross-entropy (class labels). The classification losses go through
    marginlab.losses in float64 log space, so that losses far below 1e-16 keep their precision
    and dividing by a tiny λ (log_scale = log λ) never overflows on the way."""
    out = model(X)
    if task == "squared":
        return ((out.reshape(-1) - target) ** 2).mean() * math.exp(-log_scale)
    if task == "logistic":
        log_l = log_loss_from_margins(target * out.reshape(-1).double(), "logistic")
    elif task == "cross_entropy":
        log_l = log_loss_from_logits(out, target, "cross_entropy")
    else:
        raise MarginlabError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return torch.exp(log_sum(log_l) - math.log(len(log_l)) - log_scale)


def train_lbfgs(model: nn.Module, X: Tensor, target: Tensor, *, task: str,
                lambdas: Sequence[float], max_iter: int = 100, restarts: int = 3) -> int:
    """Minimize L_λ(Θ) = mean_i loss_i + λ‖Θ‖₂² for each λ in turn (trains ``model`` in place).

    Wei et al., Eq. (3.2) (classification) and Theorem D.5 (squared loss). The objective is
    divided by λ, J = ‖Θ‖² + mean loss / λ, which keeps its value O(log 1/λ) (classification)
    and its norm term O(1) at every λ. Full-batch L-BFGS with strong-Wolfe line search runs for
    ``max_iter`` iterations per λ, each λ starting from the previous solution; at the last λ it
    is restarted (fresh curvature pairs) while it still improves, at most ``restarts`` times.

    Returns:
        The number of objective evaluations.
    """
    params = list(model.parameters())
    evals = 0
    for lam in lambdas:
        log_lam = math.log(lam)

        def closure(log_lam=log_lam):
            nonlocal evals
            evals += 1
            for p in params:
                p.grad = None
            value = _norm_sq(model) + _scaled_mean_loss(model, X, target, task, log_lam)
            value.backward()
            return value

        last = math.inf
        for _ in range(max(1, restarts) if lam == lambdas[-1] else 1):
            opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=50,
                                    tolerance_grad=1e-12, tolerance_change=1e-16,
                                    line_search_fn="strong_wolfe")
            value = float(opt.step(closure).detach())
            if not value < last * (1 - 1e-10):
                break
            last = value
    return evals


def gd_gradient(W: Tensor, A: Tensor, X: Tensor, target: Tensor, task: str,
                lam: float) -> tuple[Tensor, Tensor]:
    """Gradient of L_λ = mean_i loss_i + λ(‖W‖² + ‖A‖²) for f(x) = A relu(Wx) (no biases), in
    closed form: ∂/∂A = G_fᵀ relu(XWᵀ) + 2λA, ∂/∂W = ((G_f A) ∘ 1[XWᵀ > 0])ᵀ X + 2λW, with
    G_f = ∂(mean loss)/∂f: −y σ(−y f)/n (logistic), 2(f − y)/n (squared), (softmax(f) −
    onehot(y))/n (cross-entropy)."""
    H = X @ W.T
    R = torch.relu(H)
    out = R @ A.T
    n = len(X)
    if task == "logistic":
        y = target.reshape(-1, 1).to(out.dtype)
        G = -y * torch.sigmoid(-y * out) / n
    elif task == "squared":
        G = 2 * (out - target.reshape(-1, 1).to(out.dtype)) / n
    elif task == "cross_entropy":
        G = torch.softmax(out, dim=1)
        G[torch.arange(n), target.long()] -= 1
        G = G / n
    else:
        raise MarginlabError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    gA = G.T @ R + 2 * lam * A
    gW = ((G @ A) * (H > 0)).T @ X + 2 * lam * W
    return gW, gA


def train_gd(model: nn.Module, X: Tensor, target: Tensor, *, task: str, lam: float, steps: int,
             lr: float) -> None:
    """Full-batch gradient descent on L_λ(Θ) = mean_i loss_i + λ‖Θ‖₂² for ``steps`` steps with a
    constant learning rate (the procedure of Wei et al., Appendix F.1 and F.2), with the
    closed-form gradient of :func:`gd_gradient` (a two-layer network without biases)."""
    W, A = model.fc1.weight, model.fc2.weight
    if model.fc1.bias is not None or model.fc2.bias is not None:
        raise MarginlabError("train_gd expects a two-layer network without biases")
    with torch.no_grad():
        for _ in range(steps):
            gW, gA = gd_gradient(W, A, X, target, task, lam)
            W.sub_(lr * gW)
            A.sub_(lr * gA)


def _two_layer(d: int, width: int, out_dim: int, seed: int, device: str) -> nn.Module:
    return models.two_layer(d, width, out_dim, bias="none", seed=seed).double().to(device)


def _path_norm(model: nn.Module) -> float:
    """Σ_j |a_j| ‖w_j‖: the ℓ1 norm of the measure the network represents (≤ ‖Θ‖²/2, with
    equality for balanced units, Proposition 4.1)."""
    with torch.no_grad():
        return float((model.fc2.weight.abs().sum(0) * model.fc1.weight.norm(dim=1)).sum())


def _directions(model: nn.Module, d: int, extra: int, seed: int) -> np.ndarray:
    """The network's unit first-layer directions plus ``extra`` uniform ones on S^{d−1}."""
    W = model.fc1.weight.detach().double().cpu().numpy()
    norms = np.linalg.norm(W, axis=1)
    U = W[norms > 0] / norms[norms > 0, None]
    R = np.random.default_rng([int(seed), 7]).standard_normal((extra, d))
    return np.vstack([U, R / np.linalg.norm(R, axis=1, keepdims=True)])


def _fit_two_layer(X: Tensor, target: Tensor, width: int, task: str, s: Mapping,
                   seed: int) -> tuple[nn.Module, int]:
    """A width-``width`` network trained on the weakly regularized ``task`` loss
    (λ = s["lam"]) with ``s["optimizer"]``; returns the model (on the CPU) and the number of
    objective evaluations (0 for ``gd``)."""
    device = s.get("device", "cpu")
    out_dim = 1 if task != "cross_entropy" else int(target.max()) + 1
    net = _two_layer(X.shape[1], width, out_dim, seed, device)
    Xd, td = X.to(device), target.to(device)
    evals = 0
    if s["optimizer"] == "lbfgs":
        evals = train_lbfgs(net, Xd, td, task=task, max_iter=s["max_iter"],
                            lambdas=lambda_path(s["lam_start"], s["lam"], s["lam_ratio"]))
    elif s["optimizer"] == "gd":
        train_gd(net, Xd, td, task=task, lam=s["lam"], steps=s["steps"], lr=s["lr"])
    else:
        raise MarginlabError(f"optimizer must be 'lbfgs' or 'gd', got {s['optimizer']!r}")
    return net.cpu(), evals


def _certified(net: nn.Module, X: Tensor, y: Tensor, lam: float, U: np.ndarray) -> dict:
    """L_λ of the trained network and its relative distance from the dual lower bound of
    :func:`marginlab.regularized.certificate` over networks with units along ``U``."""
    objective = regularized.regularized_objective(net, X, y, lam)
    cert = regularized.certificate(net, X, y, lam, directions=U)
    return {"objective": objective,
            "objective_gap": (objective - cert.lower_bound) / objective}


def _outputs(model: nn.Module, X: Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(X).reshape(-1).double().numpy()


def _teacher(s: Mapping, seed: int) -> data.TeacherNetwork:
    """The teacher :func:`marginlab.data.load` labels the data with."""
    return data.ground_truth_network(s["d"], s["teacher_hidden"],
                                     seed=seed if s["teacher_seed"] is None else s["teacher_seed"])


def _teacher_path_norm(teacher: data.TeacherNetwork) -> float:
    return float((teacher.a.abs() * teacher.W.norm(dim=1)).sum())


# ----------------------------------------------------------------------------- wei-fig2


def _classification(s: Mapping, n: int, seed: int) -> dict:
    split = data.load("teacher_classification", n_train=n, n_test=s["n_test"], d=s["d"],
                      hidden=s["teacher_hidden"], min_margin=s["min_margin"], seed=seed,
                      teacher_seed=s["teacher_seed"])
    X, y = split.X_train.double(), split.y_train.double()
    Xt, yt = split.X_test.double(), split.y_test.double().numpy()
    Xn, yn = X.numpy(), y.numpy()
    C = float(np.linalg.norm(Xn, axis=1).max())
    teacher = _teacher(s, seed)
    t0 = time.perf_counter()
    net, evals = _fit_two_layer(X, y, n, "logistic", s, seed)
    t_net = time.perf_counter() - t0
    q = yn * _outputs(net, X)
    norm_sq, path = _norm_sq_value(net), _path_norm(net)
    margin = float(q.min()) / norm_sq
    t0 = time.perf_counter()
    svm = kernels.l2_margin(Xn, yn)
    scores = kernels.arccos_kernel(Xt.numpy(), Xn) @ (svm.dual * yn)
    t_kernel = time.perf_counter() - t0
    U = _directions(net, s["d"], s["lp_directions"], seed)
    lp = kernels.l1_margin(Xn, yn, U)
    bound = (kernels.network_margin_bound(margin, C=C, n=n) if margin > 0 else math.inf)
    out = {
        "test_error_net": float(np.mean(np.sign(_outputs(net, Xt)) != yt)),
        "test_error_kernel": float(np.mean(np.sign(scores) != yt)),
        "bound_net": bound,
        "bound_kernel": kernels.kernel_margin_bound(svm.margin, C=C, n=n, d=s["d"]),
        "margin_net": margin,
        "margin_net_balanced": float(q.min()) / (2 * path) if path > 0 else math.nan,
        "margin_kernel": svm.margin,
        "margin_kernel_gap": svm.gap,
        "gamma_l1_lp": lp.margin,
        "bound_l1_lp": (kernels.network_margin_bound(lp.margin / 2, C=C, n=n)
                        if lp.margin > 0 else math.inf),
        "margin_teacher": float(np.min(yn * teacher(X).numpy())) / (
            2 * _teacher_path_norm(teacher)),
        "train_error_net": float(np.mean(q <= 0)),
        "norm_sq_net": norm_sq,
        "C": C,
        "seconds_net": t_net,
        "seconds_kernel": t_kernel,
        "function_evals": evals,
    }
    out.update(_certified(net, X, y, s["lam"], U))
    return out


def _regression(s: Mapping, n: int, seed: int) -> dict:
    split = data.load("teacher_regression", n_train=n, n_test=s["n_test"], d=s["d"],
                      hidden=s["teacher_hidden"], seed=seed, teacher_seed=s["teacher_seed"])
    X, y = split.X_train.double(), split.y_train.double()
    Xt, yt = split.X_test.double(), split.y_test.double().numpy()
    Xn, yn = X.numpy(), y.numpy()
    t0 = time.perf_counter()
    net, evals = _fit_two_layer(X, y, n, "squared", s, seed)
    t_net = time.perf_counter() - t0
    path = _path_norm(net)
    t0 = time.perf_counter()
    interp = kernels.l2_interpolation(Xn, yn)
    t_kernel = time.perf_counter() - t0
    lp = kernels.l1_interpolation(Xn, yn, _directions(net, s["d"], s["lp_directions"], seed))
    return {
        "test_mse_net": float(np.mean((_outputs(net, Xt) - yt) ** 2)),
        "test_mse_kernel": float(np.mean((interp.predict(Xt.numpy()) - yt) ** 2)),
        "bound_net": float(kernels.l1_regression_bound(path, X=Xn)),
        "bound_kernel": float(kernels.l2_regression_bound(interp.norm, X=Xn)),
        "path_norm_net": path,
        "norm_sq_net": _norm_sq_value(net),
        "l1_norm_lp": lp.norm,
        "norm_kernel": interp.norm,
        "teacher_path_norm": _teacher_path_norm(_teacher(s, seed)),
        "train_mse_net": float(np.mean((_outputs(net, X) - yn) ** 2)),
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


def _points(request: RunRequest, key: str, values: Sequence, trials: int,
            extra: Mapping | None = None) -> list[tuple[dict, dict]]:
    """(params, settings) for every value × trial, trial seeds request.seed + k."""
    base = dict(request.settings)
    base.update({"device": request.device,
                 "root": None if request.root is None else str(request.root)})
    base.update(extra or {})
    return [({key: v, "seed": request.seed + k}, {**base, key: v, "seed": request.seed + k})
            for v in values for k in range(trials)]


def _by(records: Sequence[TrialRecord], key: str, value, result_key: str,
        where: Callable[[dict], bool] | None = None) -> list:
    return [r.result.get(result_key) for r in records
            if r.ok and r.params.get(key) == value and (where is None or where(r.result))]


def _fitted(result: dict) -> bool:
    return bool(result.get("fitted"))


def run_fig2(request: RunRequest) -> Path:
    """Figure 2: network vs kernel test error and bounds against the sample size n."""
    s = request.settings
    out = prepare_output(request, "wei-fig2")
    start = time.perf_counter()
    ns = [int(n) for n in s["ns"]]
    records = run_trials(out, fig2_trial, _points(request, "n", ns, s["trials"]),
                         workers=s["workers"], resume=request.resume, desc="wei-fig2")
    wall = time.perf_counter() - start
    scales = _plot_fig2(records, ns, s["tasks"], out / "plots")
    write_claims(out, "wei-fig2", fig2_claims([r for r in records if r.ok], ns, s["tasks"],
                                              request.scale, _trainer_text(s)))
    page = _report_fig2(request, out, records, ns, scales, wall)
    raise_failures(records, out)
    return page


FIG2_PANELS = {
    "classification": ("cls", "test_error", "0-1 test error", "Prop. 3.1 / Lemma 4.2"),
    "regression": ("reg", "test_mse", "squared test error", "Lemma D.8 / Lemma D.9"),
}


def _curve(records, ns, key):
    stats = [mean_std(numbers(_by(records, "n", n, key))) for n in ns]
    return np.array([m for m, _, _ in stats]), np.array([sd for _, sd, _ in stats])


def _plot_fig2(records, ns, tasks, plots: Path) -> dict[str, float]:
    """Figure 2 (errors and scaled bounds against n) and the margins/norms behind the bounds.

    Returns the constant each panel's bounds were multiplied by."""
    plt = pyplot()
    plots.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in FIG2_PANELS if t in tasks]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.8), squeeze=False)
    scales = {}
    for ax, task in zip(axes[0], tasks):
        prefix, err, ylabel, lemmas = FIG2_PANELS[task]
        curves = {m: _curve(records, ns, f"{prefix}_{err}_{m}") for m in ("net", "kernel")}
        bounds = {m: _curve(records, ns, f"{prefix}_bound_{m}") for m in ("net", "kernel")}
        top_err = max(np.nanmax(c[0]) for c in curves.values())
        top_bound = max(np.nanmax(b[0]) for b in bounds.values())
        c = top_err / top_bound if top_bound > 0 and math.isfinite(top_bound) else math.nan
        scales[task] = c
        for m, label, color in (("net", "two-layer network", "C0"),
                                ("kernel", "ℓ2 kernel (ReLU features)", "C3")):
            mean, std = curves[m]
            ax.errorbar(ns, mean, yerr=std, fmt="o-", color=color, capsize=3, ms=5,
                        label=f"{label}: test error")
            ax.plot(ns, bounds[m][0] * c, "--", marker="s", ms=4, color=color, alpha=0.8,
                    label=f"{label}: bound × {c:.2g}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("n (training samples; network width = n)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{task}: test error (mean ± std over trials)\n"
                     f"dashed: {lemmas} leading terms × one constant", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plots / "fig2.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        if task == "classification":
            lines = [("cls_margin_net", "network q_min/‖Θ‖²", "C0o-"),
                     ("cls_gamma_l1_lp", "γ_ℓ1/2, LP on own + random directions", "C2^-"),
                     ("cls_margin_teacher", "teacher q_min/‖Θ*‖² (balanced)", "C7v:"),
                     ("cls_margin_kernel", "γ_ℓ2 (kernel SVM)", "C3s-")]
            ylabel = "normalized margin"
        else:
            lines = [("reg_path_norm_net", "network Σ|a_j|‖w_j‖", "C0o-"),
                     ("reg_l1_norm_lp", "min ℓ1 interpolation, LP", "C2^-"),
                     ("reg_teacher_path_norm", "teacher Σ|a_j|‖w_j‖", "C7v:"),
                     ("reg_norm_kernel", "√κ‖α_ℓ2‖ (kernel interpolation)", "C3s-")]
            ylabel = "norm of the interpolant"
        for key, label, style in lines:
            mean, std = _curve(records, ns, key)
            if key == "cls_gamma_l1_lp":
                mean, std = mean / 2, std / 2
            ax.errorbar(ns, mean, yerr=std, fmt=style, capsize=3, ms=5, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("n")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{task}: the quantities in the bounds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plots / "fig2_margins.png", dpi=120)
    plt.close(fig)
    return scales


def _settings_block(rep: Report, s: Mapping) -> None:
    rep.heading("Settings")
    rep.code("\n".join(f"{k} = {v}" for k, v in {**dict(s), **versions()}.items()))


def _trainer_text(s: Mapping, prefix: str = "") -> str:
    opt = s[f"{prefix}optimizer"]
    lam = s[f"{prefix}lam"]
    if opt == "lbfgs":
        path = lambda_path(s[f"{prefix}lam_start"], lam, s[f"{prefix}lam_ratio"])
        return (f"full-batch L-BFGS on L_λ/λ (float64) with λ = "
                f"{', '.join(f'{v:g}' for v in path)} in turn, each solve ≤ "
                f"{s[f'{prefix}max_iter']} iterations from the previous one (the last restarted "
                f"while it improves)")
    if opt == "gd":
        return (f"full-batch gradient descent for {s[f'{prefix}steps']} steps at lr "
                f"{s[f'{prefix}lr']:g} on the mean loss + λ‖Θ‖², λ = {lam:g}")
    return (f"SGD (marginlab.train.fit, batch {s[f'{prefix}batch_size']}, no momentum) for "
            f"{s[f'{prefix}epochs']} epochs at lr {s[f'{prefix}lr']:g}, weight decay λ = {lam:g}")


def _report_fig2(request, out, records, ns, scales, wall) -> Path:
    s = request.settings
    ok = [r for r in records if r.ok]
    teacher = ("a new teacher per trial" if s["teacher_seed"] is None
               else f"one teacher, seed {s['teacher_seed']}")
    rep = Report("wei-fig2: two-layer networks vs kernel methods as n grows (Wei et al., "
                 "Figure 2)")
    rep.paragraph(
        "Paper (Section 6, Appendix F.1): 'The plots show that two-layer networks clearly "
        "outperform kernel methods in test error as n grows. However, there seems to be "
        "looseness in the bounds: the kernel generalization bound appears to stay constant with "
        "n (as predicted by our theory for regression), but the test error decreases.' The "
        "paper gives the figure only (no table of numbers); its setup: teacher with 6 hidden "
        "units, d = 20, classification inputs kept if the teacher's margin is ≥ 0.1, network "
        "width = n, λ = 1e-8, 20000 training steps, 100 trials per point.")
    if request.scale == "cpu":
        rep.paragraph(
            f"CPU scale: n ∈ {ns} with {s['trials']} trials per point (the paper: 100), test "
            f"sets of {s['n_test']} points, and the networks trained by {_trainer_text(s)}. "
            "The claim rests on the paired difference at the largest n with its standard "
            "error; the paper scale (n to 640, 100 trials) is runnable with --scale paper.",
            note=True)
    rep.paragraph(
        f"Data: teacher with {s['teacher_hidden']} hidden units (unit-norm directions uniform on "
        f"the sphere, output weights ±1; {teacher}), "
        f"inputs uniform on the unit sphere S^{s['d'] - 1} (so C = max‖x‖ = 1), classification "
        f"labels sign f*(x) kept when |f*(x)| ≥ {s['min_margin']}, regression targets f*(x) "
        f"without noise. Network: f(x) = Σ_j a_j relu(w_jᵀx), width n, no biases, He-normal "
        f"start, trained by {_trainer_text(s)}. Kernel: the exact arc-cosine kernel "
        "K̄(x, x') = E_u relu(uᵀx) relu(uᵀx') (the limit of infinitely many ReLU features): "
        "hard-margin SVM without bias (classification), minimum-norm interpolation "
        f"(regression). Trial seeds {request.seed}…{request.seed + s['trials'] - 1}. Wall time "
        f"{wall:.0f} s on {platform.machine()} CPU, {s['workers']} worker process(es).")
    claims = read_claims(out)
    rep.heading("Claims")
    rep.raw(render_table_html(claims), render_table_md(claims))
    rep.image("plots/fig2.png", "Figure 2: test error and bounds vs n")
    notes = []
    for task, c in scales.items():
        notes.append(f"{task}: × {c:.3g}")
    rep.paragraph(
        "How the bounds are drawn: each is the leading term of its lemma (Prop. 3.1: "
        "C/(γ √2 √n) with γ = q_min/‖Θ‖²; Lemma 4.2: C/(γ_ℓ2 √(d n)); Lemma D.8: "
        "12 max(1, ‖α‖₁ ‖X‖_F)/n with ‖α‖₁ = Σ|a_j|‖w_j‖ of the network; Lemma D.9: "
        "max(1, √κ‖α_ℓ2‖ ‖X‖_F)/(n √d), up to its universal constant). These are far above 1, "
        "so in each panel both methods' bounds are multiplied by ONE constant (chosen so that "
        "the largest mean bound equals the largest mean test error): the ratio between the two "
        "methods and the trend in n are kept, the absolute value is not. Constants: "
        + "; ".join(notes) + ". The raw values are in the tables. For regression the two "
        "terms are not on a common footing (Lemma D.8 carries its constant 12, Lemma D.9 is "
        "stated up to an unnamed universal constant): compare their trends in n only.")
    if "classification" in s["tasks"]:
        rows = []
        for n in ns:
            g = lambda k, n=n: numbers(_by(ok, "n", n, k))  # noqa: E731
            rows.append([n, ms_text(g("cls_test_error_net")),
                         ms_text(g("cls_test_error_kernel")),
                         ms_text(g("cls_bound_net")), ms_text(g("cls_bound_kernel")),
                         ms_text(g("cls_margin_net")),
                         ms_text([v / 2 for v in g("cls_gamma_l1_lp")]),
                         ms_text(g("cls_margin_kernel")), ms_text(g("cls_train_error_net")),
                         len(g("cls_test_error_net"))])
        rep.heading("Classification (mean ± std over trials)")
        rep.table(["n", "test error, network", "test error, kernel", "bound, network",
                   "bound, kernel", "γ network", "γ_ℓ1/2 (LP, lower bd)", "γ_ℓ2 kernel",
                   "train error, network", "trials"], rows)
    if "regression" in s["tasks"]:
        rows = []
        for n in ns:
            g = lambda k, n=n: numbers(_by(ok, "n", n, k))  # noqa: E731
            rows.append([n, ms_text(g("reg_test_mse_net")), ms_text(g("reg_test_mse_kernel")),
                         ms_text(g("reg_test_mse_zero")), ms_text(g("reg_bound_net")),
                         ms_text(g("reg_bound_kernel")), ms_text(g("reg_path_norm_net")),
                         ms_text(g("reg_l1_norm_lp")), ms_text(g("reg_norm_kernel")),
                         ms_text(g("reg_train_mse_net")), len(g("reg_test_mse_net"))])
        rep.heading("Regression (mean ± std over trials)")
        rep.table(["n", "test MSE, network", "test MSE, kernel", "test MSE of 0",
                   "bound, network", "bound, kernel", "Σ|a_j|‖w_j‖ network",
                   "min ℓ1 norm (LP)", "√κ‖α_ℓ2‖ kernel", "train MSE, network", "trials"],
                  rows)
    rep.heading("Checks against the paper's statements")
    for line in _fig2_checks(ok, ns, s["tasks"]):
        rep.paragraph(line, note=True)
    rep.image("plots/fig2_margins.png", "margins and norms vs n")
    rep.paragraph(
        "γ_ℓ1/2 (LP) is the ℓ1-SVM (Eq. (4.2)) over the network's own unit directions plus "
        f"{s['lp_directions']} uniformly random ones, halved: a lower bound on the max "
        "normalized margin γ*,n = γ_ℓ1/2 (Proposition 4.1) and, since the network is one of its "
        "candidates, never below the network's own margin. 'min ℓ1 norm (LP)' is the minimum-ℓ1 "
        "interpolation (Eq. (D.3)) over the same directions, an upper bound on the continuum "
        "minimum. When they match the network's values, the network's output weights are "
        "optimal for its own directions; in d = 20 random directions rarely improve on them, so "
        "this does not certify that the directions themselves are globally optimal.")
    _settings_block(rep, s)
    return rep.write(out)


def _fig2_checks(ok, ns, tasks) -> list[str]:
    lines = []
    for task in (t for t in FIG2_PANELS if t in tasks):
        prefix, err, _, _ = FIG2_PANELS[task]
        net = [mean_std(numbers(_by(ok, "n", n, f"{prefix}_{err}_net")))[0] for n in ns]
        ker = [mean_std(numbers(_by(ok, "n", n, f"{prefix}_{err}_kernel")))[0] for n in ns]
        bn = [mean_std(numbers(_by(ok, "n", n, f"{prefix}_bound_net")))[0] for n in ns]
        bk = [mean_std(numbers(_by(ok, "n", n, f"{prefix}_bound_kernel")))[0] for n in ns]
        wins = sum(a < b for a, b in zip(net, ker))
        lines.append(
            f"{task}: the network's mean test error is below the kernel's at {wins} of "
            f"{len(ns)} sample sizes; at the largest n = {ns[-1]}: {fmt(net[-1], 3)} vs "
            f"{fmt(ker[-1], 3)} (ratio {fmt(net[-1] / ker[-1], 3) if ker[-1] else '–'}). "
            f"Test error from n = {ns[0]} to {ns[-1]}: network ×{fmt(net[-1] / net[0], 3)}, "
            f"kernel ×{fmt(ker[-1] / ker[0], 3)}; leading bound terms: network "
            f"×{fmt(bn[-1] / bn[0], 3)}, kernel ×{fmt(bk[-1] / bk[0], 3)}.")
    return lines


# ----------------------------------------------------------------------------- wei-fig3


def _fig3_synthetic(s: Mapping, width: int, seed: int) -> dict:
    split = data.load("teacher_classification", n_train=s["n"], n_test=s["n_test"], d=s["d"],
                      hidden=s["teacher_hidden"], min_margin=s["min_margin"], seed=seed,
                      teacher_seed=s["teacher_seed"])
    X, y = split.X_train.double(), split.y_train.double()
    Xt, yt = split.X_test.double(), split.y_test.double().numpy()
    net, evals = _fit_two_layer(X, y, width, "logistic", s, seed)
    q = y.numpy() * _outputs(net, X)
    norm_sq = _norm_sq_value(net)
    U = _directions(net, s["d"], s["lp_directions"], seed)
    lp = kernels.l1_margin(X.numpy(), y.numpy(), U)
    return {"test_error": float(np.mean(np.sign(_outputs(net, Xt)) != yt)),
            "normalized_margin": float(q.min()) / norm_sq,
            "train_error": float(np.mean(q <= 0)),
            "gamma_l1_lp": lp.margin, "q_min": float(q.min()), "norm_sq": norm_sq,
            "path_norm": _path_norm(net), "function_evals": evals,
            **_certified(net, X, y, s["lam"], U)}


def _fig3_mnist(s: Mapping, width: int, seed: int) -> dict:
    split = data.load(s["mnist_data"], s.get("root"), n_train=s["mnist_n_train"],
                      n_test=s["mnist_n_test"], flatten=True)
    device = s.get("device", "cpu")
    d = split.X_train.shape[1]
    if s["mnist_optimizer"] == "sgd":
        from marginlab.train import ConstantLR, WeightDecay, fit

        net = models.two_layer(d, width, split.num_classes, bias="none", seed=seed)
        res = fit(net, split.train, split.test, schedule=ConstantLR(s["mnist_lr"]),
                  epochs=s["mnist_epochs"], batch_size=s["mnist_batch_size"],
                  weight_decay=WeightDecay(s["mnist_lam"]), seed=seed, device=device,
                  progress=False)
        last = res.last
        return {"test_error": 1.0 - last["test_acc"], "normalized_margin":
                last["normalized_margin"], "train_error": 1.0 - last["train_acc"],
                "q_min": last["q_min"], "norm_sq": last["rho"] ** 2,
                "path_norm": _path_norm(net.double().cpu())}
    if s["mnist_optimizer"] != "lbfgs":
        raise MarginlabError(f"mnist_optimizer must be 'lbfgs' or 'sgd', got "
                             f"{s['mnist_optimizer']!r}")
    net = _two_layer(d, width, split.num_classes, seed, device)
    X, y = split.X_train.double().to(device), split.y_train.to(device)
    evals = train_lbfgs(net, X, y, task="cross_entropy", max_iter=s["mnist_max_iter"],
                        lambdas=lambda_path(s["mnist_lam_start"], s["mnist_lam"],
                                            s["mnist_lam_ratio"]))
    net = net.cpu()
    stats = margins.measure(net, split.X_train.double(), split.y_train, get_loss("cross_entropy"))
    with torch.no_grad():
        test_pred = net(split.X_test.double()).argmax(1)
    return {"test_error": float((test_pred != split.y_test).double().mean()),
            "normalized_margin": stats.normalized_margin, "train_error": 1.0 - stats.train_acc,
            "q_min": stats.q_min, "norm_sq": stats.rho ** 2, "path_norm": _path_norm(net),
            "log10_loss_mean": stats.log10_loss_mean, "function_evals": evals}


def fig3_trial(settings: Mapping) -> dict:
    """One point of Figure 3: hidden width ``width`` on ``part`` (``synthetic`` or ``mnist``),
    one seed (teacher, data and initialization on synthetic data; initialization on MNIST)."""
    s, width, seed = settings, int(settings["width"]), int(settings["seed"])
    t0 = time.perf_counter()
    if s["part"] == "synthetic":
        out = _fig3_synthetic(s, width, seed)
    elif s["part"] == "mnist":
        out = _fig3_mnist(s, width, seed)
    else:
        raise MarginlabError(f"part must be 'synthetic' or 'mnist', got {s['part']!r}")
    out["fitted"] = out["train_error"] == 0.0
    out["seconds"] = time.perf_counter() - t0
    return out


def run_fig3(request: RunRequest) -> Path:
    """Figure 3: test error and normalized margin against the hidden width."""
    s = request.settings
    out = prepare_output(request, "wei-fig3")
    start = time.perf_counter()
    widths = {"synthetic": [int(w) for w in s["widths"]],
              "mnist": [int(w) for w in s["mnist_widths"]]}
    points = (_points(request, "width", widths["synthetic"], s["trials"], {"part": "synthetic"})
              + _points(request, "width", widths["mnist"], s["mnist_trials"], {"part": "mnist"}))
    for params, settings in points:
        params["part"] = settings["part"]
    records = run_trials(out, fig3_trial, points, workers=s["workers"], resume=request.resume,
                         desc="wei-fig3")
    wall = time.perf_counter() - start
    checks = {part: _monotone(records, part, ws) for part, ws in widths.items() if ws}
    plot_fig3(records, widths, out / "plots" / "fig3.png")
    trainers = {"synthetic": _trainer_text(s), "mnist": _trainer_text(s, "mnist_")}
    write_claims(out, "wei-fig3", fig3_claims(records, widths, request.scale, trainers))
    page = _report_fig3(request, out, records, widths, checks, wall)
    raise_failures(records, out)
    return page


def _part(records, part):
    return [r for r in records if r.ok and r.params.get("part") == part]


def _monotone(records, part: str, widths: Sequence[int], rel_tol: float = 1e-3) -> dict:
    """Theorem 3.3 check on the trained networks: does the normalized margin fall as the width
    grows? Counted three ways: between consecutive fitted widths of one seed (same data); in
    the mean over the seeds fitted at every width; in the mean over whichever trials fitted at
    each width (the paper's averaging, whose sets of trials differ between widths)."""
    rs = _part(records, part)

    worst = 0.0

    def drops(values, track=True):
        nonlocal worst
        pairs = [(a, b) for a, b in itertools.pairwise(values)
                 if math.isfinite(a) and math.isfinite(b)]
        if track:
            worst = max([worst, *((a - b) / abs(a) for a, b in pairs if a)])
        return sum(b < a * (1 - rel_tol) for a, b in pairs), len(pairs)

    per_seed = {}
    for seed in sorted({r.params["seed"] for r in rs}):
        by_w = {r.params["width"]: r.result for r in rs if r.params["seed"] == seed}
        per_seed[seed] = [by_w[w]["normalized_margin"] if w in by_w and by_w[w]["fitted"]
                          else math.nan for w in widths]
    seed_drops = seed_pairs = 0
    for values in per_seed.values():
        fitted = [v for v in values if math.isfinite(v)]
        d, p = drops(fitted)
        seed_drops, seed_pairs = seed_drops + d, seed_pairs + p
    common = [v for v in per_seed.values() if all(math.isfinite(x) for x in v)]
    common_means = list(np.mean(common, axis=0)) if common else [math.nan] * len(widths)
    fitted_means = [mean_std(numbers(_by(rs, "width", w, "normalized_margin", _fitted)))[0]
                    for w in widths]
    return {"seed_drops": seed_drops, "seed_pairs": seed_pairs,
            "common_seeds": len(common), "common_drops": drops(common_means)[0],
            "fitted_drops": drops(fitted_means, False)[0],
            "fitted_pairs": drops(fitted_means, False)[1],
            "largest_drop": worst, "rel_tol": rel_tol}


def _report_fig3(request, out, records, widths, checks, wall) -> Path:
    s = request.settings
    rep = Report("wei-fig3: test error and normalized margin vs hidden width (Wei et al., "
                 "Figure 3)")
    rep.paragraph(
        "Paper (Section 6, Appendix F.2): 'The plots indicate that test error is decreasing in "
        "hidden layer size while margin is increasing, as Theorem 3.3 predicts.' Theorem 3.3: "
        "the maximum normalized margin γ*,M is non-decreasing in the architecture's widths. "
        "Paper setup: synthetic — teacher with 10 hidden units, d = 20, teacher margin ≥ 0.01, "
        "widths 2^4…2^10, 80000 steps at lr 0.1, λ = 1e-5, 20 trials, averaged over trials that "
        "fit the training data; MNIST — widths 2^6…2^15, 600 epochs at lr 0.01, λ = 1e-6, one "
        "trial per width. No numbers are given besides the figure.")
    if request.scale == "cpu":
        rep.paragraph(
            f"CPU scale: synthetic widths {widths['synthetic']} with {s['trials']} trials each "
            f"on n = {s['n']} training points; MNIST widths {widths['mnist']} with "
            f"{s['mnist_trials']} trial(s) each on {s['mnist_n_train']} images of "
            f"{s['mnist_data']} (the bundled 5000-image subset), not full MNIST; the optimizers "
            "are stated below. The claims rest on slopes across widths with their standard "
            "errors; the paper scale (20 trials, widths to 1024, 80000 GD steps; MNIST "
            "2^6…2^15 with SGD for 600 epochs) is runnable with --scale paper.", note=True)
    rep.paragraph(
        f"Synthetic: the paper does not state the number of training points; here n = "
        f"{s['n']}, test sets of {s['n_test']}, inputs uniform on the unit sphere, teacher "
        f"directions uniform and output weights ±1, trained by {_trainer_text(s)}. MNIST: "
        f"two-layer networks 784-width-10 without biases, cross-entropy, trained by "
        f"{_trainer_text(s, 'mnist_')}. Normalized margin: q_min/‖Θ‖² (multi-class q = "
        f"f_y − max_{{j≠y}} f_j). Wall time {wall:.0f} s on {platform.machine()} CPU, "
        f"{s['workers']} worker process(es).")
    claims = read_claims(out)
    rep.heading("Claims")
    rep.raw(render_table_html(claims), render_table_md(claims))
    rep.image("plots/fig3.png", "Figure 3: test error and margin vs width")
    for part in ("synthetic", "mnist"):
        if not widths[part]:
            continue
        rs = _part(records, part)
        rows = []
        for w in widths[part]:
            g = lambda k, w=w: numbers(_by(rs, "width", w, k, _fitted))  # noqa
            n_all = len(_by(rs, "width", w, "fitted"))
            row = [w, f"{len(g('test_error'))} of {n_all}", ms_text(g("test_error")),
                   ms_text(g("normalized_margin"), 4), ms_text(g("norm_sq"))]
            if part == "synthetic":
                row.append(ms_text([v / 2 for v in g("gamma_l1_lp")], 4))
            rows.append(row)
        rep.heading(f"{part} (mean ± std over trials that fit the training data)")
        headers = ["width", "fitted trials", "test error", "normalized margin", "‖Θ‖²"]
        if part == "synthetic":
            headers.append("γ_ℓ1/2 (LP lower bound)")
        rep.table(headers, rows)
        c = checks[part]
        bad = c["seed_drops"] + c["common_drops"]
        verdict = ("holds" if not bad else
                   f"holds except at {bad} step(s), the largest decrease "
                   f"{100 * c['largest_drop']:.2g}%")
        rep.paragraph(
            f"Theorem 3.3 check ({part}), trained margin non-decreasing in width: {verdict}. "
            f"Within single seeds (same data), {c['seed_drops']} of {c['seed_pairs']} steps "
            f"between consecutive fitted widths decrease by more than {c['rel_tol']:g} "
            f"relative; the mean over the {c['common_seeds']} seed(s) fitted at every width "
            f"decreases at {c['common_drops']} step(s); the mean over fitted trials (the "
            f"paper's averaging, a different set of trials at each width) at "
            f"{c['fitted_drops']} of {c['fitted_pairs']}. The theorem is about the maximum "
            "margin; a trained network reaches it only approximately, so a small decrease "
            "points at the optimizer, not at the theorem.", note=True)
        errs = [mean_std(numbers(_by(rs, "width", w, "test_error", _fitted)))[0]
                for w in widths[part]]
        finite = [e for e in errs if math.isfinite(e)]
        if len(finite) >= 2:
            rep.paragraph(f"Test error ({part}) from the narrowest to the widest fitted width: "
                          f"{fmt(finite[0], 3)} → {fmt(finite[-1], 3)}.", note=True)
    rep.paragraph(
        "At the optimum of L_λ, widths beyond the number of units the solution needs change "
        "nothing (at width ≥ n the max margin already equals the infinite-width one, "
        "Proposition 4.1), so the margin is expected to rise over the narrow widths and then "
        "level off; rises beyond that come from the optimizer finding better stationary points "
        "with more units.")
    if widths["synthetic"]:
        rep.paragraph(
            "γ_ℓ1/2 (LP) is the ℓ1-SVM over the network's own directions plus "
            f"{s['lp_directions']} random ones, halved: a lower bound on the width-∞ (= width-n) "
            "max normalized margin of Proposition 4.1; a network's margin is never above it.")
    _settings_block(rep, s)
    return rep.write(out)


# ----------------------------------------------------------------------------- registry

# Settings shared by the trials (names as in the module docstring): ``n``/``width`` and ``part``
# are the point one trial runs (what ``marginlab sweep`` varies); ``ns``/``widths`` and
# ``trials`` are what ``reproduce`` runs. ``lbfgs`` uses lam_start, lam_ratio and max_iter;
# ``gd`` uses steps and lr; ``sgd`` (MNIST) uses epochs, lr and batch_size.
FIG2_SCALES = {
    "cpu": {
        "ns": [20, 40, 80, 160], "n": 40, "trials": 10,
        "tasks": ["classification", "regression"],
        "d": 20, "teacher_hidden": 6, "teacher_seed": None, "min_margin": 0.1, "n_test": 2000,
        "lam": 1e-8, "optimizer": "gd", "lam_start": 1e-3, "lam_ratio": 10.0,
        "max_iter": 300, "steps": 20000, "lr": 0.1, "lp_directions": 2000, "workers": 2,
    },
    "paper": {
        "ns": [20, 40, 80, 160, 320, 640], "n": 40, "trials": 100,
        "tasks": ["classification", "regression"], "d": 20, "teacher_hidden": 6,
        "teacher_seed": None, "min_margin": 0.1, "n_test": 10000, "lam": 1e-8,
        "optimizer": "gd", "lam_start": 1e-3, "lam_ratio": 10.0, "max_iter": 300,
        "steps": 20000, "lr": 0.1, "lp_directions": 5000, "workers": 2,
    },
}

_MNIST_CPU = {
    "mnist_widths": [16, 32, 64, 128, 256], "mnist_trials": 1, "mnist_data": "mnist5k",
    "mnist_n_train": 500, "mnist_n_test": 1000, "mnist_lam": 1e-6, "mnist_optimizer": "lbfgs",
    "mnist_lam_start": 1e-2, "mnist_lam_ratio": 10.0, "mnist_max_iter": 100,
    "mnist_epochs": 600, "mnist_lr": 0.01, "mnist_batch_size": 100,
}

FIG3_SCALES = {
    "cpu": {
        "part": "synthetic", "width": 64, "widths": [8, 16, 32, 64, 128, 256], "trials": 6,
        "n": 200, "n_test": 2000, "d": 20, "teacher_hidden": 10, "teacher_seed": None,
        "min_margin": 0.01, "lam": 1e-5, "optimizer": "gd", "lam_start": 1e-3,
        "lam_ratio": 10.0, "max_iter": 100, "steps": 20000, "lr": 0.1, "lp_directions": 2000,
        **_MNIST_CPU, "workers": 2,
    },
    "paper": {
        "part": "synthetic", "width": 64, "widths": [2 ** i for i in range(4, 11)],
        "trials": 20, "n": 1000, "n_test": 10000, "d": 20, "teacher_hidden": 10,
        "teacher_seed": None, "min_margin": 0.01, "lam": 1e-5, "optimizer": "gd",
        "lam_start": 1e-3, "lam_ratio": 10.0, "max_iter": 300, "steps": 80000, "lr": 0.1,
        "lp_directions": 5000,
        **_MNIST_CPU, "mnist_widths": [2 ** i for i in range(6, 16)], "mnist_data": "mnist",
        "mnist_n_train": None, "mnist_n_test": None, "mnist_optimizer": "sgd",
        "workers": 2,
    },
}

register(Experiment(
    id="wei-fig2",
    title="Two-layer network vs ℓ2 kernel method: test error and bounds vs n",
    reference="Wei, Lee, Liu & Ma, Figure 2, Appendix F.1",
    scales=FIG2_SCALES,
    run=run_fig2,
    trial=fig2_trial,
    grid={"cpu": {"n": [20, 40, 80, 160]}, "paper": {"n": [20, 40, 80, 160, 320, 640]}},
))

register(Experiment(
    id="wei-fig3",
    title="Test error and normalized margin vs hidden width (synthetic and MNIST)",
    reference="Wei, Lee, Liu & Ma, Figure 3, Appendix F.2, Theorem 3.3",
    scales=FIG3_SCALES,
    run=run_fig3,
    trial=fig3_trial,
    grid={"cpu": {"width": [8, 16, 32, 64, 128, 256]},
          "paper": {"width": [2 ** i for i in range(4, 11)]}},
))
