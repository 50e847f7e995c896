"""margins.measure / per_sample against hand computations and mpmath (DESIGN.md §2).

References are computed here from the raw float64 outputs with numpy and mpmath (60 digits):
margins, norms, log L of the SUM and ℓ^{-1}(L). The sandwich facts tested are, for a model with
C outputs (C − 1 := 1 for one output), N samples and order L:

    exponential loss:     γ − log(N(C−1))/ρ^L          ≤ γ̃ ≤ γ
    logistic / CE loss:   γ − (log(N(C−1)) + L)/ρ^L    ≤ γ̃ ≤ γ

Proof of the second: ℓ^{-1}(L) = −log(e^L − 1) ≥ −log L − L (as e^L − 1 ≤ L e^L), and
L ≤ Σ_n Σ_{j≠y} e^{−(Φ_y − Φ_j)} ≤ N (C−1) e^{−q_min}; the upper bound holds because ℓ is
decreasing and L ≥ ℓ(q̃_{n*}) with q̃_{n*} ≤ q_{n*} = q_min. So the logistic sandwich is the
exponential one up to the log1p correction L (which is ≈ L/2, negligible once L ≪ 1). With
C = 10 the lower bound needs the (C − 1) factor: log N alone is not enough for multi-class.
"""

from __future__ import annotations

import copy
import math

import mpmath as mp
import numpy as np
import pytest
import torch
from torch import nn

from marginlab import margins, models
from marginlab.errors import MarginlabError, NotHomogeneousError

mp.mp.dps = 60

FIELDS = ("q_min", "rho", "norm_product", "order", "normalized_margin",
          "normalized_margin_multi", "smoothed_margin", "smoothed_margin_multi", "log_loss_sum",
          "log10_loss_mean", "train_acc", "n")


def _mp_log_loss(loss: str, s):
    """log ℓ of a (soft) margin, in mpmath."""
    if loss == "exponential":
        return -s
    return mp.log(mp.log1p(mp.exp(-s)))


def _mp_inverse(loss: str, log_L):
    if loss == "exponential":
        return -log_L
    return -mp.log(mp.expm1(mp.exp(log_L)))


def _mp_soft_margins(out: np.ndarray, y: np.ndarray):
    """q̃_n = −log Σ_{j≠y} e^{Φ_j − Φ_y} for (N, C) outputs; y_n Φ_n for one output (y ∈ ±1)."""
    if out.shape[1] == 1:
        return [mp.mpf(float(v)) for v in y * out[:, 0]]
    res = []
    for row, label in zip(out, y):
        zy = mp.mpf(float(row[label]))
        res.append(-mp.log(mp.fsum(mp.exp(mp.mpf(float(z)) - zy)
                                   for j, z in enumerate(row) if j != label)))
    return res


def _hand_margins(out: np.ndarray, y: np.ndarray) -> np.ndarray:
    if out.shape[1] == 1:
        return y * out[:, 0]
    idx = np.arange(len(y))
    others = out.copy()
    others[idx, y] = -np.inf
    return out[idx, y] - others.max(1)


def _norm(*arrays) -> float:
    return math.sqrt(sum(float(np.sum(np.asarray(a, dtype=np.float64) ** 2)) for a in arrays))


def _np(p: torch.Tensor) -> np.ndarray:
    return p.detach().double().numpy()


def _expected_stats(out, y, loss, rho, log_norm_product, order):
    """MarginStats fields from raw outputs, by numpy + mpmath."""
    q = _hand_margins(out, y)
    soft = _mp_soft_margins(out, y)
    log_L = mp.log(mp.fsum(mp.exp(_mp_log_loss(loss, s)) for s in soft))
    inv = _mp_inverse(loss, log_L)
    rho_l = mp.mpf(rho) ** order
    prod = mp.exp(log_norm_product)
    n = len(y)
    return {
        "q_min": q.min(), "rho": rho, "norm_product": prod, "order": order,
        "normalized_margin": q.min() / rho_l, "normalized_margin_multi": q.min() / prod,
        "smoothed_margin": inv / rho_l, "smoothed_margin_multi": inv / prod,
        "log_loss_sum": log_L, "log10_loss_mean": (log_L - mp.log(n)) / mp.log(10),
        "train_acc": float(np.mean(q > 0)), "n": n,
    }


def _assert_stats(stats, expected, rel=1e-12, abs_=1e-14):
    for f in FIELDS:
        got, want = getattr(stats, f), float(expected[f])
        assert math.isfinite(got), f"{f} is not finite: {got}"
        assert got == pytest.approx(want, rel=rel, abs=abs_), f"{f}: {got} != {want}"


