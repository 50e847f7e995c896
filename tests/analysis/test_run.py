"""Rates, audits and ``marginlab analyze`` on run directories: closed-form records, fabricated
trajectories, and a small run trained here with a plain loop."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import mpmath
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from marginlab import data, margins, models, storage
from marginlab.analysis import (
    audit_monotonicity,
    direction_cosines,
    fit_rates,
    kkt_residual,
    log_flow_times,
    loss_sets_step,
)
from marginlab.cli import main
from marginlab.errors import MarginlabError, RunDirectoryError
from marginlab.losses import log_loss_from_logits

LN10 = math.log(10.0)


def test_log_flow_times_match_mpmath_far_beyond_float_range():
    log10_lrs = [-2.0, 1.5, 300.0, 400.0, 5000.0, 4999.0]
    steps = [50, 50, 10, 1, 3, 7]
    records = [{"epoch": i + 1, "log10_lr": a, "steps": s}
               for i, (a, s) in enumerate(zip(log10_lrs, steps))]
    got = log_flow_times(records)
    mpmath.mp.dps = 50
    total = mpmath.mpf(0)
    for a, s, g in zip(log10_lrs, steps, got):
        total += s * mpmath.power(10, a)
        assert g == pytest.approx(float(mpmath.log(total)), rel=1e-14)


def _theory_records(order: float, n: int = 60) -> list[dict]:
    """Records following Theorem 4.3 exactly: L = 3/(T (log T)^{2−2/L}), ρ = 2 (log T)^{1/L}."""
    records, log_T = [], []
    for k in range(n):
        log10_lr = 1.0 + 0.5 * k  # growing steps, as with the loss-based schedule
        records.append({"epoch": k + 1, "log10_lr": log10_lr, "steps": 10, "order": order})
    log_T = log_flow_times(records)
    for r, lt in zip(records, log_T):
        r["log_loss_sum"] = math.log(3.0) - lt - (2 - 2 / order) * math.log(lt)
        r["rho"] = 2.0 * lt ** (1 / order)
    return records


@pytest.mark.parametrize("order", [1.0, 2.0, 4.0])
def test_fit_rates_recovers_the_theorem_from_exact_records(order):
    fit = fit_rates(_theory_records(order), "exponential")
    assert fit.loss_exponent_t == pytest.approx(-1.0, abs=1e-8)
    assert fit.loss_exponent_loglog_t == pytest.approx(-(2 - 2 / order), abs=1e-7)
    assert fit.loss_exponent_t_given_theory == pytest.approx(-1.0, abs=1e-10)
    assert fit.rho_exponent_loglog_t == pytest.approx(1 / order, abs=1e-10)
    assert fit.theory_rho_exponent_loglog_t == 1 / order
    assert fit.r2_loss == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("order", [1.0, 2.0, 3.0])
def test_norm_fit_with_initial_norm_term(order):
    """ρ^L = 5 + 0.7 log T exactly (the theorem's form with an initial-norm intercept): the
    affine fit is exact and the best power is L, while a bare power law in log T is not."""
    records = _theory_records(order)
    for r, lt in zip(records, log_flow_times(records)):
        r["rho"] = (5.0 + 0.7 * lt) ** (1 / order)
    fit = fit_rates(records, "exponential")
    A, B = fit.coefficients["rho_affine"]
    assert A == pytest.approx(5.0, rel=1e-9) and B == pytest.approx(0.7, rel=1e-9)
    assert fit.r2_rho_affine == pytest.approx(1.0, abs=1e-12)
    assert fit.rho_best_power == pytest.approx(order, abs=0.011)
    assert fit.r2_rho < 1 - 1e-6


def test_loss_sets_step_reads_the_schedule():
    assert loss_sets_step({"schedule": {"name": "loss_based", "alpha0": 0.1}})
    assert loss_sets_step({"schedule": {"name": "loss_based_momentum"}})
    assert not loss_sets_step({"schedule": {"name": "constant", "lr": 0.1}})
    assert not loss_sets_step({})


def test_fit_rates_needs_enough_epochs():
    records = _theory_records(2.0, n=3)
    with pytest.raises(MarginlabError, match="rate fit needs"):
        fit_rates(records, "exponential")
    with pytest.raises(MarginlabError, match="lacks log10_lr"):
        log_flow_times([{"epoch": 1, "steps": 3}])


def test_monotonicity_audit_counts_decreases_after_the_loss_falls_below_l0():
    # log ℓ(0) = log log 2 ≈ −0.367 for logistic; epochs 1-2 above it, decreases there ignored
    log_losses = [0.5, 0.0, -0.5, -1.0, -2.0, -3.0, -4.0, -5.0]
    gamma = [0.5, 0.1, 0.20, 0.30, 0.29, 0.31, 0.31 * (1 - 1e-12), 0.25]
    multi = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    records = [{"epoch": i + 1, "log_loss_sum": a, "smoothed_margin": g,
                "smoothed_margin_multi": m} for i, (a, g, m) in enumerate(zip(log_losses,
                                                                                gamma, multi))]
    single, multi_audit = audit_monotonicity(records, "logistic", rel_tol=1e-9)
    assert single.start_epoch == 3 and single.n_checked == 5
    assert single.decrease_epochs == [5, 8]  # 0.30→0.29 and 0.31→0.25; the 1e-12 drop is noise
    assert single.max_relative_decrease == pytest.approx((0.31 * (1 - 1e-12) - 0.25)
                                                         / (0.31 * (1 - 1e-12)))
    assert multi_audit.monotone and multi_audit.n_checked == 5
    exp_single, _ = audit_monotonicity(records, "exponential")  # log ℓ(0) = 0
    assert exp_single.start_epoch == 3
    never = audit_monotonicity(records[:2], "exponential")[0]
    assert never.start_epoch is None and never.n_checked == 0


def test_direction_cosines_from_trajectory_files(tmp_path):
    rng = np.random.default_rng(0)
    vectors = {}
    (tmp_path / "trajectory").mkdir()
    for epoch in (2, 4, 6, 8, 12):
        a, b = rng.normal(size=(3, 2)), rng.normal(size=4)
        vectors[epoch] = np.concatenate([a.ravel(), b])  # sorted keys: "a.weight" < "b.weight"
        save_file({"b.weight": torch.tensor(b), "a.weight": torch.tensor(a)},
                  str(tmp_path / "trajectory" / f"epoch-{epoch:06d}.safetensors"))
    res = direction_cosines(tmp_path)
    assert res.epochs == [2, 4, 6, 8, 12] and res.k == 2
    assert res.pairs == [(2, 4), (4, 6), (6, 8)]

    def cos(u, v):
        return float(u @ v / np.linalg.norm(u) / np.linalg.norm(v))

    for (a, b), c in zip(res.pairs, res.cosines):
        assert c == pytest.approx(cos(vectors[a], vectors[b]), abs=1e-14)
    for e, c in zip(res.epochs, res.cosine_to_final):
        assert c == pytest.approx(cos(vectors[e], vectors[12]), abs=1e-14)
    assert direction_cosines(tmp_path, k=4).pairs == [(2, 6), (4, 8), (8, 12)]
    with pytest.raises(RunDirectoryError):
        direction_cosines(tmp_path / "nowhere")


def make_run(root: Path, *, epochs: int = 300, every: int = 30, n_train: int = 40) -> Path:
    """A run directory in the trainer's layout: a bias-free MLP on a digits subset, full-batch
    GD on cross-entropy with the loss-based step η = α/L̄ (one step per epoch; α grows by 2^{1/5}
    after a step that lowers the loss, and a step that does not is undone and α halved), in
    float64."""
    run = root / "run"
    split = data.load("digits", n_train=n_train, n_test=20)
    X, y = split.X_train.double(), split.y_train
    model = models.mlp(64, [16], 10, bias="none", seed=0).double()
    storage.write_json(run / "config.json", {
        "model": model.marginlab_spec,
        "data": {"name": "digits", "root": None, "n_train": n_train, "n_test": 20},
        "schedule": {"name": "loss_based", "alpha0": 0.1}, "loss": "cross_entropy",
        "batch_size": None, "seed": 0, "dtype": "float64"})

    def log_mean_loss() -> torch.Tensor:
        return torch.logsumexp(log_loss_from_logits(model(X), y, "cross_entropy"), 0) - math.log(
            len(y))

    alpha, t0, epoch = 0.1, time.perf_counter(), 0
    with torch.no_grad():
        frame = float(log_mean_loss())
    while epoch < epochs:
        saved = [p.detach().clone() for p in model.parameters()]
        model.zero_grad()
        torch.exp(log_mean_loss() - frame).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= alpha * p.grad  # η = α / L̄ on the mean loss
            new_frame = float(log_mean_loss())
        if not new_frame < frame:
            with torch.no_grad():
                for p, s in zip(model.parameters(), saved):
                    p.copy_(s)
            alpha /= 2
            continue
        epoch += 1
        stats = margins.measure(model, X, y, "cross_entropy").as_dict()
        storage.append_jsonl(run / "metrics.jsonl", {
            "epoch": epoch, **stats, "alpha": alpha, "lr": alpha * math.exp(-frame),
            "log10_lr": (math.log(alpha) - frame) / LN10, "steps": 1, "retries": 0,
            "wall_time": time.perf_counter() - t0})
        frame, alpha = new_frame, alpha * 2 ** 0.2
        if epoch % every == 0:
            models.save(model, run / "trajectory" / f"epoch-{epoch:06d}.safetensors",
                        extra={"epoch": epoch})
    return run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("analyze"))


def test_analyze_command_writes_json_plots_and_report(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--kkt-every", "3", "--tau", "0.05"]) == 0
    out = capsys.readouterr().out
    assert "KKT at epoch 300" in out
    result = json.loads((run_dir / "analysis.json").read_text())
    kkt = [k for k in result["kkt"] if k["status"] == "ok"]
    assert [k["epoch"] for k in result["kkt"]] == [30, 120, 210, 300]
    assert kkt and all(k["method"] == "gram" and k["tau"] == 0.05 for k in kkt)
    assert kkt[-1]["eps_relative"] < kkt[0]["eps_relative"]
    # the CLI's numbers are those of the library on the same data and checkpoint
    split = data.load("digits", n_train=40, n_test=20)
    model = models.load(run_dir / "trajectory" / "epoch-000300.safetensors")
    direct = kkt_residual(model, split.X_train, split.y_train, tau=0.05)
    assert kkt[-1]["eps"] == pytest.approx(direct.eps, rel=1e-9)
    assert result["rates"]["order"] == 2.0 and len(result["rates"]["epochs"]) >= 4
    assert {a["field"] for a in result["monotonicity"]} == {"smoothed_margin",
                                                           "smoothed_margin_multi"}
    assert result["direction"]["k"] == 30 and len(result["direction"]["cosines"]) == 9
    assert result["tangent_svm"]["epoch"] == 300 and -1 <= result["tangent_svm"]["cosine"] <= 1
    for name in ("kkt", "smoothed-margin", "rates", "direction"):
        png = run_dir / "plots" / f"analysis-{name}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    html = (run_dir / "report" / "analysis.html").read_text()
    assert html.startswith("<section>") and 'src="plots/analysis-kkt.png"' in html
    assert "Monotonicity" in (run_dir / "report" / "analysis.md").read_text()
    # a loss-based run: its loss rate is fixed by the schedule, said plainly, not reported
    assert result["rates_set_by_schedule"] is True
    assert "not evidence for Theorem 4.3" in out
    md = (run_dir / "report" / "analysis.md").read_text()
    assert "fixed by the schedule" in md and "log L vs log T" not in md


def test_analyze_subset_and_errors(run_dir, tmp_path, capsys):
    assert main(["analyze", str(run_dir), "--kkt-every", "100", "--n", "20", "--no-svm"]) == 0
    result = json.loads((run_dir / "analysis.json").read_text())
    assert result["n_samples"] == 20 and result["tangent_svm"] is None
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["analyze", str(run_dir), "--kkt-every", "0"]) == 2
