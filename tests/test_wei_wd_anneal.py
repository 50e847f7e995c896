"""wei-wd-anneal: milestone scaling, the paper-scale training spec, the schedule as recorded by
the trainer epoch by epoch, and a tiny end-to-end run."""

import json

import pytest

from marginlab import experiments
from marginlab.errors import MarginlabError
from marginlab.experiments import wei_wd_anneal as wd


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_registered_with_both_scales_trial_and_grid():
    exp = experiments.get("wei-wd-anneal")
    assert set(exp.scales) == {"cpu", "paper"}
    assert exp.grid["cpu"] == {"weight_decay_schedule": ["annealed", "fixed"]}
    assert "F.4" in exp.reference


def test_scale_milestones():
    paper = wd.PAPER_WD_MILESTONES
    assert wd.scale_milestones(paper, 200, 200) == {60: 0.2, 90: 0.5, 120: 0.5, 140: 0.5,
                                                    160: 0.5}
    assert wd.scale_milestones(paper, 20, 200) == {6: 0.2, 9: 0.5, 12: 0.5, 14: 0.5, 16: 0.5}
    # 5 epochs: 60→1.5→2, 90→2.25→2, 120→3, 140→3.5→4, 160→4; factors on one epoch multiply.
    assert wd.scale_milestones(paper, 5, 200) == pytest.approx({2: 0.1, 3: 0.5, 4: 0.25})
    assert list(wd.scale_milestones([[160, 0.2], [60, 0.2]], 200, 200)) == [60, 160]
    with pytest.raises(MarginlabError):
        wd.scale_milestones([[0, 0.5]], 10, 10)
    with pytest.raises(MarginlabError):
        wd.scale_milestones([[5, -1.0]], 10, 10)


def test_paper_cumulative_decay():
    # lr 0.1 for epochs 1-59, 0.02 for 60-119, 0.004 for 120-159, 0.0008 for 160-200.
    lr_epochs = 59 * 0.1 + 60 * 0.02 + 40 * 0.004 + 41 * 0.0008
    assert wd.paper_cumulative_decay("fixed") == pytest.approx(391 * 2 * 2e-4 * lr_epochs)
    # annealed λ: 2e-4 to 59, 4e-5 60-89, 2e-5 90-119, 1e-5 120-139, 5e-6 140-159, 2.5e-6 after.
    annealed = 391 * 2 * (59 * 0.1 * 2e-4 + 30 * 0.02 * 4e-5 + 30 * 0.02 * 2e-5
                          + 20 * 0.004 * 1e-5 + 20 * 0.004 * 5e-6 + 41 * 0.0008 * 2.5e-6)
    assert wd.paper_cumulative_decay("annealed") == pytest.approx(annealed)


def test_paper_scale_spec_is_the_papers_cifar10_schedule():
    s = {**experiments.get("wei-wd-anneal").scales["paper"], "seed": 0}
    spec = wd.train_spec({**s, "weight_decay_schedule": "annealed"})
    assert (spec["model"], spec["data"], spec["epochs"]) == ("wrn16", "cifar10", 200)
    assert spec["schedule"] == {"name": "constant", "lr": 0.1,
                                "milestones": {"60": 0.2, "120": 0.2, "160": 0.2}}
    assert spec["weight_decay"] == 2e-4 and spec["weight_decay_power"] == 2.0
    assert spec["weight_decay_milestones"] == {"60": 0.2, "90": 0.5, "120": 0.5, "140": 0.5,
                                               "160": 0.5}
    fixed = wd.train_spec({**s, "weight_decay_schedule": "fixed"})
    assert fixed["weight_decay_milestones"] == {} and fixed["schedule"] == spec["schedule"]
    with pytest.raises(MarginlabError):
        wd.train_spec({**s, "weight_decay_schedule": "cosine"})


TINY = {"n_train": 50, "n_test": 50, "widths": [16], "epochs": 10, "milestone_epochs": 10,
        "batch_size": 25, "lr": 0.1, "weight_decay": 1e-3, "lr_milestones": [[3, 0.5], [7, 0.1]],
        "wd_milestones": [[4, 0.2], [8, 0.5]], "checkpoint_every": 10}


def test_trial_applies_the_milestones_at_the_right_epochs(tmp_path):
    exp = experiments.get("wei-wd-anneal")
    s = {**exp.scales["cpu"], **TINY, "seed": 0}
    run_dir = tmp_path / "annealed"
    r = exp.trial({**s, "weight_decay_schedule": "annealed", "run_dir": str(run_dir)})
    hist = _read(run_dir / "metrics.jsonl")
    assert [h["epoch"] for h in hist] == list(range(1, 11))
    expected_wd = [1e-3] * 3 + [2e-4] * 4 + [1e-4] * 3
    expected_lr = [0.1] * 2 + [0.05] * 4 + [0.005] * 4
    assert [h["weight_decay"] for h in hist] == pytest.approx(expected_wd, rel=1e-12)
    assert [h["lr"] for h in hist] == pytest.approx(expected_lr, rel=1e-12)
    assert r["schedule_ok"] and r["epochs"] == 10
    assert [e for e, _ in r["wd_changes"]] == [1, 4, 8]
    assert [e for e, _ in r["lr_changes"]] == [1, 3, 7]
    assert r["final_weight_decay"] == pytest.approx(1e-4)
    # 50 images in batches of 25: two SGD steps per epoch, each shrinking θ by 1 − 2ηλ.
    assert r["cumulative_decay"] == pytest.approx(
        sum(2 * 2 * lr * lam for lr, lam in zip(expected_lr, expected_wd)), rel=1e-9)

    r = exp.trial({**s, "weight_decay_schedule": "fixed", "run_dir": str(tmp_path / "fixed")})
    hist = _read(tmp_path / "fixed" / "metrics.jsonl")
    assert [h["weight_decay"] for h in hist] == pytest.approx([1e-3] * 10, rel=1e-12)
    assert [h["lr"] for h in hist] == pytest.approx(expected_lr, rel=1e-12)
    assert r["wd_changes"] == [[1, pytest.approx(1e-3)]]


def test_tiny_run_writes_trials_plots_and_report(tmp_path):
    exp = experiments.get("wei-wd-anneal")
    out = tmp_path / "wd"
    settings = {**TINY, "epochs": 4, "trials": 1, "workers": 0}
    exp.run(exp.request("cpu", out, settings))
    rows = _read(out / "trials.jsonl")
    assert [r["params"]["weight_decay_schedule"] for r in rows] == ["annealed", "fixed"]
    assert all(r["status"] == "ok" for r in rows)
    assert (out / "runs" / "annealed-seed0" / "metrics.jsonl").exists()
    assert (out / "plots" / "wd_anneal.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert md.startswith("# wei-wd-anneal") and "5.86" in md and "CPU scale" in md
    with pytest.raises(MarginlabError):
        exp.run(exp.request("cpu", out, settings))


def test_paper_scale_needs_the_data_directory(tmp_path):
    exp = experiments.get("wei-wd-anneal")
    with pytest.raises(MarginlabError, match="--root"):
        exp.run(exp.request("paper", tmp_path / "p"))
