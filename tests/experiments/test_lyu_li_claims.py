"""The main job's measurements and claims, checked against numpy/scipy on hand-made numbers."""

import math

import numpy as np
import pytest
from scipy import stats

from marginlab.experiments import lyu_li_measure as measure
from marginlab.experiments.lyu_li_claims import claims_from_summary


def test_ols_slope_matches_scipy_linregress():
    rng = np.random.default_rng(0)
    x = np.log10([100, 200, 400, 800, 1600, 3200])
    y = 0.9 - 0.1 * x + 0.01 * rng.standard_normal(x.size)
    slope, se = measure.ols_slope(x, y)
    ref = stats.linregress(x, y)
    assert slope == pytest.approx(ref.slope, rel=1e-12)
    assert se == pytest.approx(ref.stderr, rel=1e-10)
    assert math.isnan(measure.ols_slope([1.0, 2.0], [3.0, 4.0])[1])


def test_values_at_epochs_and_levels():
    recs = [{"epoch": e, "m": 0.1 * e} for e in range(1, 11)]
    assert measure.value_at_epoch(recs, "m", 5) == pytest.approx(0.5)
    assert math.isnan(measure.value_at_epoch(recs, "m", 0))
    assert measure.epochs_to_reach(recs, "m", 0.55) == 6
    assert measure.epochs_to_reach(recs, "m", 5.0) is None


def test_kkt_trend_mean_fall_and_slope_over_runs():
    series = {
        "a": [{"epoch": 100, "status": "ok", "eps_relative": 0.9},
              {"epoch": 1000, "status": "ok", "eps_relative": 0.7}],
        "b": [{"epoch": 100, "status": "not separated"},
              {"epoch": 300, "status": "ok", "eps_relative": 0.8},
              {"epoch": 3000, "status": "ok", "eps_relative": 0.5}],
    }
    t = measure.kkt_trend(series)
    assert t["runs"] == 2
    assert t["mean_fall"] == pytest.approx((0.2 + 0.3) / 2)
    assert t["mean_fall_se"] == pytest.approx(stats.sem([0.2, 0.3]))
    assert t["mean_slope_per_decade"] == pytest.approx((-0.2 - 0.3) / 2)


def test_robustness_summary_counts_misclassified_as_zero():
    upper = [0.0, 1.0, 2.0, math.inf]
    lower = [0.0, 0.5, 1.0, 0.7]
    correct = [False, True, True, True]
    s = measure.robustness_summary(upper, lower, correct)
    assert s["accuracy"] == 0.75
    assert s["all"]["mean_upper"] == pytest.approx(1.0)  # (0 + 1 + 2) / 3, the ∞ left out
    assert s["all"]["attack_failures"] == 1
    assert s["correct"]["mean_upper"] == pytest.approx(1.5)
    assert s["correct"]["se_upper"] == pytest.approx(stats.sem([1.0, 2.0]))
    assert s["all"]["mean_lower"] == pytest.approx(np.mean(lower))


def _robust(indices, u1, u5, c1, c5):
    return {"test": {"indices": indices, "snapshots": {
        "model-1": {"upper": u1, "correct": c1}, "model-5": {"upper": u5, "correct": c5}}}}


def test_paired_robustness_averages_seeds_per_point():
    r = {"s0": _robust([3, 7, 9], [1.0, 0.0, 2.0], [1.5, 0.4, math.inf], [1, 0, 1], [1, 1, 1]),
         "s1": _robust([3, 7, 9], [1.2, 0.2, 2.0], [1.1, 0.8, 2.5], [1, 1, 1], [1, 1, 1])}
    p = measure.paired_robustness(r, "test")
    d = [np.mean([0.5, -0.1]), np.mean([0.4, 0.6])]  # point 9 left out: an attack failed
    assert p["n_all"] == 2 and p["excluded"] == 1 and p["runs"] == 2
    assert p["mean_all"] == pytest.approx(np.mean(d))
    assert p["se_all"] == pytest.approx(stats.sem(d))
    assert p["n_correct"] == 1  # point 7 is misclassified by model-1 in seed 0
    assert p["mean_correct"] == pytest.approx(d[0])


