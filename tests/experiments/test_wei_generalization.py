"""wei-fig2 and wei-fig3: the trainers, one trial of each against independent references, and
tiny end-to-end runs.

References are computed here, not by the code under test: the arc-cosine kernel from its closed
form, the hard-margin SVM and minimum-norm interpolation with scipy/numpy, and ℓ1 problems over
a fine grid of directions in d = 2 with scipy's HiGHS, whose dual gives an upper bound on the
continuum ℓ1 margin.
"""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize

from marginlab import data, experiments, models
from marginlab.errors import MarginlabError
from marginlab.experiments import wei_generalization as wg


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _arccos(X, Z):
    """E_{u~Unif(S^{d-1})} relu(uᵀx) relu(uᵀz), closed form (Cho & Saul degree 1, over d)."""
    nx, nz = np.linalg.norm(X, axis=1), np.linalg.norm(Z, axis=1)
    cos = np.clip(X @ Z.T / np.outer(nx, nz), -1, 1)
    theta = np.arccos(cos)
    return np.outer(nx, nz) * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi * X.shape[1])


def _circle(k):
    t = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(t), np.sin(t)], axis=1)


@pytest.mark.parametrize("name", ["wei-fig2", "wei-fig3"])
def test_registered_with_both_scales_trial_and_grid(name):
    exp = experiments.get(name)
    assert set(exp.scales) == {"cpu", "paper"}
    assert exp.trial is not None and set(exp.grid) == {"cpu", "paper"}
    assert "Wei" in exp.reference


def test_paper_scales_hold_the_papers_settings():
    f2 = experiments.get("wei-fig2").scales["paper"]
    assert (f2["teacher_hidden"], f2["d"], f2["min_margin"], f2["lam"]) == (6, 20, 0.1, 1e-8)
    assert (f2["steps"], f2["trials"], f2["optimizer"]) == (20000, 100, "gd")
    f3 = experiments.get("wei-fig3").scales["paper"]
    assert f3["widths"] == [16, 32, 64, 128, 256, 512, 1024]
    assert (f3["teacher_hidden"], f3["min_margin"], f3["lam"], f3["steps"], f3["lr"],
            f3["trials"]) == (10, 0.01, 1e-5, 80000, 0.1, 20)
    assert f3["mnist_widths"] == [2 ** i for i in range(6, 16)]
    assert (f3["mnist_epochs"], f3["mnist_lr"], f3["mnist_lam"], f3["mnist_trials"]) == (
        600, 0.01, 1e-6, 1)


def test_lambda_path():
    assert wg.lambda_path(1e-2, 1e-8) == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7,
                                                        1e-8])
    assert wg.lambda_path(1e-2, 1e-7, 100.0) == pytest.approx([1e-2, 1e-4, 1e-6, 1e-7])
    assert wg.lambda_path(1e-5, 1e-3) == [1e-3]
    with pytest.raises(MarginlabError):
        wg.lambda_path(1e-2, 0.0)


def test_squared_loss_network_reaches_min_l1_interpolation_in_2d():
    """Theorem D.5: as λ → 0, ‖Θ‖² of the regularized squared-loss optimum → 2 min ‖α‖₁ over
    interpolants. Reference: the LP min ‖α‖₁ s.t. Fα = y on 3600 directions of the circle."""
    net0 = data.ground_truth_network(2, 3, seed=5)
    X, y = data.teacher_regression(8, net0, seed=5)
    X, y = X.double(), y.double()
    F = np.maximum(X.numpy() @ _circle(3600).T, 0.0)
    m = F.shape[1]
    lp = linprog(np.ones(2 * m), A_eq=np.hstack([F, -F]), b_eq=y.numpy(),
                 bounds=[(0, None)] * (2 * m), method="highs")
    assert lp.status == 0
    net = models.two_layer(2, 12, bias="none", seed=0).double()
    wg.train_lbfgs(net, X, y, task="squared", lambdas=wg.lambda_path(1e-2, 1e-9), max_iter=200)
    with torch.no_grad():
        residual = float((net(X).reshape(-1) - y).abs().max())
        norm_sq = float(sum((p * p).sum() for p in net.parameters()))
    assert residual < 1e-3
    assert norm_sq / 2 == pytest.approx(lp.fun, rel=2e-2)
    assert norm_sq / 2 >= lp.fun * (1 - 5e-3)  # the grid LP is within 1e-5 of the continuum


