"""The wei-thm43 experiment: registration and a tiny end-to-end run."""

import json

import numpy as np
import pytest

from marginlab import experiments


@pytest.mark.parametrize("name", ["wei-f3", "wei-thm43"])
def test_registered_with_both_scales(name):
    exp = experiments.get(name)
    assert set(exp.scales) == {"cpu", "paper"}
    assert "Wei" in exp.reference


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_wei_thm43_tiny_run(tmp_path):
    exp = experiments.get("wei-thm43")
    req = exp.request("cpu", tmp_path / "t43", {
        "dims": [4, 6], "n_min": 30, "n_max": 40, "trials": 1, "random_directions": 10,
        "width": 6, "lambdas": [1e-2], "n_test": 100, "reseed": False})
    exp.run(req)
    rows = _read(tmp_path / "t43" / "trials.jsonl")
    assert [r["d"] for r in rows] == [4, 6]
    for r in rows:
        assert r["gamma_l1"] >= r["gamma_l1_four_units"] - 1e-12
        assert r["gamma_l1_four_units"] == pytest.approx(2 ** 0.5 / 4, abs=1e-9)
        assert 0 < r["gamma_l2"] <= r["gamma_l2_upper"]
    assert (tmp_path / "t43" / "plots" / "margins_vs_d.png").exists()
    assert "Theorem 4.3" in (tmp_path / "t43" / "report.md").read_text()


def test_thm43_claims_and_log_slope(tmp_path):
    from marginlab.claims import read_claims
    from marginlab.experiments.wei_common import log_slope

    # log_slope against the closed-form least-squares slope and its standard error
    x = np.array([4, 4, 8, 8, 16, 16, 32, 32], dtype=float)
    v = np.array([0.30, 0.28, 0.16, 0.17, 0.09, 0.08, 0.041, 0.046])
    lx, lv = np.log(x), np.log(v)
    slope = ((lx - lx.mean()) * (lv - lv.mean())).sum() / ((lx - lx.mean()) ** 2).sum()
    resid = lv - lv.mean() - slope * (lx - lx.mean())
    se = np.sqrt((resid ** 2).sum() / (len(x) - 2) / ((lx - lx.mean()) ** 2).sum())
    m, s, k = log_slope(x, [*v[:-1], -1.0])  # a non-positive value is left out
    assert k == 7
    m, s, k = log_slope(x, v)
    assert (m, s, k) == (pytest.approx(slope, rel=1e-12), pytest.approx(se, rel=1e-9), 8)
    assert np.isnan(log_slope([4, 4], [0.1, 0.2])[0])
    assert np.isnan(log_slope([4, 8, 16], [0.3, 0.2, 0.1])[1])  # 3 points: no se

    exp = experiments.get("wei-thm43")
    out = tmp_path / "t43"
    exp.run(exp.request("cpu", out, {
        "dims": [4, 6, 8], "n_min": 30, "n_max": 40, "trials": 1, "random_directions": 10,
        "width": 6, "lambdas": [1e-2], "n_test": 100, "reseed": False}))
    rows = _read(out / "trials.jsonl")
    claims = read_claims(out)
    assert claims[0].verdict == "reproduced"  # Lemma D.1's four units: exactly √2/4
    m, s, _ = log_slope([r["d"] for r in rows], [r["gamma_l2"] for r in rows])
    assert claims[1].effect == pytest.approx(-m)
    assert claims[1].se == pytest.approx(s, nan_ok=True)
    assert "flat by construction" in (out / "report.md").read_text()
