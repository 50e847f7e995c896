"""marginlab.Tracker in a plain torch loop: the run directory it writes holds margins that match
an independent float64 computation, resumes, refuses non-homogeneous models, and is read by
`marginlab plot`, `analyze` and `attack` unchanged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import marginlab as ml
from marginlab.cli import main
from marginlab.errors import MarginlabError, NotHomogeneousError
from marginlab.train.rundir import RunDir


@pytest.fixture(scope="module")
def digits():
    split = ml.data.load("digits", n_train=100, n_test=50)
    return split.X_train, split.y_train, split.X_test, split.y_test


def _train(model, X, y, epochs, tracker=None, start=1, lr=0.5, steps=20):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for epoch in range(start, start + epochs):
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X), y).backward()
            opt.step()
        if tracker is not None:
            tracker.record(model, epoch=epoch, lr=lr, steps=steps)


def _reference(model, X, y):
    """Normalized margins min_n q_n / ρ^L and min_n q_n / Π_i ‖W_i‖ (one factor per layer,
    Lyu & Li, Eq. (4)), and log10 mean cross-entropy, in float64 numpy."""
    m = _float64(model)
    with torch.no_grad():
        f = m(X.double()).numpy()
    yy = y.numpy()
    own = f[np.arange(len(yy)), yy]
    other = f.copy()
    other[np.arange(len(yy)), yy] = -np.inf
    q = own - other.max(axis=1)
    layers = [mod.weight.detach().double() for mod in m.modules()
              if isinstance(mod, torch.nn.Linear)]
    rho = math.sqrt(sum(float((w ** 2).sum()) for w in layers))
    prod = math.prod(float(w.norm()) for w in layers)
    # per-sample cross-entropy log(1 + Σ_{j≠y} e^{f_j − f_y}), without cancellation
    ce = np.log1p(np.exp(other - own[:, None]).sum(axis=1))
    log10_mean = (logsumexp(np.log(ce)) - math.log(len(ce))) / math.log(10)
    return q.min() / rho ** len(layers), q.min() / prod, log10_mean


def _float64(model):
    import copy

    return copy.deepcopy(model).double()


def test_plain_loop_run_dir_matches_reference_and_cli_reads_it(tmp_path, digits, capsys):
    X, y, Xt, yt = digits
    model = ml.models.build("mlp", in_dim=64, widths=[32], out_dim=10, seed=0)
    run = tmp_path / "mine"
    tracker = ml.Tracker(run, X, y, test=(Xt, yt), snapshots_at=(-0.5, -1), trajectory_every=1,
                         total_epochs=6, progress=False)
    _train(model, X, y, 6, tracker)
    report = tracker.close()
    assert report == run / "report.html" and report.exists()

    records = RunDir(run).metrics()
    assert [r["epoch"] for r in records] == list(range(1, 7))
    gamma, gamma_multi, log10_mean = _reference(model, X, y)
    last = records[-1]
    assert last["normalized_margin"] == pytest.approx(gamma, rel=1e-9)
    assert last["normalized_margin_multi"] == pytest.approx(gamma_multi, rel=1e-9)
    assert last["log10_loss_mean"] == pytest.approx(log10_mean, rel=1e-9, abs=1e-12)
    assert last["log10_lr"] == pytest.approx(math.log10(0.5))
    assert last["test_acc"] == pytest.approx(float((model(Xt).argmax(1) == yt).float().mean()))
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["name"] == "tensors"
    assert config["snapshots_at"] == pytest.approx([10 ** -0.5, 0.1])
    assert config["model"]["name"] == "mlp"
    # snapshots: the first record below each threshold, and the final model
    below = [next(r["epoch"] for r in records if r["log10_loss_mean"] < t) for t in (-0.5, -1)]
    for k, epoch in enumerate(below, start=1):
        assert ml.models.metadata(run / "snapshots" / f"model-{k}.safetensors")["extra"][
            "epoch"] == epoch
    final = ml.models.load(run / "snapshots" / "model-3.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(),
                                                 model.state_dict().values()))
    assert len(list((run / "trajectory").glob("*.safetensors"))) == 6

    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    assert main(["analyze", str(run), "--no-svm", "--kkt-every", "5", "--quiet"]) == 0
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["kkt"] and analysis["kkt"][-1]["epoch"] == 6
    assert main(["attack", str(run), "--n", "10", "--steps", "5", "--certificates", "global",
                 "--snapshots", "model-3", "--quiet"]) == 0
    rob = json.loads((run / "robustness.json").read_text())
    assert rob["splits"]["train"]["snapshots"]["model-3"]["summary"]["accuracy"] == \
        pytest.approx(float((model(X[torch.tensor(rob["splits"]["train"]["indices"])])
                             .argmax(1) == y[torch.tensor(rob["splits"]["train"]["indices"])])
                            .float().mean()))


def test_resume_continues_and_a_restart_replaces_later_epochs(tmp_path, digits):
    X, y, _, _ = digits
    model = ml.models.build("mlp", in_dim=64, widths=[16], out_dim=10, seed=1)
    run = tmp_path / "r"
    t1 = ml.Tracker(run, X, y, progress=False)
    _train(model, X, y, 3, t1, steps=5)
    t1.close()
    with pytest.raises(MarginlabError, match="already holds this run"):
        ml.Tracker(run, X, y, progress=False).record(model, epoch=4)
    fresh = ml.models.build("mlp", in_dim=64, widths=[16], out_dim=10, seed=1)  # a new process
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    t2 = ml.Tracker(run, X, y, resume=True, progress=False)
    assert t2.restore(fresh) == 3  # the weights of the last record
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(),
                                                 model.state_dict().values()))
    _train(fresh, X, y, 2, t2, start=4, steps=5)
    t2.close()
    records = RunDir(run).metrics()
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert records[3]["wall_time"] >= records[2]["wall_time"]
    # a loop restarted from its own epoch-2 checkpoint: epochs 3.. are replaced
    t3 = ml.Tracker(run, X, y, resume=True, progress=False)
    t3.record(fresh, epoch=3)
    assert [r["epoch"] for r in RunDir(run).metrics()] == [1, 2, 3]
    with pytest.raises(MarginlabError, match="already recorded"):
        t3.record(fresh, epoch=3)
    t3.close()


def test_refuses_non_homogeneous_models_unless_paper_convention(tmp_path, digits):
    X, y, _, _ = digits
    model = ml.models.build("mlp", in_dim=64, widths=[16], out_dim=10, bias="all", seed=0)
    with pytest.raises(NotHomogeneousError):
        ml.Tracker(tmp_path / "a", X, y, progress=False).record(model, epoch=1)
    assert not (tmp_path / "a").exists()  # refused before anything was written
    t = ml.Tracker(tmp_path / "b", X, y, margin_convention="paper_with_bias", progress=False)
    rec = t.record(model, epoch=1)
    t.close()
    assert math.isfinite(rec["normalized_margin"])


def test_subset_every_and_bad_settings(tmp_path, digits):
    X, y, _, _ = digits
    model = ml.models.build("mlp", in_dim=64, widths=[16], out_dim=10, seed=2)
    t = ml.Tracker(tmp_path / "s", X, y, subset=30, every=2, progress=False)
    assert t.record(model, epoch=1) is None
    rec = t.record(model, epoch=2)
    t.close()
    keep = torch.from_numpy(ml.data.balanced_first(y.numpy(), 30, 10))
    gamma, gamma_multi, log10_mean = _reference(model, X[keep], y[keep])
    assert rec["normalized_margin"] == pytest.approx(gamma, rel=1e-9)
    assert rec["normalized_margin_multi"] == pytest.approx(gamma_multi, rel=1e-9)
    assert rec["log10_loss_mean"] == pytest.approx(log10_mean, rel=1e-9)
    split = ml.data.load("tensors", tmp_path / "s" / "data.safetensors")
    assert torch.equal(split.y_train, y[keep]) and torch.equal(split.X_train, X[keep])
    assert [r["epoch"] for r in RunDir(tmp_path / "s").metrics()] == [2]
    with pytest.raises(MarginlabError):
        ml.Tracker(tmp_path / "x", X, y, every=0)
    with pytest.raises(MarginlabError):
        ml.Tracker(tmp_path / "x", X, y, subset=[0, 1000])
    with pytest.raises(MarginlabError):
        ml.Tracker(tmp_path / "x", X, y[:5])
