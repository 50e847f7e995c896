"""The loss-based momentum schedule (marginlab.train.schedules, heavy-ball steps in
marginlab.train.steps): its rule on scripted losses, and what
the theory asks of a run — a loss that decreases wherever it is measured, a smoothed margin that
does not decrease once L < ℓ(0) (Lyu & Li, Theorem 4.1 / E.2), and, for a linear model,
convergence to the hard-margin SVM direction (against a QP solved by scipy, not by the code under
test). With momentum 0, the paper's ratios and no guard it must be the paper's schedule, i.e.
reproduce marginlab.train.fit with LossBasedLR.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy.optimize import minimize

from marginlab import margins, models
from marginlab.errors import MarginlabError
from marginlab.train import LossBasedLR, fit
from marginlab.train.fast import LossBasedMomentum, fit_fast
from marginlab.train.schedules import SCHEDULES, StepSizeUnderflowError, make_schedule

LOG_LOG2 = math.log(math.log(2.0))


# --- the rule on scripted losses --------------------------------------------------------------
def test_keep_grows_alpha_rollback_shrinks_it():
    s = LossBasedMomentum(alpha0=1.0, up=2.0, down=4.0)
    assert s.relative_step(-700.0) == 1.0
    assert s.log_lr(math.log(1e-300)) == pytest.approx(300 * math.log(10))
    assert s.decide(-10.0, -10.5) is True
    assert s.alpha == 2.0
    assert s.decide(-10.5, -10.5) is False  # equal loss is no decrease
    assert s.alpha == 0.5
    assert s.decide(-10.5, math.nan) is False
    assert s.decide(-10.5, math.inf) is False
    assert s.alpha == pytest.approx(1 / 32)
    assert s.decide(-10.5, -11.0) is True
    assert s.alpha == pytest.approx(1 / 16)


def test_smoothed_margin_guard():
    for guard, expected in ((True, False), (False, True)):
        s = LossBasedMomentum(alpha0=1.0, monotone_margin=guard)
        assert s.decide(-50.0, -51.0, margins_before=(0.02, 0.03),
                        margins_after=(0.021, 0.0299)) is expected
    s = LossBasedMomentum(alpha0=1.0)
    assert s.decide(-50.0, -51.0, margins_before=(0.02, 0.03), margins_after=(0.02, 0.03))
    with pytest.raises(ValueError):  # before and after must name the same margins
        s.decide(-50.0, -51.0, margins_before=(0.02, 0.03), margins_after=())


def test_active_samples_are_those_within_the_gap_of_the_total_loss():
    log_L = math.log(2.0)
    log_losses = torch.tensor([math.log(1.0), math.log(1.0), -29.0, -31.0, -1e4],
                              dtype=torch.float64)
    s = LossBasedMomentum(active_gap=30.0)
    assert s.active_samples(log_losses, log_L).tolist() == [0, 1, 2]
    assert LossBasedMomentum(active_gap=None).active_samples(log_losses, log_L).tolist() == [
        0, 1, 2, 3, 4]
    with pytest.raises(MarginlabError):
        LossBasedMomentum(active_gap=0.0)


def test_epoch_on_a_subset_cuts_equal_batches_and_estimates_the_full_mean():
    """41 of 100 samples in use, batch 10: five batches of 8-9 (not 10, 10, 10, 10, 1); one
    batch holding the whole subset steps by −α ∇[(1/N) Σ_A ℓ_n] / L̄, written out here with
    torch.nn.functional.softplus."""
    from marginlab.losses import get_loss
    from marginlab.train.steps import heavy_ball_epoch as _sgd_epoch

    gen = torch.Generator().manual_seed(0)
    X = torch.randn(100, 3, dtype=torch.float64, generator=gen)
    y = torch.where(torch.rand(100, generator=gen) < 0.5, -1.0, 1.0).double()
    active = torch.randperm(100, generator=gen)[:41]
    net = torch.nn.Linear(3, 1, bias=False).double()
    sizes = []
    net.register_forward_hook(lambda _m, inp, _out: sizes.append(inp[0].shape[0]))
    params, frame, alpha = list(net.parameters()), math.log(0.3), 0.05
    velocity = [torch.zeros_like(p) for p in params]
    steps = _sgd_epoch(net, params, velocity, X, y, active, get_loss("logistic"), frame, alpha,
                       0.0, 10, torch.Generator().manual_seed(1))
    assert steps == 5 and sorted(sizes) == [8, 8, 8, 8, 9]

    w0 = net.weight.detach().clone()
    w = w0.clone().requires_grad_(True)
    mean = torch.nn.functional.softplus(-y[active] * (X[active] @ w[0])).sum() / 100
    (grad,) = torch.autograd.grad(mean, w)
    velocity = [torch.zeros_like(p) for p in params]
    _sgd_epoch(net, params, velocity, X, y, active, get_loss("logistic"), frame, alpha, 0.0, 64,
               torch.Generator().manual_seed(2))
    torch.testing.assert_close(net.weight.detach() - w0, -alpha * grad / 0.3, rtol=1e-12,
                               atol=1e-15)


def test_underflow_raises_and_cap_holds():
    s = LossBasedMomentum(alpha0=1e-3, up=1.5, down=10.0, min_alpha=1e-5, max_alpha=2e-3)
    assert s.decide(-1.0, -2.0) and s.decide(-2.0, -3.0)
    assert s.alpha == 2e-3  # 1e-3 · 1.5² capped
    assert s.decide(-3.0, -3.0) is False and s.alpha == pytest.approx(2e-4)
    assert s.decide(-3.0, -3.0) is False and s.alpha == pytest.approx(2e-5)
    with pytest.raises(StepSizeUnderflowError):
        s.decide(-3.0, -3.0)


def test_registered_config_round_trip_and_invalid_parameters():
    assert SCHEDULES["loss_based_momentum"] is LossBasedMomentum
    s = LossBasedMomentum(alpha0=0.2, momentum=0.8)
    s.decide(0.0, -1.0)
    t = make_schedule(s.config())
    assert t.config() == s.config()
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict() and t.alpha == s.alpha
    for bad in ({"alpha0": 0.0}, {"momentum": 1.0}, {"momentum": -0.1}, {"up": 1.0},
                {"down": 0.5}, {"alpha0": math.nan}, {"min_alpha": 1.0, "alpha0": 0.1},
                {"max_alpha": 0.01}):
        with pytest.raises(MarginlabError):
            LossBasedMomentum(**bad)


# --- runs -----------------------------------------------------------------------------------
def _separable(n: int, d: int, seed: int, gap: float = 0.2):
    """Gaussian points labelled by a hyperplane through 0, those within ``gap`` of it dropped."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(4 * n, d, generator=gen, dtype=torch.float64)
    u = torch.randn(d, generator=gen, dtype=torch.float64)
    s = X @ u / u.norm()
    keep = s.abs() > gap
    X, s = X[keep][:n], s[keep][:n]
    return X, torch.where(s > 0, 1, -1)


