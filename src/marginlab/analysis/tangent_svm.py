"""The tangent-kernel SVM check of Lyu & Li, Corollary 4.5 (Appendix C.6, Lemma C.13).

At a KKT point θ* of (P), θ*/L solves the hard-margin SVM without bias

    min ½‖w‖²  s.t.  y_n ⟨w, ∇_θ Φ(θ*; x_n)⟩ ≥ 1  for all n,

i.e. the SVM with the tangent kernel K(x, x') = ⟨∇_θ Φ(θ; x), ∇_θ Φ(θ; x')⟩. So the cosine
between θ and the SVM's primal direction w = Σ_n α_n y_n ∇Φ_n measures how close θ is to such a
point. For multi-class models the feature of sample n is the gradient of its margin,
∇q_n = ∇Φ_{y_n} − ∇Φ_{j*} (j* the arg-max competitor), with all labels +1: this is the convex
problem (Q) of Lemma C.13 written with h_n = ∇q_n. For one output, y_n ∇Φ_n = ∇q_n, so both
cases use the Gram matrix K_nm = ⟨∇q_n, ∇q_m⟩.

The dual, max_{α ≥ 0} Σ_n α_n − ½ αᵀKα, is solved with scipy's L-BFGS-B (bounds α ≥ 0, exact
gradient); w = Jᵀα is formed with one vector–Jacobian product, never from J.

Limits: K is N×N over *all* training samples (N² float64: 8 MB at N = 1000, 200 MB at
N = 5000), built by the products of :class:`~marginlab.analysis.margin_jacobian.MarginJacobian`.
For Linear/Conv2d networks (``layer-products``) that takes seconds at N = 1000 on the MNIST
CNN; other models form per-sample gradient rows, N·P multiply-adds per row of K, which is for
small models only (say N·P ≤ 1e8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from torch import Tensor, nn

from marginlab.analysis.kkt import prepare_kkt_point
from marginlab.analysis.margin_jacobian import as_numpy

__all__ = ["TangentSVMResult", "tangent_svm"]


@dataclass(frozen=True)
class TangentSVMResult:
    """Hard-margin tangent-kernel SVM at θ and its agreement with θ (Corollary 4.5).

    Attributes:
        cosine: cos∠(w, θ), w the SVM's primal solution; 1 at a KKT point of (P).
        alphas: (N,) dual variables α_n ≥ 0 (at a KKT point, α = λ/L with λ the KKT
            multipliers of θ rescaled to q_min = 1).
        support: (k,) indices with α_n > 1e-9·max α.
        svm_margin: 1/‖w‖ with w scaled to min_n ⟨w, ∇q_n⟩ = 1: the kernel SVM's margin.
        duality_gap: (primal − dual)/primal of the returned solution, primal at the feasible
            rescaling of w (≥ 0; small means solved).
        order: homogeneity order L.
        gram_builder: how K was built.
        n: number of samples.
    """

    cosine: float
    alphas: Tensor
    support: Tensor
    svm_margin: float
    duality_gap: float
    order: float
    gram_builder: str
    n: int

    def summary(self) -> dict:
        return {"cosine": self.cosine, "svm_margin": self.svm_margin,
                "duality_gap": self.duality_gap, "n_support": int(self.support.numel()),
                "order": self.order, "gram_builder": self.gram_builder, "n": self.n}


def tangent_svm(model: nn.Module, X: Tensor, y: Tensor, *, batch_size: int = 256,
                memory_limit: float = 2 * 2**30, tol: float = 1e-13,
                max_iter: int = 20000) -> TangentSVMResult:
    """Solve the tangent-kernel SVM at ``model``'s parameters and compare it with θ.

    Args:
        model: an L-homogeneous network that separates (X, y) (q_min > 0).
        X: inputs (N, ...). y: labels (N,) (±1/{0,1} for one output, [C] for C outputs).
        batch_size: samples per pass. memory_limit: bytes for per-sample factors.
        tol: L-BFGS-B's ``ftol`` and ``gtol`` (relative to the scale of the problem).
        max_iter: L-BFGS-B iterations at most.

    Returns:
        A :class:`TangentSVMResult`.

    Raises:
        NotHomogeneousError, NotSeparatedError: as :func:`marginlab.analysis.kkt_residual`
            (the separation guarantees the SVM is feasible: w = θ/(L q_min) satisfies it).
    """
    point = prepare_kkt_point(model, X, y, batch_size=batch_size, memory_limit=memory_limit)
    jac = point.jac
    idx = torch.arange(point.q.numel())
    K_t, _ = jac.gram(idx)
    K = as_numpy(K_t)
    n = K.shape[0]
    # Scale so that α is O(1): at the rescaled θ the margins are ≥ 1, and K ~ ‖∇q‖².
    scale = max(float(np.max(np.diag(K))), 1e-300)
    Ks = K / scale

    def fun(a: np.ndarray) -> tuple[float, np.ndarray]:
        Ka = Ks @ a
        return 0.5 * float(a @ Ka) - float(a.sum()), Ka - 1.0

    a0 = np.full(n, n / max(float(Ks.sum()), 1e-300))
    res = scipy.optimize.minimize(fun, a0, jac=True, method="L-BFGS-B",
                                  bounds=[(0.0, None)] * n,
                                  options={"ftol": tol, "gtol": tol, "maxiter": max_iter,
                                           "maxcor": 50})
    alpha = np.maximum(res.x, 0.0) / scale  # the dual of the unscaled problem
    alpha_t = torch.from_numpy(alpha)
    w = jac.vjp(idx, alpha_t)
    theta = point.theta
    cosine = float(w @ theta / (w.norm() * theta.norm()))
    margins = K @ alpha  # ⟨w, ∇q_n⟩
    m_min = float(margins.min())
    primal = 0.5 * float(w @ w) / m_min**2 if m_min > 0 else np.inf
    dual = float(alpha.sum()) - 0.5 * float(alpha @ K @ alpha)
    gap = (primal - dual) / primal if np.isfinite(primal) and primal > 0 else np.inf
    support = torch.nonzero(alpha_t > 1e-9 * max(float(alpha.max()), 1e-300)).reshape(-1)
    return TangentSVMResult(
        cosine=cosine, alphas=alpha_t, support=support,
        svm_margin=m_min / float(w.norm()) if m_min > 0 else 0.0, duality_gap=float(gap),
        order=point.order, gram_builder=jac.gram_builder, n=n)
