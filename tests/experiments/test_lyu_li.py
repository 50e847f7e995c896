"""End-to-end runs of the Lyu & Li experiments at tiny sizes (the registry, the runner, the
report, the claims), the data check before any side effect, and the refusal to overwrite."""

import json
import pickle

import numpy as np
import pytest
from scipy import stats

from marginlab import experiments
from marginlab.claims import read_claims
from marginlab.cli import main
from marginlab.errors import MarginlabError
from marginlab.experiments.datacheck import needs_root, not_paper_data


def write_cifar(root, n_per_batch=4, n_test=4, seed=0):
    """CIFAR-10 python batches in the distributed layout (bytes keys, uint8 rows)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) % 10 for v in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


CIFAR_TINY = {"n_train": 20, "n_test": 10, "epochs": 2, "seeds": 1, "workers": 2,
              "width": 0.0625, "kkt_checkpoints": 2, "kkt_n": 20,
              "schedules": ["constant", "loss_based"]}


def test_lyu_li_cifar_cpu_pipeline_on_written_files(tmp_path):
    write_cifar(tmp_path / "data", n_per_batch=10, n_test=10)
    exp = experiments.get("lyu-li-cifar")
    out = tmp_path / "out"
    req = exp.request("cpu", out, CIFAR_TINY, root=tmp_path / "data")
    exp.check_data(req)
    page = exp.run(req)
    assert page.exists() and (out / "report.md").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 2 * 2  # schedules × biases
    for name, entry in summary["runs"].items():
        assert entry["final"]["epoch"] == 2, name
        assert np.isfinite(entry["final"]["log10_loss_mean"])
        assert (out / "runs" / name / "snapshots" / "model-5.safetensors").exists()
        config = json.loads((out / "runs" / name / "config.json").read_text())
        assert config["loss"] == "cross_entropy" and config["tf32"] is False
    # 50 training images are not CIFAR-10: every claim says so, none is a verdict.
    claims = read_claims(out)
    assert claims and all(c.verdict == "not testable at this scale" for c in claims)
    assert all("50 training" in c.criterion and c.experiment == "lyu-li-cifar" for c in claims)
    assert "Not evidence about the paper" in (out / "report.md").read_text()
    # The same directory is never overwritten without --overwrite; --resume finishes at once.
    with pytest.raises(MarginlabError, match="--resume"):
        exp.run(req)
    exp.run(exp.request("cpu", out, CIFAR_TINY, root=tmp_path / "data", resume=True))
    assert len(read_claims(out)) == len(claims)


def test_missing_data_fails_in_one_line_before_any_side_effect(tmp_path, capsys):
    out = tmp_path / "cifar"
    assert main(["reproduce", "lyu-li-cifar", "--out", str(out)]) == 2
    assert main(["reproduce", "lyu-li-cifar", "--out", str(out), "--root",
                 str(tmp_path / "nowhere")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", "lyu-li-cifar", "--out", str(out), "--root",
                 str(tmp_path / "empty")]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("marginlab reproduce: error:") for line in err)
    assert "--root" in err[0] and "lacks" in err[2]


def test_list_says_which_scales_need_root(capsys):
    assert main(["reproduce", "--list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "cpu (needs --root)" in lines["lyu-li-cifar"]
    assert "paper (needs --root)" in lines["lyu-li-mnist"]
    assert "cpu (needs --root)" not in lines["lyu-li-mnist"]
    assert needs_root({"data": "cifar10+cifar100"}) and not needs_root({"data": "mnist5k"})
    assert needs_root({"mnist_data": "mnist"}) and not needs_root({"data": ["thm43"]})


def test_not_paper_data_counts_the_images(tmp_path):
    write_cifar(tmp_path, n_per_batch=2, n_test=3)
    why = not_paper_data({"data": "cifar10"}, tmp_path)
    assert "10 training and 3 test images" in why and "50000" in why
    assert not_paper_data({"data": "mnist5k"}, None) is None


def test_lyu_li_mnist_cli_tiny(tmp_path, capsys):
    out = tmp_path / "mnist"
    code = main(["reproduce", "lyu-li-mnist", "--out", str(out), "--set", "n_train=20",
                 "--set", "n_test=20", "--set", "epochs=3", "--set", "widths=[8]",
                 "--set", "seeds=1", "--set", "robust_n=4", "--set", "kkt_checkpoints=1"])
    assert code == 0
    assert "report:" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert {p["bias"] for p in summary["pairs"]} == {"first", "none"}
    assert all(p["epoch"] == 3 for p in summary["pairs"])
    md = (out / "report.md").read_text()
    assert "Table 1" in md and "CPU scale" in md and "equal epochs" in md
    claims = read_claims(out)
    sources = {c.source for c in claims}
    assert {"Lyu & Li, Theorem 4.1 / A.7", "Lyu & Li, Figure 1 / Table 1",
            "Lyu & Li, Theorem 4.4"} <= sources
    loss = next(c for c in claims if c.claim.startswith("loss-based lr reaches a lower"))
    d = [p["constant"]["log10_loss_mean"] - p["loss_based"]["log10_loss_mean"]
         for p in summary["pairs"]]
    assert loss.effect == pytest.approx(np.mean(d)) and loss.se == pytest.approx(stats.sem(d))
    # Three epochs reach no snapshot model-1 (L̄ < 1e-10): Table 1's claim cannot be tested.
    table1 = next(c for c in claims if c.source == "Lyu & Li, Theorem 4.2, Table 1")
    assert table1.verdict == "not testable at this scale"


def test_reproduce_errors_are_one_line(tmp_path, capsys):
    assert main(["reproduce", "no-such-experiment"]) == 2
    assert main(["reproduce", "lyu-li-mnist", "--set", "bogus=1", "--out", str(tmp_path)]) == 2
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    assert main(["reproduce", "lyu-li-mnist", "--out", str(tmp_path / "foreign"),
                 "--overwrite"]) == 2
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "mine"
    assert main(["reproduce", "--all", "lyu-li-mnist"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("marginlab reproduce: error:") for line in err)


# --------------------------------------------------------------------------- on the sweep engine

ENGINE_TINY = {"n_train": 20, "n_test": 20, "epochs": 4, "widths": [8], "seeds": 1,
               "robust_n": 4, "kkt_checkpoints": 2, "schedules": ["constant", "loss_based"],
               "workers": 0}
TIME_KEYS = {"wall_time", "cpu_time"}


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the library catches it."""


