"""Weakly regularized two-layer ReLU networks, trained, and certified against the global optimum.

Wei, Lee, Liu & Ma, Section 2 (binary form, Appendix A.2):

    L_λ(Θ) = (1/n) Σ_i ℓ(y_i f(Θ; x_i)) + λ‖Θ‖₂²,  ℓ(q) = log(1 + e^{−q}),

for f(x) = Σ_j a_j relu(u_jᵀx̃) with x̃ = x, or x̃ = (x, 1) when the first layer has a bias
(u_j = (w_j, b_j)). As λ → 0 the normalized margin q_min/‖Θ‖² of the minimizer tends to the
max normalized margin γ_ℓ1/2 (Theorem A.3, Proposition 4.1).

min L_λ equals the optimum of the convex problem of :mod:`marginlab.twolayer.convex`, whose dual
bounds the loss of every network: :func:`certificate` evaluates it at the network's own
β_i = σ(−q_i) (exact over the circle for 1-D inputs with a bias; otherwise over a finite
direction set). The exact 1-D solver and the kink-aware 1-D trainer are in
:mod:`marginlab.twolayer.onedim`.

Losses are carried in log space with :mod:`marginlab.core.losses` and everything runs in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from marginlab.core.losses import log_sum
from marginlab.errors import MarginlabError
from marginlab.twolayer.convex import _LOGISTIC, Certificate, _sigmoid_neg, dual_bound
from marginlab.twolayer.features import relu_features, signs
from marginlab.twolayer.pricing import sup_ratio

__all__ = [
    "Certificate",
    "RegularizedResult",
    "certificate",
    "compress_measure",
    "load_measure",
    "regularized_objective",
    "train",
]


def _layers(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    fc1, fc2 = getattr(model, "fc1", None), getattr(model, "fc2", None)
    if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)) or hasattr(model, "fc3"):
        raise MarginlabError("expected a two-layer network (models.two_layer) with fc1 and fc2")
    if fc2.out_features != 1 or fc2.bias is not None:
        raise MarginlabError("expected one output and no output bias (bias='none' or 'first')")
    return fc1, fc2


def _lifted(model: nn.Module, X: np.ndarray) -> np.ndarray:
    fc1, _ = _layers(model)
    X = X.reshape(len(X), -1)
    return np.hstack([X, np.ones((len(X), 1))]) if fc1.bias is not None else X


def regularized_objective(model: nn.Module, X: Tensor, y: Tensor, lam: float) -> float:
    """L_λ(Θ) = mean_i ℓ(q_i) + λ‖Θ‖₂² (Wei et al., Eq. (3.2)), evaluated in float64."""
    with torch.no_grad():
        value, _, _, _ = _objective_parts(model, X, torch.as_tensor(signs(y)), lam)
    return float(value) * lam


def _objective_parts(model, X, y, lam):
    """(L_λ/λ, log mean loss, ‖Θ‖², q): the objective scaled by 1/λ so that it stays O(1)."""
    q = y * model(X).reshape(-1)
    log_mean = log_sum(_LOGISTIC.log_loss(q)) - math.log(len(q))
    norm_sq = sum((p * p).sum() for p in model.parameters())
    return norm_sq + torch.exp(log_mean - math.log(lam)), log_mean, norm_sq, q


def _radial_step(model, X, y, lam) -> None:
    """Rescale Θ → cΘ to the best c: J(cΘ) = c²‖Θ‖² + mean ℓ(c² q)/λ is smooth in c even at a
    ReLU kink (homogeneity moves no kink), so it makes progress where gradient steps stall."""
    from scipy.optimize import minimize_scalar

    with torch.no_grad():
        q = y * model(X).reshape(-1)
        norm_sq = float(sum((p * p).sum() for p in model.parameters()))

        def value(log_s):
            s = math.exp(log_s)
            log_mean = float(log_sum(_LOGISTIC.log_loss(s * q))) - math.log(len(q))
            return s * norm_sq + math.exp(log_mean - math.log(lam))

        if norm_sq == 0:
            return
        res = minimize_scalar(value, bounds=(-30.0, 30.0), method="bounded",
                              options={"xatol": 1e-12})
        if res.fun < value(0.0):
            c = math.exp(res.x / 2)
            for p in model.parameters():
                p.mul_(c)


def _lbfgs(model, X, y, lam, max_iter) -> int:
    """Full-batch L-BFGS with strong-Wolfe line search on L_λ/λ, restarted until it stalls."""
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=50,
                            tolerance_grad=1e-12, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")
    evals = 0

    def closure():
        nonlocal evals
        evals += 1
        opt.zero_grad()
        value = _objective_parts(model, X, y, lam)[0]
        value.backward()
        return value

    last = math.inf
    for _ in range(5):
        value = float(opt.step(closure).detach())
        if value >= last * (1 - 1e-14):
            break
        last = value
        opt.state.clear()  # fresh curvature pairs after a stall at a kink
    return evals


def _minimize(model, X, y, lam, max_iter, *, jitters: int, seed: int = 0) -> int:
    """Radial rescaling + L-BFGS; when L-BFGS stalls at a ReLU kink (a unit's kink on a data
    point, where −∇ is no descent direction), jitter the parameters by 1e-6 relative and retry,
    keeping the best point (a crude form of gradient sampling)."""
    gen = torch.Generator().manual_seed(seed)
    params = list(model.parameters())

    def current():
        with torch.no_grad():
            return float(_objective_parts(model, X, y, lam)[0])

    _radial_step(model, X, y, lam)
    evals = _lbfgs(model, X, y, lam, max_iter)
    best, saved = current(), [p.detach().clone() for p in params]
    for _ in range(jitters):
        with torch.no_grad():
            for p in params:
                p.add_(1e-6 * p.abs() * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        _radial_step(model, X, y, lam)
        evals += _lbfgs(model, X, y, lam, max_iter)
        value = current()
        if value < best * (1 - 1e-12):
            best, saved = value, [p.detach().clone() for p in params]
        else:
            break
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    return evals


def certificate(model: nn.Module, X: Tensor, y: Tensor, lam: float,
                directions=None) -> Certificate:
    """Dual lower bound on min L_λ from the network's own β_i = σ(−q_i) (module docstring)."""
    Xn = X.detach().cpu().double().numpy()
    yn = signs(y)
    with torch.no_grad():
        q = (torch.as_tensor(yn) * model(X.double()).reshape(-1)).numpy()
    Xl = _lifted(model, Xn)
    U = _unit_directions(model)
    if directions is not None:
        U = np.vstack([U, np.asarray(directions, dtype=np.float64)])
    ratio, u, exact = sup_ratio(Xl, yn, q, lam, U)
    return Certificate(lower_bound=dual_bound(q, ratio), sup_ratio=ratio, direction=u,
                       continuum=exact)