def _records_monotone(history):
    """(loss decreases at every record, smoothed-margin decreases after L < ℓ(0))."""
    losses = [r["log_loss_sum"] for r in history]
    loss_ok = all(b < a for a, b in pairwise(losses))
    drops = [(a[k] - b[k]) for a, b in pairwise(history) if a["log_loss_sum"] < LOG_LOG2
             for k in ("smoothed_margin", "smoothed_margin_multi") if b[k] < a[k]]
    return loss_ok, drops


@pytest.mark.parametrize("batch_size", [None, 16])
def test_two_layer_net_loss_and_smoothed_margin_monotone_at_every_check(batch_size):
    X, y = _separable(40, 5, seed=1)
    net = models.two_layer(5, 20, bias="none", seed=0).double()
    res = fit_fast(net, (X, y), schedule=LossBasedMomentum(), epochs=300,
                   batch_size=batch_size, loss="logistic", progress=False)
    h = res.history
    assert len(h) == 300
    if batch_size is None:
        assert all(r["steps"] == 1 and r["samples_used"] == 40 for r in h)
    else:  # the samples that carry the loss: all at first, fewer once margins spread
        assert h[0]["samples_used"] == 40 and h[0]["steps"] == 3
        assert min(r["samples_used"] for r in h) < 40
        assert all(r["steps"] == math.ceil(r["samples_used"] / 16) for r in h)
    loss_ok, drops = _records_monotone(h)
    assert loss_ok
    assert drops == []
    active = [r for r in h if r["log_loss_sum"] < LOG_LOG2]
    assert len(active) > 250
    assert active[-1]["smoothed_margin"] > 1.5 * active[0]["smoothed_margin"] > 0
    assert h[-1]["log10_loss_mean"] < -20
    # The recorded statistics are margins.measure's at the same parameters.
    ref = margins.measure(net, X, y, "logistic").as_dict()
    for k, v in ref.items():
        assert h[-1][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_the_guard_is_not_vacuous():
    """Without the smoothed-margin test, γ̃ of the same run does go down between epochs while
    the loss still decreases; with it, never."""
    X, y = _separable(40, 5, seed=2)
    drops = {}
    for guard in (False, True):
        net = models.two_layer(5, 20, bias="none", seed=3).double()
        res = fit_fast(net, (X, y), schedule=LossBasedMomentum(monotone_margin=guard),
                       epochs=150, batch_size=None, loss="logistic", progress=False)
        loss_ok, drops[guard] = _records_monotone(res.history)
        assert loss_ok
    assert len(drops[False]) > 5
    assert drops[True] == []


def test_without_momentum_and_guard_it_is_the_papers_schedule():
    """μ = 0, up 2^{1/5}, down 2^{1/10}, no guard: the same epochs, retries and parameters as
    marginlab.train.fit with LossBasedLR (Lyu & Li, Appendix L.1), when the batch size divides
    N (otherwise fit_fast cuts equal batches where fit leaves a short last one)."""
    X, y = _separable(50, 4, seed=4)
    runs = []
    paper = LossBasedMomentum(momentum=0.0, up=2 ** 0.2, down=2 ** 0.1, monotone_margin=False,
                              active_gap=None)
    for train, schedule in ((fit, LossBasedLR()), (fit_fast, paper)):
        net = models.two_layer(4, 10, bias="none", seed=5).double()
        res = train(net, (X, y), schedule=schedule, epochs=40, batch_size=10, seed=3,
                    loss="logistic", progress=False)
        runs.append((net, res.history))
    (net_a, h_a), (net_b, h_b) = runs
    assert sum(r["retries"] for r in h_a) > 5  # the rule was exercised
    assert [r["retries"] for r in h_a] == [r["retries"] for r in h_b]
    for a, b in zip(h_a, h_b):
        # Equal up to float64 roundoff (the two loops sum the loss in different orders),
        # which 40 epochs amplify to about 1e-11.
        assert b["log_loss_sum"] == pytest.approx(a["log_loss_sum"], rel=1e-9)
        assert b["log10_lr"] == pytest.approx(a["log10_lr"], rel=1e-9)
    for p, q in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-10)