def test_gd_decreases_the_regularized_objective():
    X = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.sign(X[:, 0] * X[:, 1])
    for task, target in (("logistic", y), ("squared", X[:, 0].abs())):
        net = models.two_layer(3, 10, bias="none", seed=1).double()

        def objective(net=net, target=target, task=task):
            with torch.no_grad():
                return float(wg._scaled_mean_loss(net, X, target, task) + 1e-3 * wg._norm_sq(net))

        before = objective()
        wg.train_gd(net, X, target, task=task, lam=1e-3, steps=200, lr=0.05)
        assert objective() < 0.7 * before


def _hard_margin_no_bias(K, y):
    """min ½αᵀQα − Σα over α ≥ 0, Q = yyᵀ∘K; margin 1/√(αᵀQα) at the optimum."""
    Q = y[:, None] * K * y[None, :]
    res = minimize(lambda a: (0.5 * a @ Q @ a - a.sum(), Q @ a - 1), np.zeros(len(y)),
                   jac=True, method="L-BFGS-B", bounds=[(0, None)] * len(y),
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000})
    return 1 / math.sqrt(res.x @ Q @ res.x)


def test_fig2_trial_against_independent_kernel_solutions():
    exp = experiments.get("wei-fig2")
    s = {**exp.scales["cpu"], "n": 40, "d": 5, "n_test": 600, "lam": 1e-6, "optimizer": "lbfgs",
         "lp_directions": 200, "seed": 3}
    r = exp.trial(s)
    cls = data.load("teacher_classification", n_train=40, n_test=600, d=5, hidden=6,
                    min_margin=0.1, seed=3)
    X, y = cls.X_train.double().numpy(), cls.y_train.double().numpy()
    gamma2 = _hard_margin_no_bias(_arccos(X, X), y)
    assert r["cls_margin_kernel"] == pytest.approx(gamma2, rel=1e-5)
    C = np.linalg.norm(X, axis=1).max()
    assert r["cls_bound_kernel"] == pytest.approx(C / (gamma2 * math.sqrt(5 * 40)), rel=1e-5)
    assert r["cls_bound_net"] == pytest.approx(C / (r["cls_margin_net"] * math.sqrt(2 * 40)))
    # Separable teacher data, 40 samples in d = 5: both methods well below chance.
    assert r["cls_test_error_kernel"] < 0.25 and r["cls_test_error_net"] < 0.25
    assert r["cls_train_error_net"] == 0.0
    # The weakly regularized network approaches the max margin, which is at least the
    # teacher's own (balanced) normalized margin; it never exceeds the LP over its own units.
    assert r["cls_margin_net"] >= r["cls_margin_teacher"]
    assert r["cls_margin_net"] <= r["cls_gamma_l1_lp"] / 2 * (1 + 1e-9)

    reg = data.load("teacher_regression", n_train=40, n_test=600, d=5, hidden=6, seed=3)
    X, y = reg.X_train.double().numpy(), reg.y_train.double().numpy()
    Xt, yt = reg.X_test.double().numpy(), reg.y_test.double().numpy()
    c = np.linalg.solve(_arccos(X, X), y)
    assert r["reg_test_mse_kernel"] == pytest.approx(np.mean((_arccos(Xt, X) @ c - yt) ** 2),
                                                     rel=1e-6)
    assert r["reg_norm_kernel"] == pytest.approx(math.sqrt(y @ c), rel=1e-6)
    # The teacher interpolates with Σ|a_j|‖w_j‖ = 6, so the minimum-ℓ1 interpolant (which the
    # network approaches, Theorem D.5) has at most that norm.
    assert r["reg_teacher_path_norm"] == pytest.approx(6.0)
    assert r["reg_path_norm_net"] <= 6.0
    assert r["reg_path_norm_net"] == pytest.approx(r["reg_l1_norm_lp"], rel=2e-2)
    assert r["reg_train_mse_net"] < 1e-6


