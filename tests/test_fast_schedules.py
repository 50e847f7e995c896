"""The line-search schedule (marginlab.train.fast): its rule on scripted losses, and what the
theory asks of a run — a loss that decreases wherever it is measured, a smoothed margin that does
not decrease once L < ℓ(0) (Lyu & Li, Theorem 4.1 / E.2), and, for a linear model, convergence to
the hard-margin SVM direction (checked against a QP solved by scipy, not by the code under test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from marginlab import margins, models
from marginlab.errors import MarginlabError
from marginlab.train import fit
from marginlab.train.fast import LineSearchGD, fit_steps
from marginlab.train.schedules import SCHEDULES, StepSizeUnderflowError, make_schedule

LOG_LOG2 = math.log(math.log(2.0))


# --- the rule on scripted losses --------------------------------------------------------------
def test_trial_step_is_beta_over_squared_gradient_norm():
    s = LineSearchGD(beta0=0.3, momentum=0.9)
    assert s.trial(4.0, has_velocity=False) == (0.075, 0.0)  # no displacement yet: no momentum
    assert s.trial(4.0, has_velocity=True) == (0.075, 0.9)
    assert s.alpha == 0.075
    assert s.log_lr(math.log(1e-300)) == pytest.approx(math.log(0.075) + 300 * math.log(10))


def test_accept_grows_beta_reject_drops_momentum_then_shrinks_beta():
    s = LineSearchGD(beta0=1.0, momentum=0.5, up=2.0, down=4.0)
    s.trial(1.0, has_velocity=True)
    assert s.decide(-10.0, -10.5) is True
    assert s.beta == 2.0
    _, mu = s.trial(1.0, has_velocity=True)
    assert mu == 0.5
    assert s.decide(-10.5, -10.4) is False  # rejected with momentum: same β, no momentum
    assert s.beta == 2.0
    assert s.trial(1.0, has_velocity=True) == (2.0, 0.0)
    assert s.decide(-10.5, math.nan) is False  # rejected without momentum: β shrinks
    assert s.beta == 0.5
    assert s.trial(1.0, has_velocity=True) == (0.5, 0.0)
    assert s.decide(-10.5, -10.5) is False  # equal loss is no decrease
    assert s.beta == 0.125
    assert s.decide(-10.5, -11.0) is True
    assert s.beta == 0.25
    assert s.trial(1.0, has_velocity=True)[1] == 0.5  # momentum back after a success


def test_armijo_asks_for_a_fraction_of_the_promised_decrease():
    s = LineSearchGD(beta0=1.0, momentum=0.0, up=2.0, down=2.0, armijo=0.5)
    s.trial(1.0, has_velocity=False)
    assert s.decide(0.0, -0.4) is False  # promised 1 nat, asked for 0.5, got 0.4
    s.trial(1.0, has_velocity=False)
    assert s.decide(0.0, -0.3) is True  # promised 0.5, asked 0.25


def test_smoothed_margin_guard():
    guarded = LineSearchGD(beta0=1.0, momentum=0.0)
    free = LineSearchGD(beta0=1.0, momentum=0.0, monotone_margin=False)
    for s, expected in ((guarded, False), (free, True)):
        s.trial(1.0, has_velocity=False)
        assert s.decide(-50.0, -51.0, margins_before=(0.02, 0.03),
                        margins_after=(0.021, 0.0299)) is expected
    guarded.trial(1.0, has_velocity=False)
    assert guarded.decide(-50.0, -51.0, margins_before=(0.02, 0.03),
                          margins_after=(0.02, 0.03)) is True


def test_underflow_raises_and_cap_holds():
    s = LineSearchGD(beta0=1e-3, momentum=0.0, up=1.5, down=10.0, min_beta=1e-5, max_beta=2e-3)
    s.trial(1.0, has_velocity=False)
    assert s.decide(-1.0, -2.0) and s.decide(-2.0, -3.0)
    assert s.beta == 2e-3  # 1e-3 · 1.5² capped
    assert s.decide(-3.0, -3.0) is False and s.beta == pytest.approx(2e-4)
    assert s.decide(-3.0, -3.0) is False and s.beta == pytest.approx(2e-5)
    with pytest.raises(StepSizeUnderflowError):
        s.decide(-3.0, -3.0)


def test_registered_config_round_trip_and_invalid_parameters():
    assert SCHEDULES["line_search"] is LineSearchGD
    s = LineSearchGD(beta0=0.2, momentum=0.8, steps_per_epoch=3)
    s.trial(2.0, has_velocity=False)
    s.decide(0.0, -1.0)
    t = make_schedule(s.config())
    assert t.config() == s.config()
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict()
    for bad in ({"beta0": 0.0}, {"momentum": 1.0}, {"up": 1.0}, {"down": 0.5},
                {"armijo": 1.0}, {"steps_per_epoch": 0}, {"beta0": math.nan},
                {"min_beta": 1.0, "beta0": 0.1}):
        with pytest.raises(MarginlabError):
            LineSearchGD(**bad)


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
    loss_ok = all(b < a for a, b in zip(losses, losses[1:]))
    drops = [(a[k] - b[k]) for a, b in zip(history, history[1:]) if a["log_loss_sum"] < LOG_LOG2
             for k in ("smoothed_margin", "smoothed_margin_multi") if b[k] < a[k]]
    return loss_ok, drops


def test_two_layer_net_loss_and_smoothed_margin_monotone_at_every_step():
    X, y = _separable(40, 5, seed=1)
    net = models.two_layer(5, 20, bias="none", seed=0).double()
    res = fit_steps(net, (X, y), schedule=LineSearchGD(steps_per_epoch=1), epochs=300,
                    batch_size=None, loss="logistic", progress=False)
    h = res.history
    assert len(h) == 300 and all(r["steps"] == 1 for r in h)
    loss_ok, drops = _records_monotone(h)
    assert loss_ok
    assert drops == []
    active = [r for r in h if r["log_loss_sum"] < LOG_LOG2]
    assert len(active) > 200
    assert active[-1]["smoothed_margin"] > 1.5 * active[0]["smoothed_margin"] > 0
    assert h[-1]["log10_loss_mean"] < -30
    # The recorded statistics are margins.measure's at the same parameters.
    ref = margins.measure(net, X, y, "logistic").as_dict()
    for k, v in ref.items():
        assert h[-1][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


def test_the_guard_is_not_vacuous():
    """Without the smoothed-margin test the same run's γ̃ does go down between steps (large
    steps make it zigzag while the loss still decreases); with it, never."""
    X, y = _separable(40, 5, seed=2)
    drops = {}
    for guard in (False, True):
        net = models.two_layer(5, 20, bias="none", seed=3).double()
        res = fit_steps(net, (X, y), schedule=LineSearchGD(steps_per_epoch=1,
                                                            monotone_margin=guard),
                        epochs=150, batch_size=None, loss="logistic", progress=False)
        loss_ok, drops[guard] = _records_monotone(res.history)
        assert loss_ok
    assert len(drops[False]) > 20
    assert drops[True] == []


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
    res = fit_steps(net, (X, y), schedule=LineSearchGD(), epochs=1000, batch_size=None,
                    loss=loss, stop_at_log10_loss=-400, progress=False)
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
        res = fit_steps(net, (X, y), (X[:10], y[:10]), schedule=LineSearchGD(steps_per_epoch=4),
                        epochs=epochs, batch_size=16, loss="logistic", progress=False, **kw)
        return net, res

    straight, _ = run(6)
    run(3, run_dir=tmp_path / "r")
    resumed, res = run(6, run_dir=tmp_path / "r", resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4, 5, 6]
    for f in ("config.json", "metrics.jsonl", "events.jsonl", "snapshots/model-5.safetensors"):
        assert (tmp_path / "r" / f).exists()


def test_fit_hands_the_line_search_over_to_its_loop():
    X, y = _separable(20, 3, seed=9)
    net = models.two_layer(3, 6, bias="none", seed=2).double()
    res = fit(net, (X, y), schedule=LineSearchGD(steps_per_epoch=2), epochs=3, batch_size=None,
              loss="logistic", progress=False)
    assert [r["steps"] for r in res.history] == [2, 2, 2]
    assert all("beta" in r for r in res.history)


def test_weight_decay_and_other_schedules_are_refused():
    X, y = _separable(10, 3, seed=0)
    net = models.two_layer(3, 4, bias="none").double()
    with pytest.raises(MarginlabError, match="weight decay"):
        fit_steps(net, (X, y), schedule=LineSearchGD(), epochs=1, weight_decay=1e-3)
    with pytest.raises(MarginlabError, match="LineSearchGD"):
        fit_steps(net, (X, y), schedule=make_schedule({"name": "constant"}), epochs=1)