def _svm_margin(X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Hard-margin SVM through the origin: min ½‖w‖² s.t. y_n wᵀx_n ≥ 1 (SLSQP)."""
    cons = {"type": "ineq", "fun": lambda w: y * (X @ w) - 1, "jac": lambda w: y[:, None] * X}
    w0 = np.linalg.lstsq(X, y.astype(float), rcond=None)[0]
    w0 = w0 / np.min(y * (X @ w0))
    sol = minimize(lambda w: 0.5 * w @ w, w0, jac=lambda w: w, constraints=[cons],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 1000})
    assert sol.success
    w = sol.x
    return 1.0 / np.linalg.norm(w), w / np.linalg.norm(w)


@pytest.mark.parametrize("loss", ["exponential", "logistic"])
def test_linear_model_converges_to_the_svm_direction(loss):
    X, y = _separable(30, 4, seed=5, gap=0.05)
    gamma_svm, w_svm = _svm_margin(X.numpy(), y.numpy().astype(float))
    net = models.mlp(4, [], 1, bias="none", seed=0).double()
    res = fit_fast(net, (X, y), schedule=LossBasedMomentum(), epochs=3000, batch_size=None,
                   loss=loss, stop_at_log10_loss=-300, progress=False)
    assert res.stop_reason == "target"
    last = res.history[-1]
    w = net.fc1.weight.detach()[0].numpy()
    assert last["normalized_margin"] <= gamma_svm * (1 + 1e-9)
    assert last["normalized_margin"] == pytest.approx(gamma_svm, rel=0.01)
    assert w @ w_svm / np.linalg.norm(w) > 0.999


def test_resume_continues_exactly(tmp_path):
    X, y = _separable(30, 4, seed=7)

    def run(epochs, **kw):
        net = models.two_layer(4, 8, bias="none", seed=1).double()
        res = fit_fast(net, (X, y), (X[:10], y[:10]), schedule=LossBasedMomentum(),
                       epochs=epochs, batch_size=8, loss="logistic", progress=False, **kw)
        return net, res

    straight, res_straight = run(12)
    run(5, run_dir=tmp_path / "r")
    resumed, res = run(12, run_dir=tmp_path / "r", resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert [r["epoch"] for r in res.history] == list(range(1, 13))
    assert [r["log_loss_sum"] for r in res.history] == [
        r["log_loss_sum"] for r in res_straight.history]
    for f in ("config.json", "metrics.jsonl", "events.jsonl", "snapshots/model-5.safetensors",
              "checkpoints/last.safetensors"):
        assert (tmp_path / "r" / f).exists()
    # one checkpoint file holds the velocity too: no second file to lose
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == [
        "last.safetensors"]
    ckpt = load_file(str(tmp_path / "r" / "checkpoints" / "last.safetensors"))
    assert {k for k in ckpt if k.startswith("step.velocity.")} == {
        f"step.velocity.{i}" for i in range(len(list(resumed.parameters())))}


def test_fit_hands_the_schedule_over_to_its_loop():
    X, y = _separable(20, 3, seed=9)
    nets, histories = [], []
    for train in (fit, fit_fast):
        net = models.two_layer(3, 6, bias="none", seed=2).double()
        res = train(net, (X, y), schedule=LossBasedMomentum(), epochs=20, batch_size=8,
                    loss="logistic", progress=False)
        nets.append(net)
        histories.append([r["log_loss_sum"] for r in res.history])
    assert histories[0] == histories[1]
    for p, q in zip(*(n.parameters() for n in nets)):
        assert torch.equal(p, q)


def test_other_schedules_are_refused_by_fit_fast():
    X, y = _separable(10, 3, seed=0)
    net = models.two_layer(3, 4, bias="none").double()
    with pytest.raises(MarginlabError, match="LossBasedMomentum"):
        fit_fast(net, (X, y), schedule=make_schedule({"name": "constant"}), epochs=1)


@pytest.mark.parametrize("power", [2.0, 3.0])
def test_weight_decay_with_momentum_is_the_penalized_gradient_step(power):
    """Full batch, one epoch from a zero velocity: θ1 = θ0 − α ∇[L̄ + λ‖θ‖^r](θ0) / L̄(θ0), the
    gradient taken by autograd of the penalized mean loss written with softplus (a reference
    independent of the trainer's log-space code)."""
    from marginlab.train import WeightDecay

    X, y = _separable(20, 3, seed=3)
    net = models.mlp(3, [], 1, bias="none", seed=4).double()
    w0 = net.fc1.weight.detach().clone()
    lam, alpha = 0.05, 0.1
    res = fit(net, (X, y), schedule=LossBasedMomentum(alpha0=alpha, monotone_margin=False),
              epochs=1, batch_size=None, loss="logistic",
              weight_decay=WeightDecay(lam, power), progress=False)
    assert res.history[0]["retries"] == 0 and res.history[0]["weight_decay"] == lam
    w = w0.clone().requires_grad_(True)
    mean = torch.nn.functional.softplus(-y.double() * (X @ w[0])).mean()
    penalized = mean + lam * w.pow(2).sum().sqrt() ** power
    (grad,) = torch.autograd.grad(penalized, w)
    expected = w0 - alpha * grad / float(mean.detach())
    torch.testing.assert_close(net.fc1.weight.detach(), expected, rtol=1e-12, atol=1e-14)
