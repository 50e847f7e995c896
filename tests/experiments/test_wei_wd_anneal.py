"""wei-wd-anneal: milestone scaling, the paper-scale training specs of CIFAR-10 and CIFAR-100,
the schedule as recorded by the trainer epoch by epoch, and tiny end-to-end runs at both scales
(paper scale on CIFAR-format files written here)."""

import json
import pickle

import numpy as np
import pytest

from marginlab import experiments, models
from marginlab.cli import main
from marginlab.errors import MarginlabError
from marginlab.experiments import wei_wd_anneal as wd
from marginlab.sweep import spec as sweep_spec


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _pickle(path, entry):
    """A CIFAR python file: a dict with bytes keys, pickled at protocol 2 like the real ones."""
    path.write_bytes(pickle.dumps(entry, protocol=2))


def write_cifar_files(root, n_train=20, n_test=10, seed=0):
    """Tiny CIFAR-10 (``cifar-10-batches-py``) and CIFAR-100 (``cifar-100-python``) folders."""
    rng = np.random.default_rng(seed)
    rows = lambda n: rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # noqa: E731
    c10 = root / "cifar-10-batches-py"
    c10.mkdir(parents=True)
    for i in range(1, 6):
        _pickle(c10 / f"data_batch_{i}", {b"data": rows(n_train // 5),
                                          b"labels": rng.integers(0, 10, n_train // 5).tolist()})
    _pickle(c10 / "test_batch", {b"data": rows(n_test),
                                 b"labels": rng.integers(0, 10, n_test).tolist()})
    c100 = root / "cifar-100-python"
    c100.mkdir()
    for name, n in (("train", n_train), ("test", n_test)):
        fine = rng.integers(0, 100, n)
        _pickle(c100 / name, {b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
                              b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
                              b"data": rows(n)})
    return root


def test_registered_with_both_scales_trial_and_grid():
    exp = experiments.get("wei-wd-anneal")
    assert set(exp.scales) == {"cpu", "paper"}
    assert exp.grid["cpu"] == {"weight_decay_schedule": ["annealed", "fixed"]}
    assert exp.grid["paper"] == {"data": ["cifar10", "cifar100"],
                                 "weight_decay_schedule": ["annealed", "fixed"]}
    assert exp.scales["paper"]["data"] == "cifar10+cifar100"
    assert exp.scales["cpu"]["data"] == "mnist5k"
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
    # CIFAR-100: λ 5e-4 to 59, 1e-4 60-119, 2e-5 120-159, 4e-6 after; same lr.
    assert wd.paper_cumulative_decay("fixed", data="cifar100") == pytest.approx(
        391 * 2 * 5e-4 * lr_epochs)
    annealed = 391 * 2 * (59 * 0.1 * 5e-4 + 60 * 0.02 * 1e-4 + 40 * 0.004 * 2e-5
                          + 41 * 0.0008 * 4e-6)
    assert wd.paper_cumulative_decay("annealed", data="cifar100") == pytest.approx(annealed)


# Appendix F.4, typed in from the paper's text: initial λ and its milestones per data set.
F4 = {"cifar10": (2e-4, {"60": 0.2, "90": 0.5, "120": 0.5, "140": 0.5, "160": 0.5}),
      "cifar100": (5e-4, {"60": 0.2, "120": 0.2, "160": 0.2})}


@pytest.mark.parametrize("data", ["cifar10", "cifar100"])
def test_paper_scale_spec_is_the_papers_schedule(data):
    s = {**experiments.get("wei-wd-anneal").scales["paper"], "data": data, "seed": 0}
    spec = wd.train_spec({**s, "weight_decay_schedule": "annealed"})
    assert (spec["model"], spec["data"], spec["epochs"]) == ("wrn16", data, 200)
    assert (spec["n_train"], spec["n_test"], spec["batch_size"]) == (None, None, 128)
    assert spec["schedule"] == {"name": "constant", "lr": 0.1,
                                "milestones": {"60": 0.2, "120": 0.2, "160": 0.2}}
    assert spec["weight_decay"] == F4[data][0] and spec["weight_decay_power"] == 2.0
    assert spec["weight_decay_milestones"] == F4[data][1]
    fixed = wd.train_spec({**s, "weight_decay_schedule": "fixed"})
    assert fixed["weight_decay_milestones"] == {} and fixed["schedule"] == spec["schedule"]
    assert fixed["weight_decay"] == F4[data][0]
    with pytest.raises(MarginlabError):
        wd.train_spec({**s, "weight_decay_schedule": "cosine"})
    # numbers the user sets replace the paper's, on every data set
    own = wd.train_spec({**s, "weight_decay_schedule": "annealed", "weight_decay": 1e-3,
                         "wd_milestones": [[100, 0.1]]})
    assert own["weight_decay"] == 1e-3 and own["weight_decay_milestones"] == {"100": 0.1}


def test_data_setting_errors():
    s = {**experiments.get("wei-wd-anneal").scales["paper"], "seed": 0,
         "weight_decay_schedule": "fixed"}
    assert wd.data_sets(s) == ["cifar10", "cifar100"]
    with pytest.raises(MarginlabError, match="one data set, got data='cifar10\\+cifar100'"):
        wd.train_spec(s)
    with pytest.raises(MarginlabError, match="gives only for cifar10 and cifar100; set "
                                             "weight_decay for mnist5k"):
        wd.train_spec({**s, "data": "mnist5k"})
    assert wd.train_spec({**s, "data": "mnist5k", "weight_decay": 0.01,
                          "wd_milestones": []})["weight_decay"] == 0.01
    for bad in ("cifar10+cifar10", "cifar10+", "", 3):
        with pytest.raises(MarginlabError, match="joined by"):
            wd.data_sets({"data": bad})
    with pytest.raises(MarginlabError, match="unknown data set 'svhn'"):
        wd.data_sets({"data": "cifar10+svhn"})
    for bad in (0.0, -1e-4, "2e-4", True):
        with pytest.raises(MarginlabError, match="weight_decay must be a number > 0"):
            wd.train_spec({**s, "data": "cifar10", "weight_decay": bad})


def test_paper_sweep_gives_each_data_set_its_own_schedule():
    source = experiments.trial_source("wei-wd-anneal")
    trials, fn = sweep_spec.expand(source.default_spec("paper", [0]), source)
    assert fn is wd.wd_anneal_trial
    assert [(t.params["data"], t.params["weight_decay_schedule"]) for t in trials] == [
        ("cifar10", "annealed"), ("cifar10", "fixed"), ("cifar100", "annealed"),
        ("cifar100", "fixed")]
    for t in trials:
        spec = wd.train_spec(t.settings)
        lam, milestones = F4[t.params["data"]]
        assert spec["weight_decay"] == lam
        annealed = t.params["weight_decay_schedule"] == "annealed"
        assert spec["weight_decay_milestones"] == (milestones if annealed else {})


TINY = {"n_train": 50, "n_test": 50, "widths": [16], "epochs": 10, "milestone_epochs": 10,
        "batch_size": 25, "lr": 0.1, "weight_decay": 1e-3, "lr_milestones": [[3, 0.5], [7, 0.1]],
        "wd_milestones": [[4, 0.2], [8, 0.5]], "checkpoint_every": 10, "lambda_grid": []}


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
    assert [r["params"]["data"] for r in rows] == ["mnist5k"] * 2
    assert (out / "runs" / "mnist5k-annealed-seed0" / "metrics.jsonl").exists()
    assert (out / "plots" / "wd_anneal.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert md.startswith("# wei-wd-anneal") and "5.86" in md and "substitute" in md
    with pytest.raises(MarginlabError):
        exp.run(exp.request("cpu", out, settings))


def test_initial_lambda_is_chosen_on_held_out_images_and_claimed(tmp_path):
    from scipy import stats

    from marginlab.claims import read_claims

    exp = experiments.get("wei-wd-anneal")
    out = tmp_path / "wd"
    settings = {**TINY, "epochs": 3, "trials": 3, "workers": 0, "weight_decay": None,
                "lambda_grid": [1e-4, 3.0], "validation": 20, "selection_seeds": 1}
    exp.run(exp.request("cpu", out, settings))
    rows = _read(out / "trials.jsonl")
    select = [r for r in rows if r["params"].get("stage") == "select"]
    assert [r["params"]["weight_decay"] for r in select] == [1e-4, 3.0]
    # λ = 3 shrinks the weights to nothing: chance-level validation error, so 1e-4 is chosen.
    assert select[1]["result"]["test_error"] > select[0]["result"]["test_error"]
    final = [r for r in rows if r["params"].get("stage") is None]
    assert len(final) == 6
    for arm in ("annealed", "fixed"):
        spec = json.loads((out / "runs" / f"mnist5k-{arm}-seed0" / "config.json").read_text())
        assert spec["spec"]["weight_decay"] == 1e-4
    (claim,) = read_claims(out)
    diffs = []
    for seed in range(3):
        err = {r["params"]["weight_decay_schedule"]: r["result"]["test_error"] for r in final
               if r["params"]["seed"] == seed}
        diffs.append(100 * (err["fixed"] - err["annealed"]))
    assert claim.effect == pytest.approx(np.mean(diffs), abs=1e-12)
    assert claim.se == pytest.approx(stats.sem(diffs), rel=1e-9)
    assert claim.verdict in ("reproduced", "partly", "not reproduced")
    assert "substitute" in claim.measured and "6.01" in claim.paper
    md = (out / "report.md").read_text()
    assert "chosen on held-out data" in md and claim.verdict in md


def test_held_out_split_is_disjoint_and_fixed():
    from marginlab import data

    split = data.load("mnist5k", n_train=100, n_test=10)
    a, b = wd.held_out_split(split, 30), wd.held_out_split(split, 30)
    assert len(a.y_train) == 70 and len(a.y_test) == 30
    assert np.array_equal(a.X_test.numpy(), b.X_test.numpy())
    rows = {x.numpy().tobytes() for x in split.X_train}
    tr = {x.numpy().tobytes() for x in a.X_train}
    va = {x.numpy().tobytes() for x in a.X_test}
    assert not tr & va and tr | va == rows
    with pytest.raises(MarginlabError, match="validation"):
        wd.held_out_split(split, 100)


def test_paper_scale_needs_the_data_directory(tmp_path):
    exp = experiments.get("wei-wd-anneal")
    with pytest.raises(MarginlabError, match="--root"):
        exp.run(exp.request("paper", tmp_path / "p"))


# One epoch of the default paper scale (WideResNet-16-4, both data sets) on 20 training images:
# every milestone of the 200-epoch schedule lands on epoch 1, so the recorded λ and lr show which
# schedule each data set got.
PAPER_TINY = {"epochs": 1, "trials": 1, "workers": 0, "batch_size": 10}


def test_paper_scale_runs_both_data_sets_end_to_end(tmp_path):
    exp = experiments.get("wei-wd-anneal")
    root = write_cifar_files(tmp_path / "data")
    out = tmp_path / "paper"
    exp.run(exp.request("paper", out, PAPER_TINY, root=root))
    rows = _read(out / "trials.jsonl")
    assert [(r["params"]["data"], r["params"]["weight_decay_schedule"]) for r in rows] == [
        ("cifar10", "annealed"), ("cifar10", "fixed"), ("cifar100", "annealed"),
        ("cifar100", "fixed")]
    assert all(r["status"] == "ok" for r in rows)
    lr_1 = 0.1 * 0.2 ** 3  # ×0.2 at 60, 120 and 160, all moved to epoch 1
    wd_1 = {"cifar10": 2e-4 * 0.2 * 0.5 ** 4, "cifar100": 5e-4 * 0.2 ** 3}
    for data, classes in (("cifar10", 10), ("cifar100", 100)):
        for arm in ("annealed", "fixed"):
            run = out / "runs" / f"{data}-{arm}-seed0"
            spec = json.loads((run / "config.json").read_text())["spec"]
            assert (spec["model"], spec["data"], spec["root"]) == ("wrn16", data, str(root))
            assert spec["weight_decay"] == F4[data][0]
            (h,) = _read(run / "metrics.jsonl")
            expected = wd_1[data] if arm == "annealed" else F4[data][0]
            assert h["weight_decay"] == pytest.approx(expected, rel=1e-12)
            assert h["lr"] == pytest.approx(lr_1, rel=1e-12)
            assert h["n"] == 20 and h["steps"] == 2
            (final,) = (run / "snapshots").glob("model-*.safetensors")  # no loss thresholds
            meta = models.metadata(final)
            assert meta["spec"]["name"] == "wrn16"
            assert meta["spec"]["kwargs"]["num_classes"] == classes
    md = (out / "report.md").read_text()
    assert "## cifar10: this run's test error" in md and "## cifar100: this run's test error" in md
    assert "| 26.22 |" in md and "| 5.86 |" in md and "CIFAR-10 only" not in md
    assert "weight_decay (cifar100) = 0.0005" in md
    assert (out / "plots" / "wd_anneal.png").stat().st_size > 10_000


def test_paper_scale_checks_the_files_before_training(tmp_path, capsys):
    root = write_cifar_files(tmp_path / "data")
    (root / "cifar-100-python" / "test").write_bytes(b"\x80\x02}q\x00(")
    out = tmp_path / "p"
    rc = main(["reproduce", "wei-wd-anneal", "--scale", "paper", "--root", str(root),
               "--out", str(out), "--set", "data=cifar100"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "cifar-100-python/test: corrupt or truncated pickle" in err
    assert not out.exists()
    rc = main(["reproduce", "wei-wd-anneal", "--scale", "paper", "--root", str(root),
               "--out", str(out), "--set", "data=cifar10+svhn"])
    assert rc == 2 and "unknown data set 'svhn'" in capsys.readouterr().err
