"""Log-space losses against mpmath at 60 digits (DESIGN.md §2–§3).

Every reference value is computed from the float64 inputs by mpmath, never by the code under
test: per-sample log ℓ from margins and from logits, log L of the SUM over up to 1e5 samples
(down to log10 L ≈ −8700 and, for the cubic tail, −4e11), ℓ^{-1}(L) from log L, and the
gradients of all of these, including at the logistic branch point q = 0 and at huge q.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import torch

from marginlab import losses
from marginlab.errors import MarginlabError

mp.mp.dps = 60

REL = 1e-12  # relative tolerance against mpmath
ABS = 1e-14  # absolute floor, for values that cross 0 (log ℓ near 0, ℓ^{-1}(L) near 0)


def _cubic_f(q: torch.Tensor) -> torch.Tensor:
    """f(q) = q³ for q ≥ 1, 3q − 2 below: increasing, C¹ at q = 1 (value 1, slope 3)."""
    return torch.where(q >= 1, q**3, 3 * q - 2)


def _cubic_g(v: float) -> float:
    """Inverse of :func:`_cubic_f`."""
    return float(np.cbrt(v)) if v >= 1 else (v + 2) / 3


CUBIC = losses.ExpTailLoss(f=_cubic_f, g=_cubic_g, name="cubic_tail")


# mpmath references: log ℓ(q), d log ℓ / dq, and ℓ^{-1}(L) from log L, per loss.
def _mp_cubic_f(q):
    return q**3 if q >= 1 else 3 * q - 2


MP = {
    "exponential": {
        "log_loss": lambda q: -q,
        "dlog_loss": lambda q: mp.mpf(-1),
        "inverse": lambda log_L: -log_L,
    },
    "logistic": {
        "log_loss": lambda q: mp.log(mp.log1p(mp.exp(-q))),
        "dlog_loss": lambda q: -1 / ((1 + mp.exp(q)) * mp.log1p(mp.exp(-q))),
        "inverse": lambda log_L: -mp.log(mp.expm1(mp.exp(log_L))),
    },
    "cubic_tail": {
        "log_loss": lambda q: -_mp_cubic_f(q),
        "dlog_loss": lambda q: -3 * q**2 if q >= 1 else mp.mpf(-3),
        "inverse": lambda log_L: (
            mp.cbrt(-log_L) if -log_L >= 1 else (-log_L + 2) / 3
        ),
    },
}
LOSSES = {"exponential": "exponential", "logistic": "logistic", "cubic_tail": CUBIC}

# Margins over the whole float64 story: 0 and subnormals, the logistic series switch
# (e^{-q} = 1e-8 at q ≈ 18.42), softplus's old linearization threshold (|q| = 20), the range
# where e^{-q} is subnormal (709.8 < q < 745.1), and margins up to 1e4 of either sign.
MARGINS = [
    0.0, 5e-324, -5e-324, 1e-300, -1e-300, 1e-12, -1e-12, 1e-8, 0.1, -0.1, 0.5, -0.5413248546,
    -0.55, 0.99, 1.0, 1.01, 2.0, -2.0, 10.0, 18.42, 18.4206807439, 18.43, 19.99, 20.0, 20.01,
    -19.99, -20.0, -20.01, -25.0, 30.0, 36.0, 37.5, 100.0, 354.0, 700.0, 709.0, 709.79,
    720.0, 744.0, 745.1, 745.2, 800.0, 1000.0, 2500.0, 1e4, -1e4, -700.0, -800.0,
]


def _assert_close(actual, expected, *, rel=REL, abs_=ABS, what=""):
    actual = np.asarray(actual, dtype=np.float64).reshape(-1)
    expected = np.asarray([float(e) for e in expected], dtype=np.float64)
    assert np.all(np.isfinite(actual)), f"{what}: non-finite values {actual[~np.isfinite(actual)]}"
    err = np.abs(actual - expected)
    bound = rel * np.abs(expected) + abs_
    worst = int(np.argmax(err / bound))
    assert np.all(err <= bound), (
        f"{what}: index {worst}: got {actual[worst]!r}, mpmath {expected[worst]!r}, "
        f"relative error {err[worst] / max(abs(expected[worst]), 1e-300):.2e}"
    )


def _mp_log_sum(values, counts, log_loss) -> mp.mpf:
    """log Σ_k counts_k · ℓ(values_k), exactly (in mpmath)."""
    return mp.log(mp.fsum(int(c) * mp.exp(log_loss(mp.mpf(float(v))))
                          for v, c in zip(values, counts)))


# ---------------------------------------------------------------------------------------------
# per-sample log-loss from binary margins
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(LOSSES))
def test_log_loss_from_margins_matches_mpmath(name):
    q = torch.tensor(MARGINS, dtype=torch.float64)
    got = losses.log_loss_from_margins(q, LOSSES[name])
    assert got.dtype == torch.float64 and got.shape == q.shape
    ref = [MP[name]["log_loss"](mp.mpf(v)) for v in MARGINS]
    _assert_close(got, ref, what=f"{name} log ℓ(q)")


def test_log_loss_float32_margins_are_promoted():
    q32 = torch.tensor([0.5, 30.0, 800.0], dtype=torch.float32)
    got = losses.log_loss_from_margins(q32, "logistic")
    assert got.dtype == torch.float64
    ref = [MP["logistic"]["log_loss"](mp.mpf(float(v))) for v in q32]
    _assert_close(got, ref, what="float32 margins")


def test_logistic_log_loss_on_a_dense_grid():
    """Dense grid across both branches and the series switch: no seam anywhere."""
    q = np.concatenate([np.linspace(-40, 40, 801), np.linspace(705, 750, 91)])
    got = losses.log_loss_from_margins(torch.tensor(q), "logistic")
    ref = [MP["logistic"]["log_loss"](mp.mpf(float(v))) for v in q]
    _assert_close(got, ref, what="logistic dense grid")


# ---------------------------------------------------------------------------------------------
# per-sample log-loss from logits (multi-class)
# ---------------------------------------------------------------------------------------------


def _logits_rows(n_per_scale: int, C: int, seed: int):
    """Logits over scales 1e-3..1e4, labels both the arg-max (huge positive margins, log ℓ down
    to ≈ −1e4) and random (negative margins)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for scale in (1e-3, 1.0, 10.0, 100.0, 1e3, 1e4):
        z = scale * rng.standard_normal((n_per_scale, C))
        y = np.where(rng.random(n_per_scale) < 0.5, z.argmax(1), rng.integers(0, C, n_per_scale))
        rows.append(z)
        labels.append(y)
    # ties and exact zeros: q̃ = −log(C − 1) and log ℓ of a constant row
    rows.append(np.zeros((2, C)))
    labels.append(np.array([0, C - 1]))
    return np.concatenate(rows), np.concatenate(labels)


