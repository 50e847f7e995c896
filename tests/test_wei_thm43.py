"""The wei-thm43 experiment: registration and a tiny end-to-end run."""

import json

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
