"""Weakly regularized two-layer ReLU networks on 1-D inputs with a bias: the convex problem
solved exactly over the circle, and a kink-aware trainer (Wei, Lee, Liu & Ma, Appendix F.3).

For 1-D inputs with a bias the circle of unit directions (w, b)/‖(w, b)‖ is cut at the 2n
angles where a unit's kink −b/w passes a data point; on each arc a unit's values on the data are
linear in (w, b) (:mod:`marginlab.twolayer.arcs`: the arcs, the units as atoms on them and the
objective there). :func:`convex_optimum_1d` solves the convex problem exactly on these arcs, and
:func:`train_1d` trains a network kink-aware: each unit is an angle and a mass, Newton's method
runs within its arc, and a unit whose kink sits on a data point (where L-BFGS on (a, w, b)
stalls) moves on by one-sided derivatives.

The objective and the trainer in any dimension are in :mod:`marginlab.twolayer.regularized`, the
convex problem's general solver and its certificate in :mod:`marginlab.twolayer.convex`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog
from torch import Tensor, nn

from marginlab.errors import MarginlabError
from marginlab.twolayer.arcs import (
    Arcs,
    Atoms,
    arc_features,
    arc_links,
    arc_objective,
    atoms_from_measure,
    kink_arcs,
    merge_atoms,
    no_atoms,
)
from marginlab.twolayer.convex import ConvexOptimum, _convex_summary, certify
from marginlab.twolayer.features import lift_1d, relu_features, signs
from marginlab.twolayer.margins import _HIGHS_TIGHT
from marginlab.twolayer.pricing import arc_peaks
from marginlab.twolayer.regularized import (
    RegularizedResult,
    _layers,
    _objective_parts,
    _result,
    certificate,
    load_measure,
)

__all__ = ["convex_optimum_1d", "train_1d"]


def _arc_newton(arcs: Arcs, y: np.ndarray, lam: float, atoms: Atoms,
                max_iter: int = 500) -> tuple[Atoms, int]:
    """Projected Newton method (Bertsekas 1982) on z = (r, t), r ≥ 0, t ∈ [lo, hi] of its arc.

    Inside its arc every unit's contribution is smooth, so Newton converges quadratically
    where L-BFGS on (a, w, b) stalls at kinks; an angle reaching an arc end (the unit's kink
    on a data point) is held there by the bound. Variables at a bound whose gradient points
    out are fixed; the rest take a Newton step with |eigenvalues| of their Hessian (the polar
    parametrization is not convex far from the optimum) and a projected Armijo search.
    Returns the atoms of non-zero mass and the number of objective evaluations.
    """
    k = len(atoms)
    if k == 0:
        return atoms, 0
    lo = np.concatenate([np.zeros(k), arcs.lo[atoms.arc]])
    hi = np.concatenate([np.full(k, np.inf), arcs.hi[atoms.arc]])
    z = np.concatenate([atoms.r, atoms.t])

    def at(v):
        return Atoms(atoms.arc, atoms.sign, v[:k], v[k:])

    evals, stalls = 0, 0
    for _ in range(max_iter):
        J, _, g, H = arc_objective(arcs, y, lam, at(z), 2)
        evals += 1
        eps = np.concatenate([np.full(k, 1e-13 * max(z[:k].max(), 1.0)), np.full(k, 1e-13)])
        fixed = ((z <= lo + eps) & (g > 0)) | ((z >= hi - eps) & (g < 0))
        fixed[k:] |= z[:k] == 0  # the angle of a unit without mass
        free = ~fixed
        scale = np.concatenate([np.ones(k), np.maximum(z[:k], 1.0)])
        if not free.any() or np.max(np.abs(g[free]) / scale[free]) < 1e-12:
            break
        ev, V = np.linalg.eigh(H[np.ix_(free, free)])
        ev = np.maximum(np.abs(ev), 1e-10 * max(np.abs(ev).max(), 1e-300))
        d = np.zeros_like(z)
        d[free] = -V @ ((V.T @ g[free]) / ev)
        tau = 1.0
        while tau > 1e-14:
            trial = np.clip(z + tau * d, lo, hi)
            J_trial = arc_objective(arcs, y, lam, at(trial))[0]
            evals += 1
            # Near the optimum the decrease is below the float resolution of J.
            if J_trial <= J + 1e-4 * g @ (trial - z) + 1e-15 * abs(J):
                break
            tau *= 0.5
        else:
            break
        stalls = stalls + 1 if J_trial >= J else 0
        z = trial
        if stalls >= 3:
            break
    return at(z).take(z[:k] > 0), evals


def _cross_kinks(arcs: Arcs, y: np.ndarray, lam: float,
                 atoms: Atoms) -> tuple[Atoms, int]:
    """Move each unit held at an arc end into the neighbouring arc when L_λ decreases there.

    At an arc end the unit's kink sits on a data point and L_λ is not differentiable in the
    angle; the one-sided derivative on the far side decides whether the kink should pass the
    point. The move itself does not change the network.
    """
    nxt, prv = arc_links(arcs)
    moved = 0
    for k in range(len(atoms)):
        j = atoms.arc[k]
        for end, nb, step in ((arcs.hi[j], nxt[j], 1.0), (arcs.lo[j], prv[j], -1.0)):
            if nb < 0 or abs(atoms.t[k] - end) > 1e-13:
                continue
            arc, t = atoms.arc.copy(), atoms.t.copy()
            arc[k], t[k] = nb, arcs.lo[nb] if step > 0 else arcs.hi[nb]
            trial = Atoms(arc, atoms.sign, atoms.r, t)
            if step * arc_objective(arcs, y, lam, trial, 1)[2][len(atoms) + k] < 0:
                atoms, moved = trial, moved + 1
                break
    return atoms, moved


def _arc_pricing(arcs: Arcs, c: np.ndarray):
    """For every (arc, sign): the angle maximizing s⟨c, h(t)⟩ on the arc, and the maximum.

    On an arc ⟨c, h(t)⟩ = A cos t + B sin t (A = Σ_active c_i x_i, B = Σ_active c_i), whose
    maximum times s is found by :func:`~marginlab.twolayer.pricing.arc_peaks`. With
    c = −∂J/∂f, a new unit there lowers J iff the maximum exceeds 2 (its cost per mass).
    Returns (arc, sign, angle, value), each (2K,).
    """
    A, B = arcs.mask @ (c * arcs.x), arcs.mask @ c
    K = len(A)
    out = []
    for s in (1.0, -1.0):
        t, v = arc_peaks(arcs.lo, arcs.hi, s * A, s * B)
        out.append((np.arange(K), np.full(K, s), t, v))
    return tuple(np.concatenate(parts) for parts in zip(*out))


def _basic_measure(arcs: Arcs, atoms: Atoms) -> Atoms:
    """A basic solution of min Σ r_k s.t. the same values on the data, over the current
    atoms (HiGHS simplex): at most n atoms, the same loss, no larger penalty (Carathéodory;
    the reason width ≥ n + 1 suffices)."""
    h, _ = arc_features(arcs, atoms)
    res = linprog(np.ones(len(atoms)), A_eq=(atoms.sign[:, None] * h).T,
                  b_eq=atoms.weights() @ h, bounds=[(0, None)] * len(atoms),
                  method="highs-ds", options=_HIGHS_TIGHT)
    if res.status != 0 or res.fun > atoms.r.sum() * (1 + 1e-9):  # a Newton step follows
        return atoms
    r = np.where(res.x > 1e-12 * res.x.max(), res.x, 0.0)
    return Atoms(atoms.arc, atoms.sign, r, atoms.t).take(r > 0)


@dataclass(frozen=True)
class _ArcFit:
    atoms: Atoms
    rounds: int
    evals: int
    inserted: int


def _arc_fit(arcs: Arcs, y: np.ndarray, lam: float, atoms: Atoms, *, max_atoms: int,
             insert: bool, tol: float = 1e-10, max_rounds: int = 100) -> _ArcFit:
    """Minimize L_λ over at most ``max_atoms`` balanced units, kink-aware.

    Rounds of: merge units sharing an (arc, sign); Newton on every unit's mass and angle
    within its arc (:func:`_arc_newton`); move units whose kink should pass a data point into
    the next arc (:func:`_cross_kinks`); with ``insert``, add zero-mass units at the
    (arc, sign) pieces whose exact dual constraint is violated by more than ``tol`` relative
    (the dual certificate's most violated directions, Wei et al., Section 5), freeing units
    by :func:`_basic_measure` when all are in use. Stops when no piece is violated, so the
    result satisfies the optimality conditions of the convex problem over the whole circle.
    """
    n = len(y)
    evals = inserted = rounds = 0
    while rounds < max_rounds:
        rounds += 1
        atoms, e = _arc_newton(arcs, y, lam, merge_atoms(arcs, atoms))
        evals += e
        atoms, moved = _cross_kinks(arcs, y, lam, merge_atoms(arcs, atoms))
        if moved:
            continue
        if not insert:
            break
        q = arc_objective(arcs, y, lam, atoms)[1]
        c = y * np.exp(-np.logaddexp(0.0, q) - math.log(n * lam))  # −∂J/∂f
        arc, sign, t, v = _arc_pricing(arcs, c)
        used = set(zip(atoms.arc.tolist(), atoms.sign.tolist()))
        fresh = np.array([key not in used for key in zip(arc.tolist(), sign.tolist())])
        cand = np.flatnonzero(fresh & (v > 2.0 * (1.0 + tol)))
        if len(cand) == 0:
            break
        if len(atoms) >= max_atoms:
            atoms = _basic_measure(arcs, atoms)
        cand = cand[np.argsort(-v[cand])][: max(max_atoms - len(atoms), 0)]
        if len(cand) == 0:
            break
        inserted += len(cand)
        # Zero-mass units enter through the Newton step (their mass gradient 2 − v < 0).
        atoms = atoms.join(Atoms(arc[cand], sign[cand], np.zeros(len(cand)), t[cand]))
        atoms, e = _arc_newton(arcs, y, lam, atoms)
        evals += e
    return _ArcFit(atoms=atoms, rounds=rounds, evals=evals, inserted=inserted)


def convex_optimum_1d(x, y, lam: float, *, tol: float = 1e-10, max_iter: int = 100,
                      init: ConvexOptimum | None = None) -> ConvexOptimum:
    """The convex problem over the whole circle of (w, b), for 1-D inputs with a bias.

    Exact in the continuum (Wei et al., Appendix F.3 setting): the circle is cut at the 2n
    kinks into arcs on which the features are linear in u = r(cos t, sin t), so one atom per
    (arc, sign) suffices; each atom's mass and angle are solved by Newton's method within its
    arc, and pieces whose dual constraint is violated receive a new atom (:func:`_arc_fit`).
    The result is reduced to a basic solution (≤ n atoms) and certified by the exact dual
    bound (:func:`marginlab.twolayer.pricing.sup_relu_correlation_1d` at β = σ(−q)).

    Args:
        x: (n,) scalar inputs.
        y: (n,) labels ±1.
        lam: λ > 0.
        tol: relative violation of the dual constraint at which to stop.
        max_iter: limit on rounds (the last solution is returned with its gap).
        init: a solution at a nearby λ to start from (its directions, weights rescaled by
            log(1/λ)/log(1/λ_init), the growth of ‖α‖₁ as λ → 0).
    """
    if lam <= 0:
        raise MarginlabError(f"lam must be positive, got {lam}")
    X, y = lift_1d(x), signs(y)
    if len(y) != len(X):
        raise MarginlabError(f"{len(X)} inputs but {len(y)} labels")
    arcs = kink_arcs(X[:, 0])
    atoms = no_atoms()
    if init is not None:
        scale = math.log(1 / lam) / math.log(1 / init.lam) if 0 < init.lam < 1 else 1.0
        atoms = atoms_from_measure(
            arcs, np.arctan2(init.directions[:, 1], init.directions[:, 0]),
            init.weights * scale)
    fit = _arc_fit(arcs, y, lam, atoms, max_atoms=2 * len(arcs.lo), insert=True, tol=tol,
                   max_rounds=max_iter)
    atoms = fit.atoms
    if len(atoms) > len(y):
        atoms, _ = _arc_newton(arcs, y, lam, _basic_measure(arcs, atoms))
    U, alpha = atoms.directions(), atoms.weights()
    F = relu_features(X, U)
    q = y * (F @ alpha)
    cert = certify(X, y, q, lam, None)  # exact over the circle
    return _convex_summary(F, y, lam, alpha, cert, U, fit.rounds)


def train_1d(model: nn.Module, X: Tensor, y: Tensor, *, lam: float, reseed: bool = True,
             tol: float = 1e-10, max_rounds: int = 100) -> RegularizedResult:
    """Minimize L_λ for 1-D inputs with a first-layer bias, kink-aware (trains ``model`` in place).

    L-BFGS on (a, w, b) stalls where a unit's kink −b/w sits on a data point, which is where
    optimal units tend to put it: L_λ is not differentiable in the unit's angle there. Here
    each unit is written as an angle t on the circle, (w, b) ∝ (cos t, sin t), and a signed
    mass r = |a|‖(w, b)‖. Balancing |a| = ‖(w, b)‖ (the rescaling symmetry
    (a, u) → (ca, u/c)) leaves f unchanged and lowers λ(a² + ‖u‖²) to 2λr, its minimum; between
    the angles where the kink passes a data point the objective is then smooth, and Newton's
    method runs on each unit's (r, t) within its piece, with the piece's ends as bounds. A unit
    held at an end moves to the next piece when the one-sided derivative there is negative;
    units of one sign on one piece merge exactly (:func:`merge_atoms`). With ``reseed``, units are
    added where the exact dual certificate is violated (as in :func:`train`), which makes the
    result a certified global optimum once no piece is violated. The trained network is
    written back balanced; its objective is L_λ of those parameters, with the ℓ2 penalty.

    Args:
        model: ``models.two_layer(1, m, bias="first")``; converted to float64.
        X: (n, 1) inputs.
        y: (n,) labels ±1 (or 0/1).
        lam: λ > 0.
        reseed: add units along violated dual directions (at most m units in use).
        tol: relative violation of the dual constraint accepted when ``reseed``.
        max_rounds: limit on rounds of Newton, kink moves and insertions.
    """
    if lam <= 0:
        raise MarginlabError(f"lam must be positive, got {lam}")
    fc1, fc2 = _layers(model)
    if fc1.in_features != 1 or fc1.bias is None:
        raise MarginlabError("train_1d needs models.two_layer(1, m, bias='first')")
    model.double()
    X = X.detach().double().reshape(-1, 1)
    yt = torch.as_tensor(signs(y))
    if X.shape[0] != len(yt):
        raise MarginlabError(f"{X.shape[0]} inputs but {len(yt)} labels")
    x, yn = X[:, 0].numpy(), yt.numpy()
    arcs = kink_arcs(x)
    with torch.no_grad():
        saved = [p.detach().clone() for p in model.parameters()]
        before = float(_objective_parts(model, X, yt, lam)[0])
        w, b = fc1.weight[:, 0].numpy().copy(), fc1.bias.numpy().copy()
        a = fc2.weight[0].numpy().copy()
    atoms = atoms_from_measure(arcs, np.arctan2(b, w), a * np.hypot(w, b))
    fit = _arc_fit(arcs, yn, lam, atoms, max_atoms=fc1.out_features, insert=reseed, tol=tol,
                   max_rounds=max_rounds)
    load_measure(model, fit.atoms.directions(), fit.atoms.weights())
    with torch.no_grad():
        if float(_objective_parts(model, X, yt, lam)[0]) > before:  # never worse than start
            for p, old in zip(model.parameters(), saved):
                p.copy_(old)
    cert = certificate(model, X, yt, lam)
    return _result(model, X, yt, lam, cert, fit.evals, fit.inserted)