def _mp_soft_margin(z_row, y):
    zy = mp.mpf(float(z_row[y]))
    return -mp.log(mp.fsum(mp.exp(mp.mpf(float(z)) - zy) for j, z in enumerate(z_row) if j != y))


MP_FROM_LOGITS = {
    # cross-entropy = logistic loss of q̃; multi-class exponential = e^{−q̃}; cubic tail of q̃.
    "cross_entropy": lambda s: MP["logistic"]["log_loss"](s),
    "logistic": lambda s: MP["logistic"]["log_loss"](s),
    "exponential": lambda s: -s,
    "cubic_tail": lambda s: -_mp_cubic_f(s),
}


@pytest.mark.parametrize("name", list(MP_FROM_LOGITS))
def test_log_loss_from_logits_matches_mpmath(name):
    z, y = _logits_rows(40, 10, seed=1)
    soft = [_mp_soft_margin(zr, int(yr)) for zr, yr in zip(z, y)]
    got_soft = losses.multiclass_soft_margin(torch.tensor(z), torch.tensor(y))
    _assert_close(got_soft, soft, what="soft margin q̃")
    loss = CUBIC if name == "cubic_tail" else name
    got = losses.log_loss_from_logits(torch.tensor(z), torch.tensor(y), loss)
    assert got.dtype == torch.float64 and got.shape == (len(y),)
    _assert_close(got, [MP_FROM_LOGITS[name](s) for s in soft], what=f"{name} from logits")