# ---------------------------------------------------------------------------------------------
# hand computations on tiny models
# ---------------------------------------------------------------------------------------------

X3 = torch.tensor([[1.0, 0.5, -0.25], [0.2, -1.0, 0.75], [-0.6, 0.3, 0.9],
                   [1.5, 1.0, 0.1], [0.05, -0.4, -1.2], [-2.0, 0.6, 0.3]], dtype=torch.float64)


def _linear(out_features: int, weight, bias=None) -> nn.Module:
    lin = nn.Linear(3, out_features, bias=bias is not None).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(weight, dtype=torch.float64))
        if bias is not None:
            lin.bias.copy_(torch.tensor(bias, dtype=torch.float64))
    return lin


@pytest.mark.parametrize("labels", ["pm1", "01"])
@pytest.mark.parametrize("loss", ["exponential", "logistic"])
def test_binary_linear_model_by_hand(labels, loss):
    w = [[0.5, -1.0, 2.0]]
    model = _linear(1, w)
    pm = np.array([1, -1, 1, 1, -1, -1])
    y = torch.tensor(pm if labels == "pm1" else (pm + 1) // 2)
    out = X3.numpy() @ np.array(w).T
    stats = margins.measure(model, X3, y, loss)
    rho = _norm(w)
    _assert_stats(stats, _expected_stats(out, pm, loss, rho, math.log(rho), 1.0))
    # by hand: Φ = (−0.5, 2.6, 1.2, −0.05, −1.975, −1.0), q = y·Φ
    by_hand = torch.tensor([-0.5, -2.6, 1.2, -0.05, 1.975, 1.0], dtype=torch.float64)
    torch.testing.assert_close(margins.per_sample(model, X3, y), by_hand, rtol=1e-15,
                               atol=1e-15)
    assert stats.q_min == pytest.approx(-2.6, rel=1e-15)
    assert stats.train_acc == 0.5
    assert stats.normalized_margin == pytest.approx(-2.6 / math.sqrt(5.25), rel=1e-15)


def test_binary_labels_float_and_int_agree():
    model = _linear(1, [[0.5, -1.0, 2.0]])
    q_int = margins.per_sample(model, X3, torch.tensor([1, -1, 1, 1, -1, -1]))
    q_01 = margins.per_sample(model, X3, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0]))
    assert torch.equal(q_int, q_01)


