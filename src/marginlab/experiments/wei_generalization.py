"""Training the two-layer networks of Wei, Lee, Liu & Ma's Figures 2 and 3, and what both
figures' trials share (the experiments are :mod:`.wei_fig2` and :mod:`.wei_fig3`).

Networks f(x) = Σ_j a_j relu(w_jᵀx) are trained on the weakly regularized loss
L_λ(Θ) = mean_i loss_i + λ‖Θ‖₂² either as the paper did (``gd``: full-batch gradient descent for
a fixed number of steps, :func:`train_gd`; ``sgd`` on MNIST through
:func:`marginlab.train.fit`) or towards the minimizer of L_λ that the theory is about
(``lbfgs``: full-batch L-BFGS on L_λ/λ along a decreasing λ path, :func:`train_lbfgs`). Binary
classifiers are then checked with the dual certificate of
:mod:`marginlab.twolayer.regularized` and the ℓ1-SVM of :mod:`marginlab.twolayer.margins` over
their own and random directions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from marginlab import data, models
from marginlab.core.losses import log_loss_from_logits, log_loss_from_margins, log_sum
from marginlab.errors import MarginlabError
from marginlab.experiments import RunRequest
from marginlab.experiments.wei_common import settings_block
from marginlab.sweep.backends import TrialRecord
from marginlab.twolayer import regularized

__all__ = ["certified", "directions", "fit_two_layer", "gd_gradient", "is_fitted",
           "lambda_path", "outputs", "path_norm", "results_where", "settings_block",
           "teacher_of", "teacher_path_norm", "train_gd", "train_lbfgs", "trainer_text",
           "trial_points"]

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


def norm_sq_value(model: nn.Module) -> float:
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


def two_layer_net(d: int, width: int, out_dim: int, seed: int, device: str) -> nn.Module:
    return models.two_layer(d, width, out_dim, bias="none", seed=seed).double().to(device)


def path_norm(model: nn.Module) -> float:
    """Σ_j |a_j| ‖w_j‖: the ℓ1 norm of the measure the network represents (≤ ‖Θ‖²/2, with
    equality for balanced units, Proposition 4.1)."""
    with torch.no_grad():
        return float((model.fc2.weight.abs().sum(0) * model.fc1.weight.norm(dim=1)).sum())


def directions(model: nn.Module, d: int, extra: int, seed: int) -> np.ndarray:
    """The network's unit first-layer directions plus ``extra`` uniform ones on S^{d−1}."""
    W = model.fc1.weight.detach().double().cpu().numpy()
    norms = np.linalg.norm(W, axis=1)
    U = W[norms > 0] / norms[norms > 0, None]
    R = np.random.default_rng([int(seed), 7]).standard_normal((extra, d))
    return np.vstack([U, R / np.linalg.norm(R, axis=1, keepdims=True)])


def fit_two_layer(X: Tensor, target: Tensor, width: int, task: str, s: Mapping,
                   seed: int) -> tuple[nn.Module, int]:
    """A width-``width`` network trained on the weakly regularized ``task`` loss
    (λ = s["lam"]) with ``s["optimizer"]``; returns the model (on the CPU) and the number of
    objective evaluations (0 for ``gd``)."""
    device = s.get("device", "cpu")
    out_dim = 1 if task != "cross_entropy" else int(target.max()) + 1
    net = two_layer_net(X.shape[1], width, out_dim, seed, device)
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


def certified(net: nn.Module, X: Tensor, y: Tensor, lam: float, U: np.ndarray) -> dict:
    """L_λ of the trained network and its relative distance from the dual lower bound of
    :func:`marginlab.twolayer.regularized.certificate` over networks with units along ``U``."""
    objective = regularized.regularized_objective(net, X, y, lam)
    cert = regularized.certificate(net, X, y, lam, directions=U)
    return {"objective": objective,
            "objective_gap": (objective - cert.lower_bound) / objective}


def outputs(model: nn.Module, X: Tensor) -> np.ndarray:
    with torch.no_grad():
        return model(X).reshape(-1).double().numpy()


def teacher_of(s: Mapping, seed: int) -> data.TeacherNetwork:
    """The teacher :func:`marginlab.data.load` labels the data with."""
    return data.ground_truth_network(s["d"], s["teacher_hidden"],
                                     seed=seed if s["teacher_seed"] is None else s["teacher_seed"])


def teacher_path_norm(teacher: data.TeacherNetwork) -> float:
    return float((teacher.a.abs() * teacher.W.norm(dim=1)).sum())


def trial_points(request: RunRequest, key: str, values: Sequence, trials: int,
            extra: Mapping | None = None) -> list[tuple[dict, dict]]:
    """(params, settings) for every value × trial, trial seeds request.seed + k."""
    base = dict(request.settings)
    base.update({"device": request.device,
                 "root": None if request.root is None else str(request.root)})
    base.update(extra or {})
    return [({key: v, "seed": request.seed + k}, {**base, key: v, "seed": request.seed + k})
            for v in values for k in range(trials)]


def results_where(records: Sequence[TrialRecord], key: str, value, result_key: str,
        where: Callable[[dict], bool] | None = None) -> list:
    return [r.result.get(result_key) for r in records
            if r.ok and r.params.get(key) == value and (where is None or where(r.result))]


def is_fitted(result: dict) -> bool:
    return bool(result.get("fitted"))


def trainer_text(s: Mapping, prefix: str = "") -> str:
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

