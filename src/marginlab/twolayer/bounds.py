"""Leading terms of the generalization bounds of Wei, Lee, Liu & Ma: Proposition 3.1 (network
margin), Lemma 4.2 (kernel margin), Lemmas D.8 and D.9 (regression with ℓ1 and ℓ2 norms)."""

from __future__ import annotations

import math

import numpy as np

from marginlab.twolayer.features import as_data

__all__ = ["kernel_margin_bound", "l1_regression_bound", "l2_regression_bound",
           "network_margin_bound"]


def network_margin_bound(margin: float, *, C: float, n: int, depth: int = 2) -> float:
    """Leading term C / (γ K^{(K−1)/2} √n) of Proposition 3.1 (Eq. (3.3)).

    Args:
        margin: normalized margin γ = min_i y_i f(Θ/‖Θ‖_F; x_i) of a depth-K network.
        C: max ‖x‖₂ over the inputs.
        n: number of training samples.
        depth: K.
    """
    return C / (margin * depth ** ((depth - 1) / 2) * math.sqrt(n))


def kernel_margin_bound(margin: float, *, C: float, n: int, d: int) -> float:
    """Leading term C / (γ_ℓ2 √(d n)) of Lemma 4.2 (Eq. (4.4); proof in Appendix C.2)."""
    return C / (margin * math.sqrt(d * n))


def l1_regression_bound(norm: float, *, X, lipschitz: float = 1.0) -> float:
    """Complexity term 12 M max{1, ‖α‖₁ ‖X‖_F} / n of Lemma D.8 (M the loss's Lipschitz
    constant, X the (n, d) training inputs)."""
    X, _ = as_data(X)
    return 12.0 * lipschitz * max(1.0, norm * np.linalg.norm(X)) / X.shape[0]


def l2_regression_bound(norm: float, *, X, lipschitz: float = 1.0) -> float:
    """Complexity term M max{1, √κ‖α‖₂ ‖X‖_F} / (n √d) of Lemma D.9, up to its universal
    constant; ``norm`` is √κ‖α‖₂ (as returned by :func:`l2_interpolation`), the form used in the
    proof of Theorem D.10."""
    X, _ = as_data(X)
    n, d = X.shape
    return lipschitz * max(1.0, norm * np.linalg.norm(X)) / (n * math.sqrt(d))
