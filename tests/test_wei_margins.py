"""The wei-f3 and wei-thm43 experiments: registration and a tiny end-to-end run of each."""

import json

import pytest

from marginlab import experiments
from marginlab.errors import MarginlabError


@pytest.mark.parametrize("name", ["wei-f3", "wei-thm43"])
def test_registered_with_both_scales(name):
    exp = experiments.get(name)
    assert set(exp.scales) == {"cpu", "paper"}
    assert "Wei" in exp.reference


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_wei_f3_tiny_run_writes_trials_plots_and_report(tmp_path):
    exp = experiments.get("wei-f3")
    req = exp.request("cpu", tmp_path / "f3",
                      {"n": 5, "trials": 1, "lambdas": [1e-2, 1e-4, 1e-6], "grid": 200})
    report = exp.run(req)
    out = tmp_path / "f3"
    assert report == out / "report.html"
    rows = _read(out / "trials.jsonl")
    assert [r["lam"] for r in rows] == [1e-2, 1e-4, 1e-6]
    arms = ("convex_start", "certified", "local", "plain")
    for r in rows:
        # No network's normalized margin exceeds the continuum γ_ℓ1/2 (Proposition 4.1).
        assert max(r[f"{a}_ratio"] for a in (*arms, "optimum")) <= 1 + 1e-9
        assert r["gamma_l1_grid"] <= r["gamma_l1_upper"] * (1 + 1e-9)
        assert r["optimum_gap"] < 1e-8
        for a in arms:  # nothing beats the certified lower bound
            assert r[f"{a}_objective"] >= r["optimum_lower_bound"] * (1 - 1e-12)
        if r["lam"] <= 1e-4:  # the goal, from the optimum and from a random start
            assert r["convex_start_gap_to_optimum"] <= 1e-4
            assert r["certified_gap_to_optimum"] <= 1e-4
    md = (out / "report.md").read_text()
    assert md.startswith("# wei-f3")
    assert "met in 2 of 2 (trial, λ) pairs" in md
    assert "optimum start, before polish" in md
    for png in ("margin_vs_lambda.png", "objective_gap.png"):
        assert (out / "plots" / png).stat().st_size > 10_000
    with pytest.raises(MarginlabError):
        exp.run(exp.request("cpu", out, {"n": 4, "trials": 1, "lambdas": [1e-2]}))


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