def test_fig3_margin_monotone_in_width_and_below_the_continuum_l1_bound():
    """d = 2: the ℓ1-SVM over 2000 directions on the circle (HiGHS) gives dual weights λ; the
    exact continuum γ_ℓ1 is at most max_t |Σ λ_i y_i relu(u_tᵀx_i)|, bounded over a 200000-point
    grid plus its Lipschitz constant × half the spacing. No network may exceed half of it
    (Proposition 4.1), and the trained margins should not fall as the width grows."""
    exp = experiments.get("wei-fig3")
    base = {**exp.scales["cpu"], "part": "synthetic", "d": 2, "teacher_hidden": 4, "n": 12,
            "n_test": 300, "lam": 1e-7, "lp_directions": 100, "seed": 0, "optimizer": "lbfgs"}
    split = data.load("teacher_classification", n_train=12, n_test=300, d=2, hidden=4,
                      min_margin=0.01, seed=0)
    X, y = split.X_train.double().numpy(), split.y_train.double().numpy()
    F = y[:, None] * np.maximum(X @ _circle(2000).T, 0.0)
    m = F.shape[1]
    lp = linprog(np.ones(2 * m), A_ub=np.hstack([-F, F]), b_ub=-np.ones(len(y)),
                 bounds=[(0, None)] * (2 * m), method="highs")
    assert lp.status == 0
    lower = 1 / lp.fun
    mu = -lp.ineqlin.marginals
    lam = mu / mu.sum()
    k = 200_000
    g = np.abs(np.maximum(X @ _circle(k).T, 0.0).T @ (lam * y))
    upper = g.max() + np.sum(lam * np.linalg.norm(X, axis=1)) * math.pi / k
    assert lower <= upper * (1 + 1e-9)

    margins = []
    for width in (4, 8, 16):
        r = exp.trial({**base, "width": width})
        assert r["fitted"]
        assert r["normalized_margin"] <= upper / 2
        margins.append(r["normalized_margin"])
    for a, b in itertools.pairwise(margins):
        assert b >= a * (1 - 1e-2)
    assert margins[-1] >= 0.95 * lower / 2  # width 16 ≥ n + 1: the max margin is γ_ℓ1/2


def test_fig3_mnist_trial_with_sgd_and_lbfgs():
    exp = experiments.get("wei-fig3")
    base = {**exp.scales["cpu"], "part": "mnist", "width": 8, "seed": 0, "mnist_n_train": 60,
            "mnist_n_test": 50}
    r = exp.trial({**base, "mnist_optimizer": "sgd", "mnist_epochs": 2, "mnist_lr": 0.1})
    assert 0 <= r["test_error"] <= 1 and r["norm_sq"] > 0
    r = exp.trial({**base, "mnist_lam": 1e-3, "mnist_max_iter": 30})
    assert r["fitted"] and r["normalized_margin"] > 0
    with pytest.raises(MarginlabError):
        exp.trial({**base, "part": "cifar"})


def test_fig2_tiny_run_writes_trials_plots_and_report(tmp_path):
    exp = experiments.get("wei-fig2")
    out = tmp_path / "fig2"
    settings = {"ns": [12, 24], "trials": 2, "d": 4, "n_test": 200, "lam": 1e-4,
                "steps": 300, "lp_directions": 50, "workers": 0}
    page = exp.run(exp.request("cpu", out, settings))
    assert page == out / "report.html"
    rows = _read(out / "trials.jsonl")
    assert [r["params"]["n"] for r in rows] == [12, 12, 24, 24]
    assert all(r["status"] == "ok" for r in rows)
    from scipy import stats

    from marginlab.claims import read_claims

    cls, reg = read_claims(out)
    big = [r["result"] for r in rows if r["params"]["n"] == 24]
    diffs = [r["cls_test_error_kernel"] - r["cls_test_error_net"] for r in big]
    assert cls.effect == pytest.approx(np.mean(diffs), abs=1e-12)
    assert cls.se == pytest.approx(stats.sem(diffs), rel=1e-9) or diffs[0] == diffs[1]
    diffs = [r["reg_test_mse_kernel"] - r["reg_test_mse_net"] for r in big]
    assert reg.effect == pytest.approx(np.mean(diffs), rel=1e-9)
    assert "gradient descent for 300 steps" in cls.measured
    assert {"cls_test_error_net", "reg_test_mse_kernel"} <= set(rows[0]["result"])
    for name in ("fig2.png", "fig2_margins.png"):
        assert (out / "plots" / name).stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert md.startswith("# wei-fig2") and "CPU scale" in md and "Classification" in md
    with pytest.raises(MarginlabError):
        exp.run(exp.request("cpu", out, settings))
    exp.run(exp.request("cpu", out, {**settings, "ns": [12], "tasks": ["regression"]},
                        overwrite=True))
    assert len(_read(out / "trials.jsonl")) == 2  # n = 12, two trials


