"""Loss-convergence and weight-growth rates of a run, next to Lyu & Li's Theorem 4.3.

Theorem 4.3 (Corollary A.11 for exponential/logistic loss): along gradient flow or descent,

    L(θ(t)) = Θ(1 / (T (log T)^{2−2/L}))    and    ‖θ(t)‖₂ = Θ((log T)^{1/L}),

with T = Σ_{τ<t} η(τ) for gradient descent and L the homogeneity order. From a run's metrics
(one record per epoch) T is accumulated in log space, log T_k = log Σ_{j≤k} steps_j · lr_j from
``log10_lr`` and ``steps`` (the learning rate may exceed float64's range), and the fits are

    log L = a + b log T + c log log T        (theory b = −1, c = −(2 − 2/L))
    log L + (2 − 2/L) log log T = a' + b' log T        (theory b' = −1; c held at theory)
    log ρ = a'' + d log log T                 (theory d = 1/L; a bare power law)
    ρ^L = A + B log T                         (the theorem's form with the initial norm in A)
    ρ^k = A_k + B_k log T, best k by R²       (theory k = L)

with L = ``log_loss_sum`` (natural log of the summed loss). The records' ``lr`` is the step on
the *mean* batch loss, so T here is the flow time of the mean loss; the flow time of the summed
loss is T/N, which shifts log T by a constant (the exponent b is unchanged, c and d absorb a
log log correction that vanishes as log T ≫ log N). log T and log log T are nearly collinear
over a short run, so b and c are individually ill-determined; b' is the robust number.

Under a schedule that sets the step from the loss (η = α/L̄, Lyu & Li Appendix L.1) T grows as
1/L by construction, so the loss fits measure the schedule, not Theorem 4.3; callers must not
report them as evidence (:func:`loss_sets_step`). Theorem 4.3 itself is tested by the
``lyu-li-rates`` experiment (constant steps and gradient flow over many decades of T).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from marginlab.core.losses import Loss, get_loss
from marginlab.errors import MarginlabError

__all__ = ["RateFit", "fit_rates", "log_flow_times", "loss_sets_step"]

LN10 = math.log(10.0)


@dataclass(frozen=True)
class RateFit:
    """Fitted rates of a run and Theorem 4.3's predictions.

    Attributes:
        order: homogeneity order L used for the theory.
        epochs: epochs used in the fits.
        log_t: natural log of T at those epochs.
        loss_exponent_t: b in log L = a + b log T + c log log T (theory −1).
        loss_exponent_loglog_t: c (theory −(2 − 2/L)).
        loss_exponent_t_given_theory: b' with c fixed at theory (theory −1).
        rho_exponent_loglog_t: d in log ρ = a'' + d log log T (theory 1/L).
        theory_loss_exponent_t, theory_loss_exponent_loglog_t, theory_rho_exponent_loglog_t:
            the theorem's values.
        r2_loss, r2_rho: coefficients of determination of the joint loss fit and the ρ fit.
        coefficients: intercepts and slopes of the fits (for plotting), keys
            ``loss`` (a, b, c), ``loss_given_theory`` (a', b'), ``rho`` (a'', d),
            ``rho_affine`` (A, B) of ρ^L = A + B log T.
        r2_rho_affine: R² of ρ^L = A + B log T.
        rho_best_power: the k in [0.25, 8] maximizing the R² of ρ^k = A_k + B_k log T
            (theory L); ``nan`` when the fit is flat.
    """

    order: float
    epochs: list[int]
    log_t: list[float]
    loss_exponent_t: float
    loss_exponent_loglog_t: float
    loss_exponent_t_given_theory: float
    rho_exponent_loglog_t: float
    theory_loss_exponent_t: float
    theory_loss_exponent_loglog_t: float
    theory_rho_exponent_loglog_t: float
    r2_loss: float
    r2_rho: float
    coefficients: dict[str, list[float]]
    r2_rho_affine: float = math.nan
    rho_best_power: float = math.nan

    def as_dict(self) -> dict:
        return asdict(self)


def log_flow_times(records: Sequence[dict]) -> list[float]:
    """log T_k = log Σ_{j≤k} steps_j · η_j for each record, from ``log10_lr`` and ``steps``.

    Raises:
        MarginlabError: a record lacks ``log10_lr`` or ``steps``.
    """
    out, acc = [], -math.inf
    for r in records:
        try:
            term = float(r["log10_lr"]) * LN10 + math.log(max(int(r["steps"]), 1))
        except (KeyError, TypeError, ValueError):
            raise MarginlabError(f"metrics record of epoch {r.get('epoch')} lacks log10_lr or "
                                 "steps") from None
        hi, lo = max(acc, term), min(acc, term)
        acc = hi + math.log1p(math.exp(lo - hi)) if math.isfinite(lo) else hi
        out.append(acc)
    return out


def _lstsq(columns: list[np.ndarray], target: np.ndarray) -> tuple[np.ndarray, float]:
    A = np.column_stack([np.ones_like(target), *columns])
    coef, *_ = np.linalg.lstsq(A, target, rcond=None)
    resid = target - A @ coef
    total = float(((target - target.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / total if total > 0 else 1.0
    return coef, r2


def fit_rates(records: Sequence[dict], loss: str | Loss = "exponential", *,
              order: float | None = None, start_epoch: int | None = None,
              min_points: int = 4) -> RateFit:
    """Fit the loss and norm rates of a run (Theorem 4.3).

    Args:
        records: metrics records (``epoch``, ``log_loss_sum``, ``rho``, ``log10_lr``,
            ``steps``, ``order``), one per accepted epoch, in order.
        loss: the run's loss; the fit starts once L < ℓ(0) (the regime of the theorem).
        order: homogeneity order L; default the records' ``order``.
        start_epoch: first epoch to fit (default: the first with L < ℓ(0)).
        min_points: fewer usable epochs is an error.

    Returns:
        A :class:`RateFit`.

    Raises:
        MarginlabError: too few usable epochs (after the start, with log T > 1 and finite
            values), or no order.
    """
    if not records:
        raise MarginlabError("no metrics records to fit")
    log_T = log_flow_times(records)
    if order is None:
        order = records[-1].get("order")
    if not isinstance(order, (int, float)) or not order > 0:
        raise MarginlabError("the records carry no homogeneity order; pass order=")
    order = float(order)
    log_l0 = get_loss(loss).log_loss_at_zero
    if start_epoch is None:
        below = [r["epoch"] for r in records
                 if _finite(r.get("log_loss_sum")) and float(r["log_loss_sum"]) < log_l0]
        start_epoch = below[0] if below else math.inf
    rows = [(r["epoch"], lt, float(r["log_loss_sum"]), float(r["rho"]))
            for r, lt in zip(records, log_T)
            if r["epoch"] >= start_epoch and lt > 1.0 and _finite(r.get("log_loss_sum"))
            and _finite(r.get("rho")) and float(r["rho"]) > 0]
    if len(rows) < min_points:
        raise MarginlabError(
            f"only {len(rows)} epochs with L < ℓ(0) and log T > 1; the rate fit needs "
            f"{min_points}")
    epochs = [e for e, *_ in rows]
    lt = np.array([x for _, x, _, _ in rows])
    ll = np.array([x for _, _, x, _ in rows])
    lr = np.log(np.array([x for *_, x in rows]))
    llt = np.log(lt)
    c_theory = -(2.0 - 2.0 / order)
    coef, r2_loss = _lstsq([lt, llt], ll)
    coef_fixed, _ = _lstsq([lt], ll - c_theory * llt)
    coef_rho, r2_rho = _lstsq([llt], lr)
    rho = np.exp(lr)
    coef_aff, r2_aff = _lstsq([lt], rho**order)
    powers = np.arange(0.25, 8.0 + 1e-9, 0.01)
    r2s = [_lstsq([lt], rho**k)[1] for k in powers]
    best = float(powers[int(np.argmax(r2s))]) if np.ptp(lr) > 0 else math.nan
    return RateFit(
        order=order, epochs=epochs, log_t=lt.tolist(),
        loss_exponent_t=float(coef[1]), loss_exponent_loglog_t=float(coef[2]),
        loss_exponent_t_given_theory=float(coef_fixed[1]),
        rho_exponent_loglog_t=float(coef_rho[1]),
        theory_loss_exponent_t=-1.0, theory_loss_exponent_loglog_t=c_theory,
        theory_rho_exponent_loglog_t=1.0 / order, r2_loss=r2_loss, r2_rho=r2_rho,
        coefficients={"loss": coef.tolist(), "loss_given_theory": coef_fixed.tolist(),
                      "rho": coef_rho.tolist(), "rho_affine": coef_aff.tolist()},
        r2_rho_affine=r2_aff, rho_best_power=best)


def loss_sets_step(config: dict) -> bool:
    """Whether a run's schedule sets the step from the loss (``loss_based`` and its
    variants), so that its T = Σ η is tied to 1/L by construction."""
    schedule = config.get("schedule") if isinstance(config, dict) else None
    name = schedule.get("name", "") if isinstance(schedule, dict) else str(schedule or "")
    return name.startswith("loss_based")


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