@pytest.mark.parametrize("loss", ["cross_entropy", "exponential"])
def test_multiclass_linear_model_by_hand(loss):
    w = [[0.5, -1.0, 2.0], [1.0, 0.25, -0.5], [-0.3, 0.8, 0.1], [0.0, -0.6, 0.9]]
    model = _linear(4, w)
    y = np.array([2, 0, 3, 1, 3, 0])
    out = X3.numpy() @ np.array(w).T
    stats = margins.measure(model, X3, torch.tensor(y), loss)
    rho = _norm(w)
    _assert_stats(stats, _expected_stats(out, y, loss, rho, math.log(rho), 1.0))
    expected_q = _hand_margins(out, y)
    assert 0 < stats.train_acc < 1  # the hand example has both signs
    torch.testing.assert_close(margins.per_sample(model, X3, torch.tensor(y)),
                               torch.tensor(expected_q), rtol=1e-15, atol=0)
    outputs = margins.model_outputs(model, X3, torch.tensor(y), loss)
    want_ll = [float(_mp_log_loss(loss, s)) for s in _mp_soft_margins(out, y)]
    np.testing.assert_allclose(outputs.log_loss.numpy(), want_ll, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("first_bias", [False, True])
def test_two_layer_relu_network_order_and_norms_by_hand(first_bias):
    """Order 2; the first layer's bias belongs to the first layer (in ρ and in ‖w_1‖)."""
    gen = torch.Generator().manual_seed(5)
    w1 = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    b1 = torch.randn(6, generator=gen, dtype=torch.float64) if first_bias else None
    w2 = torch.randn(1, 6, generator=gen, dtype=torch.float64)
    model = nn.Sequential(_linear(6, w1.tolist(), None if b1 is None else b1.tolist()),
                          nn.ReLU(), nn.Linear(6, 1, bias=False).double())
    with torch.no_grad():
        model[2].weight.copy_(w2)
    pm = np.array([1, -1, 1, 1, -1, -1])
    h = X3.numpy() @ _np(w1).T + (0 if b1 is None else _np(b1))
    out = np.maximum(h, 0) @ _np(w2).T
    first = [_np(w1)] + ([] if b1 is None else [_np(b1)])
    rho = _norm(*first, _np(w2))
    log_prod = math.log(_norm(*first)) + math.log(_norm(_np(w2)))
    stats = margins.measure(model, X3, torch.tensor(pm), "logistic")
    _assert_stats(stats, _expected_stats(out, pm, "logistic", rho, log_prod, 2.0))


def test_batch_size_does_not_change_results():
    """Any batch size gives the same numbers (up to float64 rounding of batched matmuls)."""
    model = models.mlp(64, [32, 16], 10, seed=3).double()
    gen = torch.Generator().manual_seed(4)
    X = torch.rand(103, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (103,), generator=gen)
    ref_q = margins.per_sample(model, X, y, batch_size=103)
    ref = margins.measure(model, X, y, batch_size=1000)
    for bs in (1, 7, 50):
        torch.testing.assert_close(margins.per_sample(model, X, y, batch_size=bs), ref_q,
                                   rtol=1e-12, atol=1e-12 * float(ref_q.abs().max()))
        stats = margins.measure(model, X, y, batch_size=bs)
        for f in FIELDS:
            assert getattr(stats, f) == pytest.approx(getattr(ref, f), rel=1e-12, abs=1e-14), f


# ---------------------------------------------------------------------------------------------
# mnist_cnn at random parameters and scaled to log10 L ≈ −3000
# ---------------------------------------------------------------------------------------------


def _sandwich(stats, loss: str, num_outputs: int):
    """Assert γ − (log(N(C−1)) [+ L])/ρ^L ≤ γ̃ ≤ γ (module docstring), with rounding slack."""
    n = stats.n
    classes = max(num_outputs - 1, 1)
    extra = 0.0 if loss == "exponential" else math.exp(min(stats.log_loss_sum, 700.0))
    width = (math.log(n * classes) + extra) / stats.rho**stats.order
    width_multi = (math.log(n * classes) + extra) / stats.norm_product
    slack = 1e-12 * abs(stats.normalized_margin) + 1e-300
    slack_multi = 1e-12 * abs(stats.normalized_margin_multi) + 1e-300
    assert stats.smoothed_margin <= stats.normalized_margin + slack
    assert stats.smoothed_margin >= stats.normalized_margin - width - slack
    assert stats.smoothed_margin_multi <= stats.normalized_margin_multi + slack_multi
    assert stats.smoothed_margin_multi >= stats.normalized_margin_multi - width_multi - slack_multi


def _mnist_norms(model):
    p = {k: _np(v) for k, v in model.named_parameters()}
    rho = _norm(*p.values())
    log_prod = sum(math.log(_norm(p[f"{layer}.weight"]))
                   for layer in ("conv1", "conv2", "fc1", "fc2"))
    return rho, log_prod


@pytest.fixture(scope="module")
def mnist_setup():
    """mnist_cnn (float64, seed 0), 60 random images labelled by the model's own arg-max, with
    the smallest-margin image repeated 4 times more (so γ̃ < γ strictly at large scale)."""
    model = models.mnist_cnn(seed=0).double().eval()
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(60, 1, 28, 28, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        out = model(X)
    y = out.argmax(1)
    q = _hand_margins(out.numpy(), y.numpy())
    worst = int(np.argmin(q))
    X = torch.cat([X, X[worst : worst + 1].repeat(4, 1, 1, 1)])
    y = torch.cat([y, y[worst : worst + 1].repeat(4)])
    y_random = torch.randint(0, 10, (len(y),), generator=gen)
    return model, X, y, y_random, float(q.min())


def test_mnist_cnn_random_parameters(mnist_setup):
    model, X, _, y_random, _ = mnist_setup
    with torch.no_grad():
        out = model(X).numpy()
    rho, log_prod = _mnist_norms(model)
    for loss in ("cross_entropy", "exponential"):
        stats = margins.measure(model, X, y_random, loss)
        assert stats.q_min < 0 < stats.train_acc < 1
        _assert_stats(stats, _expected_stats(out, y_random.numpy(), loss, rho, log_prod, 4.0),
                      rel=1e-10)
        _sandwich(stats, loss, 10)


def test_mnist_cnn_scaled_to_log10_loss_minus_3000(mnist_setup):
    """Scale θ by c with c⁴ q_min = 3000 log 10 (4-homogeneity): every field finite and exact,
    γ and γ_multi unchanged, and the sandwich holds with a gap of ≈ log 5/ρ⁴."""
    model, X, y, _, q_min0 = mnist_setup
    assert q_min0 > 0
    c = (3000 * math.log(10) / q_min0) ** 0.25
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(c)
        out = scaled(X).numpy()
    rho, log_prod = _mnist_norms(scaled)
    base = margins.measure(model, X, y, "exponential")
    for loss in ("exponential", "cross_entropy"):
        stats = margins.measure(scaled, X, y, loss)
        assert -3003 < stats.log10_loss_mean < -3000
        _assert_stats(stats, _expected_stats(out, y.numpy(), loss, rho, log_prod, 4.0),
                      rel=1e-10)
        assert stats.train_acc == 1.0
        assert stats.q_min == pytest.approx(c**4 * base.q_min, rel=1e-10)
        assert stats.rho == pytest.approx(c * base.rho, rel=1e-12)
        assert stats.norm_product == pytest.approx(c**4 * base.norm_product, rel=1e-12)
        assert stats.normalized_margin == pytest.approx(base.normalized_margin, rel=1e-10)
        assert stats.normalized_margin_multi == pytest.approx(base.normalized_margin_multi,
                                                              rel=1e-10)
        _sandwich(stats, loss, 10)
        # five copies of the worst sample: ℓ^{-1}(L) ≈ q_min − log 5, strictly inside
        gap = (stats.normalized_margin - stats.smoothed_margin) * stats.rho**4
        assert gap == pytest.approx(math.log(5), rel=1e-3)


@pytest.mark.parametrize("loss", ["logistic", "exponential"])
def test_binary_mlp_sandwich_random_and_scaled(loss):
    """One output, y ∈ {±1}: γ − (log N [+ L])/ρ³ ≤ γ̃ ≤ γ at random θ and at log10 L ≈ −3000."""
    model = models.mlp(20, [16, 8], 1, seed=1).double()
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(300, 20, generator=gen, dtype=torch.float64)
    y_random = torch.randint(0, 2, (300,), generator=gen) * 2 - 1
    stats = margins.measure(model, X, y_random, loss)
    assert stats.q_min < 0 and stats.order == 3.0
    _sandwich(stats, loss, 1)
    with torch.no_grad():
        y = torch.sign(model(X)[:, 0]).long()
    q_min0 = margins.measure(model, X, y, loss).q_min
    c = (3000 * math.log(10) / q_min0) ** (1 / 3)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(c)
    stats = margins.measure(model, X, y, loss)
    assert all(math.isfinite(getattr(stats, f)) for f in FIELDS)
    assert -3003 < stats.log10_loss_mean < -2990
    _sandwich(stats, loss, 1)


# ---------------------------------------------------------------------------------------------
# conventions
# ---------------------------------------------------------------------------------------------


def test_bias_all_is_refused_unless_paper_with_bias():
    model = models.mnist_cnn("all", seed=0).double()
    gen = torch.Generator().manual_seed(8)
    X = torch.rand(12, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (12,), generator=gen)
    # zero-initialized biases must not make it look homogeneous
    with pytest.raises(NotHomogeneousError, match="not homogeneous"):
        margins.measure(model, X, y)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    stats = margins.measure(model, X, y, "cross_entropy", convention="paper_with_bias")
    p = {k: _np(v) for k, v in model.named_parameters()}
    groups = [[p["conv1.weight"], p["conv1.bias"]], [p["conv2.weight"]], [p["fc1.weight"]],
              [p["fc2.weight"]]]
    rho = _norm(*(a for g in groups for a in g))  # biases past the first layer left out
    log_prod = sum(math.log(_norm(*g)) for g in groups)
    with torch.no_grad():
        out = model(X).numpy()
    _assert_stats(stats, _expected_stats(out, y.numpy(), "cross_entropy", rho, log_prod, 4.0),
                  rel=1e-10)


def test_unknown_convention():
    with pytest.raises(MarginlabError, match="convention"):
        margins.measure(_linear(1, [[1.0, 0.0, 0.0]]), X3, torch.ones(6), convention="paper")


def test_non_homogeneous_activation_is_refused():
    model = nn.Sequential(nn.Linear(3, 5, bias=False), nn.Tanh(),
                          nn.Linear(5, 2, bias=False)).double()
    with pytest.raises(NotHomogeneousError):
        margins.measure(model, X3, torch.tensor([0, 1, 0, 1, 1, 0]))


# ---------------------------------------------------------------------------------------------
# bad input: one-line MarginlabError
# ---------------------------------------------------------------------------------------------


class _DropsSamples(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4, bias=False)

    def forward(self, x):
        return self.lin(x)[:1]


def _multi():
    return _linear(4, [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]])


BAD_INPUTS = {
    "label above range": (_multi, X3, torch.tensor([0, 1, 2, 3, 4, 0]), r"labels must be in"),
    "negative label": (_multi, X3, torch.tensor([0, 1, 2, 3, -1, 0]), r"labels must be in"),
    "binary label 2": (lambda: _linear(1, [[1.0, 0, 0]]), X3, torch.tensor([0, 1, 2, 1, 0, 1]),
                       r"one output needs labels"),
    "10 classes, 1 output": (lambda: _linear(1, [[1.0, 0, 0]]), X3,
                             torch.tensor([0, 1, 9, 3, 4, 5]), r"one output needs labels"),
    "10 classes, 4 outputs": (_multi, X3, torch.tensor([0, 1, 9, 3, 2, 1]), r"labels must be in"),
    "fractional labels": (_multi, X3, torch.tensor([0.0, 1.5, 2, 3, 1, 0]), r"integers"),
    "NaN labels": (_multi, X3, torch.tensor([0.0, math.nan, 2, 3, 1, 0]), r"integers"),
    "NaN input": (_multi, X3.clone().index_fill_(0, torch.tensor([2]), math.nan),
                  torch.tensor([0, 1, 2, 3, 1, 0]), r"NaN or inf \(1 samples, first at index 2"),
    "inf input": (_multi, X3.clone().index_fill_(0, torch.tensor([4]), -math.inf),
                  torch.tensor([0, 1, 2, 3, 1, 0]), r"NaN or inf"),
    "count mismatch": (_multi, X3, torch.tensor([0, 1, 2]), r"6 inputs but 3 labels"),
    "2-D labels": (_multi, X3, torch.zeros(6, 1, dtype=torch.long), r"1-D"),
    "empty": (_multi, X3[:0], torch.zeros(0, dtype=torch.long), r"empty"),
    "scalar input": (_multi, torch.tensor(1.0), torch.tensor([0]), r"sample dimension"),
    "numpy input": (_multi, X3.numpy(), torch.zeros(6, dtype=torch.long), r"torch tensors"),
    "input shape": (_multi, torch.rand(6, 5, dtype=torch.float64), torch.zeros(6, dtype=torch.long),
                    r"cannot be applied to inputs of shape \(5,\)"),
    "output batch": (lambda: _DropsSamples().double(), X3, torch.zeros(6, dtype=torch.long),
                     r"returned 1 outputs for 6 inputs"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_one_line_error(case):
    make_model, X, y, pattern = BAD_INPUTS[case]
    for call in (lambda: margins.measure(make_model(), X, y),
                 lambda: margins.per_sample(make_model(), X, y)):
        with pytest.raises(MarginlabError, match=pattern) as info:
            call()
        assert "\n" not in str(info.value)


def test_bad_batch_size_and_loss():
    with pytest.raises(MarginlabError, match="batch_size"):
        margins.measure(_multi(), X3, torch.zeros(6, dtype=torch.long), batch_size=0)
    with pytest.raises(MarginlabError, match="unknown loss"):
        margins.measure(_multi(), X3, torch.zeros(6, dtype=torch.long), loss="hinge")


@pytest.mark.parametrize("value,log_scale", [
    (1e300, 320 * math.log(10)),     # ρ^L = 1e320 overflows float64, the ratio 1e-20 does not
    (-2.5e200, 700 * math.log(10)),  # negative margins keep their sign
    (3.0, -1.0),
    (7e-300, -700.0),                # ratio 7e-300 · e^700 ≈ 7e4
])
def test_scaled_divides_in_log_space(value, log_scale):
    mp.mp.dps = 60
    ref = mp.mpf(value) / mp.exp(mp.mpf(log_scale))
    got = margins.scaled(value, log_scale)
    assert math.isfinite(got) and got == pytest.approx(float(ref), rel=1e-12)


def test_scaled_edges():
    assert margins.scaled(0.0, 1e4) == 0.0
    assert margins.scaled(1.0, 1e4) == 0.0  # a true underflow, not an error
    assert margins.scaled(-1.0, -1e4) == -math.inf  # a true overflow keeps its sign
    assert math.isnan(margins.scaled(math.nan, 1.0))