def test_fig3_tiny_run_writes_trials_plots_and_report(tmp_path):
    exp = experiments.get("wei-fig3")
    out = tmp_path / "fig3"
    exp.run(exp.request("cpu", out, {
        "widths": [4, 8], "trials": 1, "n": 20, "n_test": 100, "d": 4, "teacher_hidden": 3,
        "lam": 1e-3, "steps": 300, "lp_directions": 20, "mnist_widths": [8, 16],
        "mnist_n_train": 40, "mnist_n_test": 40, "mnist_lam": 1e-2, "mnist_max_iter": 20,
        "workers": 0}))
    rows = _read(out / "trials.jsonl")
    assert [(r["params"]["part"], r["params"]["width"]) for r in rows] == [
        ("synthetic", 4), ("synthetic", 8), ("mnist", 8), ("mnist", 16)]
    from marginlab.claims import read_claims

    claims = read_claims(out)
    assert len(claims) == 4 and all(c.claim.split(":")[0] in ("synthetic", "mnist")
                                    for c in claims)
    assert (out / "plots" / "fig3.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "Theorem 3.3 check (synthetic)" in md and "Theorem 3.3 check (mnist)" in md


@pytest.mark.parametrize("task", ["logistic", "squared", "cross_entropy"])
def test_gd_gradient_matches_autograd(task):
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(15, 4, dtype=torch.float64, generator=gen)
    out = 3 if task == "cross_entropy" else 1
    target = {"logistic": torch.sign(X[:, 0]), "squared": X[:, 1] ** 2,
              "cross_entropy": torch.randint(0, 3, (15,), generator=gen)}[task]
    net = models.two_layer(4, 7, out, bias="none", seed=2).double()
    W = net.fc1.weight.detach().clone().requires_grad_()
    A = net.fc2.weight.detach().clone().requires_grad_()
    f = torch.relu(X @ W.T) @ A.T
    if task == "logistic":
        loss = torch.nn.functional.softplus(-target * f[:, 0]).mean()
    elif task == "squared":
        loss = ((f[:, 0] - target) ** 2).mean()
    else:
        loss = torch.nn.functional.cross_entropy(f, target)
    (loss + 1e-3 * ((W * W).sum() + (A * A).sum())).backward()
    gW, gA = wg.gd_gradient(W.detach(), A.detach(), X, target, task, 1e-3)
    assert torch.allclose(gW, W.grad, rtol=1e-10, atol=1e-13)
    assert torch.allclose(gA, A.grad, rtol=1e-10, atol=1e-13)


def test_fig3_claims_are_slopes_with_their_standard_errors():
    from scipy import stats

    from marginlab.experiments.wei_fig_claims import fig3_claims, linear_slope
    from marginlab.sweep import TrialRecord

    rng = np.random.default_rng(0)
    widths = [16, 32, 64, 128]
    records, rows = [], []
    for w in widths:
        for seed in range(3):
            margin = 0.01 * w ** 0.2 * math.exp(0.05 * rng.standard_normal())
            err = 0.2 - 0.01 * math.log2(w) + 0.005 * rng.standard_normal()
            rows.append((w, margin, err))
            records.append(TrialRecord.from_dict({
                "id": f"{w}-{seed}", "params": {"part": "synthetic", "width": w, "seed": seed},
                "status": "ok", "result": {"normalized_margin": margin, "test_error": err,
                                           "fitted": True}}))
    margin_claim, error_claim = fig3_claims(records, {"synthetic": widths}, "cpu",
                                            {"synthetic": "gd"})
    ref = stats.linregress(np.log([r[0] for r in rows]), np.log([r[1] for r in rows]))
    assert margin_claim.effect == pytest.approx(ref.slope, rel=1e-9)
    assert margin_claim.se == pytest.approx(ref.stderr, rel=1e-9)
    x = np.log2([r[0] for r in rows])
    slope, _ = np.polyfit(x, [r[2] for r in rows], 1)
    assert error_claim.effect == pytest.approx(-slope, rel=1e-9)
    assert margin_claim.verdict == "reproduced" and error_claim.verdict == "reproduced"
    assert math.isnan(linear_slope([1, 1, 1], [1, 2, 3])[0])
    # three points on a line: a slope, but no standard error from one residual degree of freedom
    slope3, se3, _ = linear_slope([4, 5, 6], [0.158, 0.150, 0.142])
    assert slope3 == pytest.approx(-0.008) and math.isnan(se3)
