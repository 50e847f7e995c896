"""The circle of directions of a 1-D ReLU unit with a bias, cut at its kinks (Wei, Lee, Liu &
Ma, Appendix F.3 setting).

For 1-D inputs with a bias a unit's direction (w, b)/‖(w, b)‖ = (cos t, sin t) lies on a circle,
which the 2n angles where the unit's kink −b/w passes a data point cut into arcs; on each arc the
unit's values on the data are smooth in t and linear in (w, b). :class:`Arcs` is that cut,
:class:`Atoms` the units of a balanced network as atoms on the arcs, and :func:`arc_objective`
the objective J = L_λ/λ with its gradient and Hessian in the atoms' masses and angles: the
problem the kink-aware solver of :mod:`marginlab.twolayer.onedim` works on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from marginlab.twolayer.convex import _log_logistic
from marginlab.twolayer.features import angles_to_directions

__all__ = ["Arcs", "Atoms", "arc_features", "arc_links", "arc_objective", "atoms_from_measure",
           "kink_arcs", "merge_atoms", "no_atoms"]

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class Arcs:
    """The circle of unit directions u = (cos t, sin t) = (w, b)/‖(w, b)‖, cut at the kinks.

    The feature relu(x_i cos t + sin t) has kinks at t = ψ_i ± π/2, ψ_i = atan2(1, x_i): the
    angles where the unit's kink −b/w passes the data point x_i. Between consecutive kinks each
    feature is either 0 or the sinusoid x_i cos t + sin t, so on a closed arc [lo_j, hi_j] a
    unit's values on the data are smooth in t and linear in u (Wei et al., Appendix F.3
    features; :func:`~marginlab.twolayer.pricing.sup_relu_correlation_1d` prices the same
    pieces).
    Arcs on which every feature vanishes are left out.

    Attributes:
        x: (n,) inputs.
        lo: (K,) arc starts in [0, 2π).
        hi: (K,) arc ends, lo < hi < lo + π (the arc across t = 0 ends past 2π).
        mask: (K, n) 1.0 where x_i is on the active side on the arc, else 0.0.
    """

    x: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    mask: np.ndarray


def kink_arcs(x: np.ndarray) -> Arcs:
    """The circle cut at the kinks of the inputs ``x`` (n,), without the arcs on which every
    feature vanishes."""
    psi = np.arctan2(1.0, x)
    kinks = np.sort(np.mod(np.concatenate([psi - np.pi / 2, psi + np.pi / 2]), _TWO_PI))
    kinks = kinks[np.concatenate([[True], np.diff(kinks) > 1e-13])]  # repeated inputs
    lo, hi = kinks, np.append(kinks[1:], kinks[0] + _TWO_PI)
    mid = 0.5 * (lo + hi)
    mask = np.cos(mid)[:, None] * x[None, :] + np.sin(mid)[:, None] > 0
    useful = mask.any(axis=1)
    return Arcs(x=x, lo=lo[useful], hi=hi[useful], mask=mask[useful].astype(np.float64))


@dataclass(frozen=True)
class Atoms:
    """Units of a balanced network (|a| = ‖(w, b)‖) as atoms of a measure on the circle.

    Unit k computes sign_k r_k relu(x cos t_k + sin t_k), i.e. a = sign √r, (w, b) = √r u(t),
    and costs λ(a² + w² + b²) = 2λ r_k. Each atom stays on one arc (``arc``), t_k ∈ [lo, hi].
    Shapes (k,).
    """

    arc: np.ndarray
    sign: np.ndarray
    r: np.ndarray
    t: np.ndarray

    def __len__(self) -> int:
        return len(self.r)

    def take(self, keep) -> Atoms:
        return Atoms(self.arc[keep], self.sign[keep], self.r[keep], self.t[keep])

    def join(self, other: Atoms) -> Atoms:
        return Atoms(*(np.concatenate([a, b]) for a, b in zip(
            (self.arc, self.sign, self.r, self.t), (other.arc, other.sign, other.r, other.t))))

    def weights(self) -> np.ndarray:
        return self.sign * self.r

    def directions(self) -> np.ndarray:
        return angles_to_directions(self.t)


def no_atoms() -> Atoms:
    """The empty network."""
    return Atoms(np.zeros(0, dtype=int), np.zeros(0), np.zeros(0), np.zeros(0))


def atoms_from_measure(arcs: Arcs, angles, weights) -> Atoms:
    """Atoms at ``angles`` with signed masses ``weights`` (those whose features vanish on the
    data are dropped), merged to one per (arc, sign)."""
    t = np.mod(np.asarray(angles, dtype=np.float64).reshape(-1), _TWO_PI)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    arc = np.full(len(t), -1)
    for shift in (0.0, _TWO_PI):  # the arc across t = 0 holds angles up to hi − 2π
        inside = ((t[:, None] + shift >= arcs.lo[None, :] - 1e-12)
                  & (t[:, None] + shift <= arcs.hi[None, :] + 1e-12))
        for k in np.flatnonzero((arc < 0) & inside.any(axis=1)):
            j = int(np.argmax(inside[k]))
            arc[k], t[k] = j, min(max(t[k] + shift, arcs.lo[j]), arcs.hi[j])
    keep = (arc >= 0) & (w != 0)
    return merge_atoms(arcs, Atoms(arc[keep], np.sign(w[keep]), np.abs(w[keep]), t[keep]))


def merge_atoms(arcs: Arcs, atoms: Atoms) -> Atoms:
    """One atom per (arc, sign), and none of zero mass.

    On a closed arc the values on the data are linear in u = r(cos t, sin t), so atoms of one
    sign there add as vectors: the merged atom has the same values on the data and mass
    ‖Σ_k u_k‖ ≤ Σ_k r_k (equal when the angles agree). L_λ can only fall.
    """
    atoms = atoms.take(atoms.r > 0)
    key = 2 * atoms.arc + (atoms.sign > 0)
    if len(np.unique(key)) == len(key):
        return atoms
    parts = []
    for k in np.unique(key):
        sel = np.flatnonzero(key == k)
        j = int(atoms.arc[sel[0]])
        v = (atoms.r[sel] @ np.cos(atoms.t[sel]), atoms.r[sel] @ np.sin(atoms.t[sel]))
        r = math.hypot(*v)
        if r > 0:
            # offset from lo in [−π, π), so that roundoff just below lo stays at lo
            d = (math.atan2(v[1], v[0]) - arcs.lo[j] + math.pi) % _TWO_PI - math.pi
            t = min(max(arcs.lo[j] + d, arcs.lo[j]), arcs.hi[j])
            parts.append(Atoms(np.array([j]), atoms.sign[sel[:1]], np.array([r]),
                                np.array([t])))
    return _join(parts)


def _join(parts: list[Atoms]) -> Atoms:
    atoms = no_atoms()
    for p in parts:
        atoms = atoms.join(p)
    return atoms


def arc_features(arcs: Arcs, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
    """h_ki = relu(x_i cos t_k + sin t_k) written as the smooth piece of atom k's arc, and
    ∂h/∂t; (k, n) each."""
    M = arcs.mask[atoms.arc]
    c, s = np.cos(atoms.t)[:, None], np.sin(atoms.t)[:, None]
    return M * (c * arcs.x[None, :] + s), M * (c - s * arcs.x[None, :])


def arc_objective(arcs: Arcs, y: np.ndarray, lam: float, atoms: Atoms, order: int = 0):
    """J = L_λ/λ = (1/(nλ)) Σ_i ℓ(q_i) + 2 Σ_k r_k of the balanced network, with q.

    order 1 adds the gradient in z = (r, t), order 2 the Hessian (2k, 2k): with
    q = y ⊙ Σ_k s_k r_k h_k(t_k), ∂q/∂r_k = y s_k h_k, ∂q/∂t_k = y s_k r_k h_k', and on an
    arc h_k'' = −h_k.
    """
    n, k = len(y), len(atoms)
    log_nl = math.log(n * lam)
    h, dh = arc_features(arcs, atoms)
    q = y * (atoms.weights() @ h)
    J = float(np.exp(_log_logistic(q) - log_nl).sum() + 2.0 * atoms.r.sum())
    if order == 0:
        return J, q
    w1 = -np.exp(-np.logaddexp(0.0, q) - log_nl)                      # ∂J/∂q = ℓ'(q)/(nλ)
    Dr = atoms.sign[:, None] * h * y
    Dt = atoms.weights()[:, None] * dh * y
    grad = np.concatenate([Dr @ w1 + 2.0, Dt @ w1])
    if order == 1:
        return J, q, grad
    w2 = np.exp(-np.logaddexp(0.0, q) - np.logaddexp(0.0, -q) - log_nl)  # ℓ''(q)/(nλ)
    D = np.vstack([Dr, Dt])
    H = (D * w2) @ D.T
    ir, it = np.arange(k), np.arange(k, 2 * k)
    cross = (atoms.sign[:, None] * dh * y) @ w1
    H[ir, it] += cross
    H[it, ir] += cross
    H[it, it] -= (atoms.weights()[:, None] * h * y) @ w1
    return J, q, grad, H


def arc_links(arcs: Arcs) -> tuple[np.ndarray, np.ndarray]:
    """nxt[j]: the arc that starts where arc j ends (−1 if all features vanish there); prv."""
    K = len(arcs.lo)
    nxt, prv = np.full(K, -1), np.full(K, -1)
    for j in range(K):
        d = np.abs((arcs.lo - arcs.hi[j] + np.pi) % _TWO_PI - np.pi)
        m = int(np.argmin(d))
        if d[m] < 1e-12:
            nxt[j], prv[m] = m, j
    return nxt, prv