def _run_metrics(out) -> dict[str, list[dict]]:
    return {p.name: [{k: v for k, v in json.loads(line).items() if k not in TIME_KEYS}
                     for line in (p / "metrics.jsonl").read_text().splitlines()]
            for p in sorted((out / "runs").iterdir())}


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _trial_lines(out) -> list[dict]:
    return _lines(out / "trials.jsonl")


def _resumes(run_dir) -> list[int]:
    """The epochs a run was resumed at."""
    return [e["epoch"] for e in _lines(run_dir / "events.jsonl") if e["event"] == "resume"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    exp = experiments.get("lyu-li-mnist")
    out = tmp_path_factory.mktemp("lyu") / "out"
    exp.run(exp.request("cpu", out, ENGINE_TINY))
    return out


def test_interrupted_experiment_resumes_its_partly_trained_run(tmp_path, monkeypatch,
                                                               uninterrupted):
    from marginlab.train.rundir import RunDir

    exp = experiments.get("lyu-li-mnist")
    out = tmp_path / "out"
    real, calls = RunDir.append_metrics, []

    def killed_at_the_sixth_epoch(self, record):  # the first run's 4 epochs, 2 of the next
        real(self, record)
        calls.append(self.path.name)
        if len(calls) == 6:
            raise _Killed

    with monkeypatch.context() as m:
        m.setattr(RunDir, "append_metrics", killed_at_the_sixth_epoch)
        with pytest.raises(_Killed):
            exp.run(exp.request("cpu", out, ENGINE_TINY))
    first, second = calls[0], calls[-1]
    assert [r["params"]["run"] for r in _trial_lines(out)] == [first]
    exp.run(exp.request("cpu", out, ENGINE_TINY, resume=True))
    lines = _trial_lines(out)
    # the finished run was skipped, the interrupted one continued from its epoch-1 checkpoint
    assert [r["params"]["run"] for r in lines[:2]] == [first, second]
    assert _resumes(out / "runs" / first) == [] and _resumes(out / "runs" / second) == [1]
    assert _run_metrics(out) == _run_metrics(uninterrupted)
    assert json.loads((out / "measure" / f"kkt-{second}.json").read_text()) == \
        json.loads((uninterrupted / "measure" / f"kkt-{second}.json").read_text())


def test_a_failed_run_is_one_error_after_the_others_are_recorded(tmp_path, monkeypatch,
                                                                  uninterrupted):
    from marginlab.experiments import lyu_li

    real = lyu_li.train_trial

    def fails_for_one_run(settings, run_dir=None):
        if run_dir.endswith("loss_based-bias-first-seed0"):
            raise ValueError("diverged by design")
        return real(settings, run_dir)

    exp = experiments.get("lyu-li-mnist")
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(lyu_li, "train_trial", fails_for_one_run)
        with pytest.raises(MarginlabError, match=r"^1 of 4 runs failed \(first: "
                           r"loss_based-bias-first-seed0: ValueError: diverged by design\)"):
            exp.run(exp.request("cpu", out, ENGINE_TINY))
    lines = _trial_lines(out)
    assert sorted((r["params"]["run"], r["status"]) for r in lines) == [
        ("constant-bias-first-seed0", "ok"), ("constant-bias-none-seed0", "ok"),
        ("loss_based-bias-first-seed0", "failed"), ("loss_based-bias-none-seed0", "ok")]
    assert not (out / "measure").exists() and not (out / "summary.json").exists()
    # --resume runs the failed run alone, then measures
    exp.run(exp.request("cpu", out, ENGINE_TINY, resume=True))
    lines = _trial_lines(out)
    assert lines[4]["params"]["run"] == "loss_based-bias-first-seed0" and lines[4]["status"] == "ok"
    assert [r["params"].get("measure") for r in lines[5:]] == ["kkt", "kkt", "robustness"]
    assert _run_metrics(out) == _run_metrics(uninterrupted)


def test_progress_shows_the_running_runs_epoch_and_loss(uninterrupted):
    from marginlab.experiments.lyu_li import _progress
    from marginlab.sweep import Trial

    run_root = uninterrupted / "runs"
    names = {"a": "loss_based-bias-none-seed0", "b": "not-started"}
    status = _progress(run_root, names, [Trial("a", {}, {}), Trial("b", {}, {})])
    last = json.loads((run_root / names["a"] / "metrics.jsonl").read_text().splitlines()[-1])
    assert status == {names["a"]: f"epoch 4 log10 L {last['log10_loss_mean']:.4g}"}


def test_unknown_backend_is_one_line_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "lyu-li-mnist", "--out", str(out), "--set", "backend=dask"]) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "setting 'backend' takes local or ray, got 'dask'" in err[0]


@pytest.mark.slow
def test_ray_backend_gives_the_numbers_of_the_local_pool(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    exp = experiments.get("lyu-li-mnist")
    outs = {}
    for backend in ("local", "ray"):
        outs[backend] = tmp_path / backend
        exp.run(exp.request("cpu", outs[backend],
                            {**ENGINE_TINY, "workers": 2, "backend": backend}))
    assert _run_metrics(outs["ray"]) == _run_metrics(outs["local"])
    local, ray = _trial_lines(outs["local"]), _trial_lines(outs["ray"])
    assert [r["id"] for r in ray] != [] and sorted(r["id"] for r in ray) == \
        sorted(r["id"] for r in local)
    for name in ("kkt-loss_based-bias-none-seed0", "robustness-loss_based-bias-none-seed0"):
        assert json.loads((outs["ray"] / "measure" / f"{name}.json").read_text()) == \
            json.loads((outs["local"] / "measure" / f"{name}.json").read_text())