def test_cross_entropy_from_logits_is_torch_cross_entropy_where_it_is_representable():
    """log of torch's own cross-entropy (an independent formula) agrees where CE ≫ 1e-300."""
    gen = torch.Generator().manual_seed(3)
    z = 5 * torch.randn(300, 7, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 7, (300,), generator=gen)
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    got = losses.log_loss_from_logits(z, y, "cross_entropy")
    torch.testing.assert_close(got, ce.log(), rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# log L of the SUM, N up to 1e5, log10 L down to −8700 (and −4e11 for the cubic tail)
# ---------------------------------------------------------------------------------------------


def _grouped_margins(offset: float, spread: float, K: int, N: int, seed: int):
    """K distinct margins in [offset, offset + spread] with multiplicities summing to N, expanded
    and shuffled, so that the exact sum is Σ_k c_k ℓ(v_k)."""
    rng = np.random.default_rng(seed)
    values = offset + spread * rng.random(K)
    counts = rng.multinomial(N - K, np.full(K, 1.0 / K)) + 1
    q = np.repeat(values, counts)
    rng.shuffle(q)
    return values, counts, torch.tensor(q)


# (offset, spread): L ~ N·ℓ(0) down to log L ≈ −2e4 (log10 L ≈ −8700); mixed signs too.
SUM_CASES = [(-10.0, 20.0), (0.0, 5.0), (11.5, 3.0), (30.0, 50.0), (700.0, 60.0),
             (11513.0, 10.0), (-5.0, 1e4), (2e4, 1.0)]


@pytest.mark.parametrize("name", list(LOSSES))
def test_log_sum_of_1e5_losses_matches_mpmath(name):
    loss = LOSSES[name]
    for i, (offset, spread) in enumerate(SUM_CASES):
        if name == "cubic_tail" and offset > 1e3:
            offset, spread = offset / 2, spread  # q³ ≤ 1.1e12 keeps the reference quick
        values, counts, q = _grouped_margins(offset, spread, K=300, N=100_000, seed=i)
        got = float(losses.log_sum(losses.log_loss_from_margins(q, loss)))
        ref = _mp_log_sum(values, counts, MP[name]["log_loss"])
        _assert_close([got], [ref], what=f"{name} log L, margins {offset}+[0,{spread}]")


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("margin", [0.0, 1.0, 37.0, 1e4])
def test_log_sum_of_equal_margins_is_log_n_plus_log_loss(name, margin):
    """N equal margins: log L = log N + log ℓ(q) (closed form), N = 1e5."""
    N = 100_000
    q = torch.full((N,), margin, dtype=torch.float64)
    got = float(losses.log_sum(losses.log_loss_from_margins(q, LOSSES[name])))
    ref = mp.log(N) + MP[name]["log_loss"](mp.mpf(margin))
    _assert_close([got], [ref], what=f"{name}: {N} margins of {margin}")


def test_log_sum_of_1e5_cross_entropies_from_logits():
    """Sum over 1e5 logit rows (500 distinct rows, repeated), down to log10 L ≈ −6500."""
    rng = np.random.default_rng(7)
    K, C = 500, 10
    z = rng.standard_normal((K, C))
    y = z.argmax(1)
    # scale rows so their soft margins spread over [0.1, 1.5e4]
    gap = np.sort(z, 1)[:, -1] - np.sort(z, 1)[:, -2]
    z = z * (np.geomspace(0.1, 1.5e4, K) / gap)[:, None]
    counts = rng.multinomial(100_000 - K, np.full(K, 1.0 / K)) + 1
    order = rng.permutation(100_000)
    Z = torch.tensor(np.repeat(z, counts, axis=0)[order])
    Y = torch.tensor(np.repeat(y, counts)[order])
    for name in ("cross_entropy", "exponential"):
        per_row = [MP_FROM_LOGITS[name](_mp_soft_margin(zr, int(yr))) for zr, yr in zip(z, y)]
        ref = mp.log(mp.fsum(int(c) * mp.exp(v) for v, c in zip(per_row, counts)))
        got = float(losses.log_sum(losses.log_loss_from_logits(Z, Y, name)))
        _assert_close([got], [ref], what=f"{name} log L over 1e5 rows")
    # the same rows scaled until every margin is past 1.2e4: log10 L < −5000
    Zs, zs = Z * 1.2e5, z * 1.2e5
    per_row = [MP_FROM_LOGITS["cross_entropy"](_mp_soft_margin(zr, int(yr)))
               for zr, yr in zip(zs, y)]
    ref = mp.log(mp.fsum(int(c) * mp.exp(v) for v, c in zip(per_row, counts)))
    got = float(losses.log_sum(losses.log_loss_from_logits(Zs, Y, "cross_entropy")))
    assert got / math.log(10) < -5000
    _assert_close([got], [ref], what="cross-entropy log L below 1e-5000")


# ---------------------------------------------------------------------------------------------
# ℓ^{-1}(L) from log L
# ---------------------------------------------------------------------------------------------

LOG_L = [
    -1e12, -1e6, -2e4, -5000 * math.log(10), -2000.0, -745.0, -700.0, -40.0, -20.0000001,
    -20.0, -19.9999999, -19.0, -10.0, -1.0, -0.5, math.log(math.log(2)), -1e-10, 0.0, 1e-10,
    0.5, 1.0, 2.0, 5.0, 36.0, 100.0, 699.9, 700.0, 705.0, 709.7,
]


@pytest.mark.parametrize("name", list(LOSSES))
def test_inverse_from_log_loss_matches_mpmath(name):
    loss = losses.get_loss(LOSSES[name])
    got = [loss.inverse(v) for v in LOG_L]
    ref = [MP[name]["inverse"](mp.mpf(v)) for v in LOG_L]
    _assert_close(got, ref, what=f"{name} ℓ^-1(L)")


def test_cross_entropy_inverse_is_the_logistic_inverse():
    ce, lg = losses.get_loss("cross_entropy"), losses.get_loss("logistic")
    assert [ce.inverse(v) for v in LOG_L] == [lg.inverse(v) for v in LOG_L]


def test_logistic_inverse_beyond_float_range_is_minus_inf():
    """ℓ^{-1}(L) = −log(e^L − 1) ≈ −L is below −1.8e308 once log L > 709.78."""
    loss = losses.get_loss("logistic")
    assert loss.inverse(709.78) == pytest.approx(-math.exp(709.78), rel=1e-15)
    assert loss.inverse(710.0) == -math.inf
    assert loss.inverse(1e4) == -math.inf


def test_inverse_undoes_the_loss_per_loss_at_mpmath_points():
    """ℓ^{-1}(ℓ(q)) = q with ℓ(q) given by mpmath's log ℓ (rounded once to float64)."""
    for name in LOSSES:
        loss = losses.get_loss(LOSSES[name])
        for q in (0.25, 3.0, 40.0, 800.0, 1e4):
            log_l = float(MP[name]["log_loss"](mp.mpf(q)))
            # log ℓ carries one rounding: the inverse inherits |d q / d log ℓ| times it
            slope = abs(float(1 / MP[name]["dlog_loss"](mp.mpf(q))))
            tol = 2e-16 * abs(log_l) * slope + 1e-12 * abs(q)
            assert loss.inverse(log_l) == pytest.approx(q, abs=tol), (name, q)


def test_loss_at_zero_and_names():
    assert losses.get_loss("exponential").log_loss_at_zero == 0.0
    assert losses.get_loss("logistic").log_loss_at_zero == pytest.approx(
        math.log(math.log(2)), rel=1e-15)
    assert losses.get_loss("cross_entropy").log_loss_at_zero == pytest.approx(
        math.log(math.log(2)), rel=1e-15)
    assert losses.get_loss(CUBIC) is CUBIC
    with pytest.raises(MarginlabError, match="unknown loss"):
        losses.get_loss("hinge")


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------

GRAD_MARGINS = [*MARGINS, 1e300, -1e300]


@pytest.mark.parametrize("name", list(LOSSES))
def test_gradient_of_log_loss_is_finite_and_matches_closed_form(name):
    q = torch.tensor(GRAD_MARGINS, dtype=torch.float64, requires_grad=True)
    if name == "cubic_tail":  # q³ overflows past 5.6e102: the user's f, not ours
        q = torch.tensor([v for v in GRAD_MARGINS if abs(v) < 1e100], dtype=torch.float64,
                         requires_grad=True)
    losses.log_loss_from_margins(q, LOSSES[name]).sum().backward()
    ref = [MP[name]["dlog_loss"](mp.mpf(float(v))) for v in q.detach()]
    # near q = 0 the float64 closed form is conditioned like 1/log ℓ: 1e-12 relative holds
    _assert_close(q.grad, ref, what=f"{name} d log ℓ/dq")


def test_logistic_gradient_at_the_branch_point():
    """d log ℓ/dq at q = 0 is −1/(2 log 2) from both sides (not 0, not NaN)."""
    expected = -1 / (2 * math.log(2))
    for v in (0.0, -0.0, 5e-324, -5e-324):
        q = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        losses.log_loss_from_margins(q, "logistic").backward()
        assert q.grad.item() == pytest.approx(expected, rel=1e-14), v


def test_logistic_gradient_has_no_nan_on_a_dense_grid():
    """Including 709.8 < q < 745.1, where e^{−q} is subnormal and 1/e^{−q} overflows."""
    q = torch.cat([torch.linspace(-800, 800, 160_001, dtype=torch.float64),
                   torch.linspace(705, 750, 90_001, dtype=torch.float64)]).requires_grad_()
    losses.log_loss_from_margins(q, "logistic").sum().backward()
    assert torch.isfinite(q.grad).all()
    assert (q.grad < 0).all() and (q.grad >= -1).all()


def test_gradient_of_log_sum_matches_softmax_weights():
    """∂ log L/∂q_n = (ℓ_n / L) · d log ℓ/dq (q_n), with terms down to e^{−1e4}."""
    vals = [0.0, 1e-3, 5.0, -3.0, 18.42, 720.0, 745.0, 1e4]
    for name in ("exponential", "logistic"):
        q = torch.tensor(vals, dtype=torch.float64, requires_grad=True)
        losses.log_sum(losses.log_loss_from_margins(q, name)).backward()
        log_l = [MP[name]["log_loss"](mp.mpf(v)) for v in vals]
        log_total = mp.log(mp.fsum(mp.exp(v) for v in log_l))
        ref = [mp.exp(lv - log_total) * MP[name]["dlog_loss"](mp.mpf(v))
               for lv, v in zip(log_l, vals)]
        _assert_close(q.grad, ref, abs_=1e-300, what=f"{name} ∂ log L/∂q")


@pytest.mark.parametrize("name", ["cross_entropy", "exponential"])
def test_gradient_from_logits_matches_closed_form(name):
    """∂ log ℓ(q̃)/∂z = (d log ℓ/dq̃) · ∂q̃/∂z with ∂q̃/∂z_y = 1 and
    ∂q̃/∂z_j = −e^{z_j − z_y} / Σ_{k≠y} e^{z_k − z_y}."""
    z, y = _logits_rows(6, 5, seed=11)
    zt = torch.tensor(z, requires_grad=True)
    losses.log_loss_from_logits(zt, torch.tensor(y), name).sum().backward()
    assert torch.isfinite(zt.grad).all()
    dlog = MP["logistic" if name == "cross_entropy" else "exponential"]["dlog_loss"]
    ref = []
    for zr, yr in zip(z, y):
        zy = mp.mpf(float(zr[yr]))
        e = [mp.exp(mp.mpf(float(v)) - zy) for v in zr]
        s = mp.fsum(e[j] for j in range(len(zr)) if j != yr)
        d = dlog(-mp.log(s))
        ref.extend(d if j == yr else -d * e[j] / s for j in range(len(zr)))
    _assert_close(zt.grad.reshape(-1), ref, abs_=1e-300, what=f"{name} ∂/∂logits")