def _unit_directions(model) -> np.ndarray:
    fc1, _ = _layers(model)
    W = fc1.weight.detach().double()
    if fc1.bias is not None:
        W = torch.cat([W, fc1.bias.detach().double()[:, None]], dim=1)
    W = W.numpy()
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    return W[norms[:, 0] > 0] / norms[norms[:, 0] > 0]


def load_measure(model: nn.Module, directions, weights) -> None:
    """Write the balanced network of a measure α = Σ_k weights_k δ_{u_k} into ``model``:
    unit k gets u_k √|α_k| and a_k = sign(α_k) √|α_k| (Proposition 4.1's construction), the other
    units zero. Then f = ⟨α, φ⟩ and ‖Θ‖₂² = 2‖α‖₁."""
    fc1, fc2 = _layers(model)
    U = np.asarray(directions, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if len(w) > fc1.out_features:
        raise MarginlabError(f"{len(w)} directions but only {fc1.out_features} hidden units")
    with torch.no_grad():
        for p in (fc1.weight, fc2.weight, *(() if fc1.bias is None else (fc1.bias,))):
            p.zero_()
        s = torch.as_tensor(np.sqrt(np.abs(w)), dtype=fc1.weight.dtype)
        Ut = torch.as_tensor(U, dtype=fc1.weight.dtype) * s[:, None]
        k = len(w)
        fc1.weight[:k] = Ut[:, : fc1.in_features]
        if fc1.bias is not None:
            fc1.bias[:k] = Ut[:, -1]
        fc2.weight[0, :k] = torch.as_tensor(np.sign(w), dtype=fc2.weight.dtype) * s


def compress_measure(directions, weights, *, tol: float = 1e-3,
                     max_atoms: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Merge atoms of a measure that point within ``tol`` radians of each other with the same
    sign (a finite direction set spreads one optimal atom over neighbouring columns); the merged
    atom points along the weighted mean direction and carries the summed weight. Keeps the
    ``max_atoms`` heaviest atoms if given. Returns (directions (k, D), weights (k,))."""
    U = np.asarray(directions, dtype=np.float64)
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    w = np.asarray(weights, dtype=np.float64)
    cos_tol = math.cos(tol)
    centers: list[np.ndarray] = []
    sums: list[np.ndarray] = []
    totals: list[float] = []
    for k in np.argsort(-np.abs(w)):
        for c, (center, total) in enumerate(zip(centers, totals)):
            if np.sign(total) == np.sign(w[k]) and center @ U[k] >= cos_tol:
                sums[c] = sums[c] + abs(w[k]) * U[k]
                totals[c] += w[k]
                centers[c] = sums[c] / np.linalg.norm(sums[c])
                break
        else:
            centers.append(U[k].copy())
            sums.append(abs(w[k]) * U[k])
            totals.append(float(w[k]))
    order = np.argsort(-np.abs(totals))[:max_atoms]
    return np.array(centers)[order], np.array(totals)[order]


def _insert_unit(model, X, y, lam, direction, sign) -> None:
    """Put a new unit along ``direction`` (the most violated dual constraint) in place of the
    unit whose removal raises L_λ least, at the scale that gives the lowest L_λ; the caller
    polishes with L-BFGS and keeps the result only if L_λ fell.

    This is a deterministic form of the perturbation of Wei et al., Section 5 (mass re-drawn on
    the sphere): at a stationary point that is not a global optimum, a unit along the violated
    direction is a descent direction of second order, which gradient steps from zero cannot find.
    """
    fc1, fc2 = _layers(model)
    with torch.no_grad():
        energy = fc2.weight[0] ** 2 + (fc1.weight ** 2).sum(1)
        if fc1.bias is not None:
            energy = energy + fc1.bias ** 2
        cost = []
        for k in range(len(energy)):
            a_k = float(fc2.weight[0, k])
            fc2.weight[0, k] = 0.0
            # L_λ/λ without unit k: its output weight zeroed, and its ‖u_k‖² taken off.
            cost.append(float(_objective_parts(model, X, y, lam)[0])
                        - float(energy[k]) + a_k * a_k)
            fc2.weight[0, k] = a_k
        j = int(np.argmin(cost))
        mean = float(energy.sum()) / len(energy)
        u = torch.as_tensor(direction, dtype=fc1.weight.dtype)

        def place(e):
            fc1.weight[j] = e * u[: fc1.in_features]
            if fc1.bias is not None:
                fc1.bias[j] = e * u[-1]
            fc2.weight[0, j] = sign * e

        scales = np.sqrt(mean * 10.0 ** np.arange(-6.0, 1.5, 0.5))
        values = []
        for e in scales:
            place(float(e))
            values.append(float(_objective_parts(model, X, y, lam)[0]))
        place(float(scales[int(np.argmin(values))]))


@dataclass(frozen=True)
class RegularizedResult:
    """A two-layer network trained on L_λ, with its certificate.

    Attributes:
        params: the trained parameters (float64 copies of the state dict).
        lam: λ.
        objective: L_λ(Θ) = mean_i ℓ(q_i) + λ‖Θ‖₂².
        log_loss_mean: natural log of mean_i ℓ(q_i).
        norm_sq: ‖Θ‖₂².
        q_min: min_i y_i f(x_i).
        normalized_margin: q_min / ‖Θ‖₂² (f is 2-homogeneous).
        lower_bound: certified lower bound on min L_λ (see :class:`Certificate`).
        gap: (objective − lower_bound) / objective.
        sup_ratio: the certificate's sup ratio (≤ 1 at a global optimum).
        continuum: whether the certificate holds against every direction.
        function_evals: L-BFGS objective evaluations.
        reseeds: units inserted along violated directions.
    """

    params: dict[str, Tensor]
    lam: float
    objective: float
    log_loss_mean: float
    norm_sq: float
    q_min: float
    normalized_margin: float
    lower_bound: float
    gap: float
    sup_ratio: float
    continuum: bool
    function_evals: int
    reseeds: int


def train(model: nn.Module, X: Tensor, y: Tensor, *, lam: float, reseed: bool = True,
          directions=None, max_reseeds: int = 30, max_iter: int = 1000,
          tol: float = 1e-9, jitters: int = 5) -> RegularizedResult:
    """Minimize L_λ over a two-layer network, full batch, in float64 (trains ``model`` in place).

    Optimizer: L-BFGS with strong-Wolfe line search on L_λ/λ. Dividing by λ makes the objective
    O(log 1/λ) with O(1) curvature at every λ, where plain gradient descent on L_λ would need
    steps ~1/λ and millions of iterations as λ → 1e-14; L-BFGS is restarted when it stalls at a
    ReLU kink. With ``reseed``, each stationary point is checked against the dual certificate
    and, while a direction violates it by more than ``tol``, a unit is inserted along that
    direction (:func:`_insert_unit`) and L-BFGS resumes.

    Args:
        model: ``models.two_layer(d, m, bias="none" | "first")``; converted to float64.
        X: (n, d) inputs.
        y: (n,) labels ±1 (or 0/1).
        lam: λ > 0.
        reseed: insert units along violated dual directions.
        directions: (k, D) extra directions for the certificate when D > 2 (D = d, +1 with bias).
        max_reseeds: limit on insertions.
        max_iter: L-BFGS iterations per run.
        tol: accept the certificate when sup_ratio ≤ 1 + tol.
    """
    if lam <= 0:
        raise MarginlabError(f"lam must be positive, got {lam}")
    _layers(model)
    model.double()
    X = X.detach().double()
    yt = torch.as_tensor(signs(y))
    if X.shape[0] != len(yt):
        raise MarginlabError(f"{X.shape[0]} inputs but {len(yt)} labels")
    evals, reseeds = _minimize(model, X, yt, lam, max_iter, jitters=jitters), 0
    cert = certificate(model, X, yt, lam, directions)
    while reseed and cert.sup_ratio > 1 + tol and reseeds < max_reseeds:
        Xl = _lifted(model, X.numpy())
        with torch.no_grad():
            q = (yt * model(X).reshape(-1)).numpy()
        c = yt.numpy() * _sigmoid_neg(q)
        sign = float(np.sign(relu_features(Xl, cert.direction[None, :])[:, 0] @ c))
        with torch.no_grad():
            before = float(_objective_parts(model, X, yt, lam)[0])
            saved = [p.detach().clone() for p in model.parameters()]
        _insert_unit(model, X, yt, lam, cert.direction, sign)
        reseeds += 1
        evals += _minimize(model, X, yt, lam, max_iter, jitters=jitters)
        with torch.no_grad():
            if float(_objective_parts(model, X, yt, lam)[0]) >= before:
                for p, old in zip(model.parameters(), saved):
                    p.copy_(old)
                break
        cert = certificate(model, X, yt, lam, directions)
    return _result(model, X, yt, lam, cert, evals, reseeds)


def _result(model, X, yt, lam, cert: Certificate, evals: int, reseeds: int) -> RegularizedResult:
    with torch.no_grad():
        scaled, log_mean, norm_sq, q = _objective_parts(model, X, yt, lam)
    objective = float(scaled) * lam
    q_min, norm_sq = float(q.min()), float(norm_sq)
    return RegularizedResult(
        params={k: v.detach().clone() for k, v in model.state_dict().items()},
        lam=lam, objective=objective, log_loss_mean=float(log_mean), norm_sq=norm_sq,
        q_min=q_min, normalized_margin=q_min / norm_sq if norm_sq > 0 else 0.0,
        lower_bound=cert.lower_bound, gap=(objective - cert.lower_bound) / objective,
        sup_ratio=cert.sup_ratio, continuum=cert.continuum, function_evals=evals,
        reseeds=reseeds)