def _summary(rng, *, n=6, not_evidence=None):
    runs, pairs = {}, []
    for k in range(n):
        m1 = 1e-3 * (1 + 0.1 * rng.random())
        m5 = 5e-3 * (1 + 0.1 * rng.random())
        runs[f"loss_based-{k}"] = {
            "schedule": "loss_based", "final": {"smoothed_margin_multi": m5},
            "snapshots": {"model-1": {"normalized_margin_multi": m1,
                                      "smoothed_margin_multi": 0.9 * m1},
                          "model-5": {"normalized_margin_multi": m5}},
            "monotonicity": [{"field": "smoothed_margin_multi", "n_decreases": 3,
                              "n_checked": 100, "start_epoch": 5,
                              "max_relative_decrease": 1e-3, "rel_tol": 1e-9}]}
        runs[f"constant-{k}"] = {
            "schedule": "constant", "final": {}, "snapshots": {},
            "monotonicity": [{"field": f, "n_decreases": 0, "n_checked": 50, "start_epoch": 900,
                              "max_relative_decrease": 0.0, "rel_tol": 1e-9}
                             for f in ("smoothed_margin", "smoothed_margin_multi")]}
        pairs.append({"loss_based": {"normalized_margin_multi": m5, "log10_loss_mean": -100.0
                                     - rng.random()},
                      "constant": {"normalized_margin_multi": 1e-3 * (1 + rng.random() / 10),
                                   "log10_loss_mean": -3.0}})
    paired = {"test": {"split": "test", "runs": 3, "n_all": 200, "mean_all": 0.05,
                       "se_all": 0.01, "n_correct": 150, "mean_correct": 0.06,
                       "se_correct": 0.01, "excluded": 0}}
    series = {f"r{k}": [{"epoch": 100, "status": "ok", "eps_relative": 0.9 - 0.01 * k},
                        {"epoch": 1000, "status": "ok", "eps_relative": 0.6 + 0.02 * k}]
              for k in range(3)}
    return {"epochs": 2000, "not_evidence": not_evidence, "runs": runs, "pairs": pairs,
            "robustness": {"paired": paired},
            "kkt": {"trend": measure.kkt_trend(series)}}


def test_claims_verdicts_follow_the_numbers():
    rng = np.random.default_rng(1)
    s = _summary(rng)
    claims = {c.claim: c for c in claims_from_summary(s)}
    rise = claims["γ̃ rises once L < ℓ(0)"]
    diffs = [r["final"]["smoothed_margin_multi"]
             - r["snapshots"]["model-1"]["smoothed_margin_multi"]
             for r in s["runs"].values() if r["schedule"] == "loss_based"]
    assert rise.effect == pytest.approx(np.mean(diffs))
    assert rise.se == pytest.approx(stats.sem(diffs))
    assert rise.verdict == "reproduced"
    assert claims["γ̃ never decreases under small constant steps once L < ℓ(0)"].verdict \
        == "reproduced"
    t1 = claims["normalized margin of model-5 exceeds model-1's"]
    logs = [math.log10(r["snapshots"]["model-5"]["normalized_margin_multi"]
                       / r["snapshots"]["model-1"]["normalized_margin_multi"])
            for r in s["runs"].values() if r["schedule"] == "loss_based"]
    assert t1.effect == pytest.approx(np.mean(logs)) and t1.verdict == "reproduced"
    robust = [c for c in claims.values() if c.source.startswith("Lyu & Li, Figure 8")]
    assert len(robust) == 1 and robust[0].effect == 0.05 and robust[0].verdict == "reproduced"
    kkt = claims["KKT residual ε/‖θ‖ falls along the main job's runs"]
    falls = [0.3 - 0.03 * k for k in range(3)]
    assert kkt.effect == pytest.approx(np.mean(falls))
    assert kkt.se == pytest.approx(stats.sem(falls))
    # A γ̃ decrease under constant steps turns the exact comparison around.
    s["runs"]["constant-0"]["monotonicity"][0]["n_decreases"] = 1
    claims = {c.claim: c for c in claims_from_summary(s)}
    assert claims["γ̃ never decreases under small constant steps once L < ℓ(0)"].verdict \
        == "not reproduced"


def test_claims_on_data_that_is_not_the_papers_are_never_verdicts():
    s = _summary(np.random.default_rng(2), not_evidence="files hold 40 images")
    claims = claims_from_summary(s, variant="cifar")
    assert claims and all(c.verdict == "not testable at this scale" for c in claims)
    assert all("40 images" in c.criterion for c in claims)
    assert not any("Figure 8" in c.source or "Table 1" in c.source for c in claims)
