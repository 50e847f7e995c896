"""Exact resume and run-directory safety (marginlab.train.fit, marginlab.train.rundir).

A run interrupted at any point — by the budget, by an exception, or by SIGKILL at a random
moment of a ``marginlab train`` subprocess — and resumed gives the same metrics, bit for bit on
CPU, as the uninterrupted run (every key but wall_time/cpu_time). A directory is never
overwritten by a different run, and a directory that holds no run is never wiped.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from marginlab import models
from marginlab.errors import RunDirectoryError
from marginlab.storage import to_jsonable
from marginlab.train import ConstantLR, LossBasedLR, fit

steps_module = importlib.import_module("marginlab.train.steps")
TIME_KEYS = {"wall_time", "cpu_time"}


def _clusters(n: int, d: int, k: int, *, noise: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g, dtype=torch.float64)
    centres = 2 * centres / centres.norm(dim=1, keepdim=True)
    y = torch.arange(n) % k
    return centres[y] + noise * torch.randn(n, d, generator=g, dtype=torch.float64), y


DATA = _clusters(30, 4, 3, seed=1)
TEST = _clusters(15, 4, 3, seed=2)


def _model():
    return models.mlp(4, [6], 3, seed=2).double()


def _run(run_dir, epochs, *, model=None, resume=False, overwrite=False, seed=0, **kw):
    """A short mini-batch run whose large α0 makes the schedule roll epochs back (so the
    resumed state must include α and the shuffling generator)."""
    model = model if model is not None else _model()
    kw.setdefault("schedule", LossBasedLR(alpha0=20.0))
    return fit(model, DATA, TEST, epochs=epochs, batch_size=8, run_dir=run_dir, seed=seed,
               resume=resume, overwrite=overwrite, progress=False, **kw)


def _strip(records):
    """Records without their times, as JSON stores them (NaN/inf as strings)."""
    return [{k: v for k, v in to_jsonable(r).items() if k not in TIME_KEYS} for r in records]


def _metrics(run_dir) -> list[dict]:
    """metrics.jsonl read strictly: every line complete JSON, epochs 1, 2, … consecutive."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    assert text == "" or text.endswith("\n"), "half-written metrics line"
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    return records


def _events(run_dir) -> list[dict]:
    return [json.loads(s) for s in (Path(run_dir) / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted 10-epoch run: its metrics and final parameters."""
    run = tmp_path_factory.mktemp("ref") / "run"
    res = _run(run, 10)
    assert sum(r["retries"] for r in res.history) > 0
    return _metrics(run), [p.detach().clone() for p in res.model.parameters()]


# ---------------------------------------------------------------------------------------------
# In-process interruptions
# ---------------------------------------------------------------------------------------------


def test_resume_after_budget_equals_uninterrupted_run(tmp_path, reference):
    ref_metrics, ref_params = reference
    run = tmp_path / "run"
    first = _run(run, 5)
    assert first.stop_reason == "epochs" and len(first.history) == 5
    model = _model()  # a fresh process would rebuild the model from scratch
    res = _run(run, 10, model=model, resume=True)
    metrics = _metrics(run)
    assert _strip(metrics) == _strip(ref_metrics)
    assert _strip(res.history) == _strip(ref_metrics)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_params))
    assert {"event": "resume", "epoch": 5} in _events(run)
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 10  # the budget may change on resume


def test_resume_after_crash_between_checkpoints(tmp_path, monkeypatch, reference):
    """Crash during an attempt at epoch 8 with checkpoints every 3 epochs: metrics of epoch 7
    exist but the checkpoint is from epoch 6; the resumed run drops line 7 and redoes it."""
    ref_metrics, _ = reference
    run = tmp_path / "run"
    real, calls = steps_module.sgd_epoch, []

    def crashing(*args, **kwargs):
        if len(calls) == sum(r["retries"] + 1 for r in ref_metrics[:7]):
            raise KeyboardInterrupt  # the first attempt at epoch 8
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(steps_module, "sgd_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        _run(run, 10, checkpoint_every=3)
    monkeypatch.setattr(steps_module, "sgd_epoch", real)
    assert len(_metrics(run)) == 7
    res = _run(run, 10, resume=True, checkpoint_every=3)
    assert _strip(_metrics(run)) == _strip(ref_metrics)
    assert _strip(res.history) == _strip(ref_metrics)
    assert {"event": "resume", "epoch": 6} in _events(run)


def test_resume_with_metrics_but_no_checkpoint_is_refused(tmp_path):
    """A checkpoint is written at epoch 0, before any metrics: metrics without one mean a lost
    file, and resuming refuses instead of starting over over them."""
    run = tmp_path / "run"
    _run(run, 3)
    (run / "checkpoints" / "last.safetensors").unlink()
    before = _snapshot_files(run)
    with pytest.raises(RunDirectoryError) as exc:
        _run(run, 10, resume=True)
    assert "no checkpoint" in str(exc.value) and "\n" not in str(exc.value)
    assert _snapshot_files(run) == before


def test_resume_before_first_checkpoint_starts_afresh(tmp_path, reference):
    """Stopped after config.json, before the epoch-0 checkpoint: nothing was recorded, and the
    resumed run is the uninterrupted one."""
    ref_metrics, _ = reference
    run = tmp_path / "run"
    _run(run, 3)
    (run / "checkpoints" / "last.safetensors").unlink()
    (run / "metrics.jsonl").write_text("")
    _run(run, 10, resume=True)
    assert _strip(_metrics(run)) == _strip(ref_metrics)


def test_resume_of_a_finished_run_adds_nothing(tmp_path, reference):
    ref_metrics, ref_params = reference
    run = tmp_path / "run"
    _run(run, 10)
    model = _model()
    res = _run(run, 10, model=model, resume=True)
    assert _strip(res.history) == _strip(ref_metrics) == _strip(_metrics(run))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_params))


# ---------------------------------------------------------------------------------------------
# Directory safety
# ---------------------------------------------------------------------------------------------


def _snapshot_files(root: Path) -> dict[str, bytes]:
    """Every file's bytes but the lock's (which records its latest holder)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_existing_directory_rules(tmp_path):
    run = tmp_path / "run"
    _run(run, 2, schedule=ConstantLR(0.05))
    before = _snapshot_files(run)

    # a different run (another seed, another schedule) is refused and nothing is touched
    for kwargs, what in (({"seed": 1}, "seed"), ({"schedule": ConstantLR(0.1)}, "schedule")):
        for resume in (False, True):
            with pytest.raises(RunDirectoryError) as exc:
                _run(run, 2, resume=resume, **{"schedule": ConstantLR(0.05), **kwargs})
            msg = str(exc.value)
            assert "different run" in msg and what in msg and "\n" not in msg
    # the same run without resume is refused too
    with pytest.raises(RunDirectoryError) as exc:
        _run(run, 4, schedule=ConstantLR(0.05))
    assert "--resume" in str(exc.value)
    assert _snapshot_files(run) == before

    # overwrite replaces it: only the new run's files and metrics remain
    (run / "trajectory").mkdir()
    (run / "trajectory" / "epoch-000099.safetensors").write_bytes(b"stale")
    res = _run(run, 1, seed=1, overwrite=True, schedule=ConstantLR(0.05))
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert _strip(_metrics(run)) == _strip(res.history)
    assert not (run / "trajectory").exists()


@pytest.mark.parametrize("flags", [{}, {"overwrite": True}, {"resume": True},
                                   {"resume": True, "overwrite": True}])
def test_non_run_directory_is_never_wiped(tmp_path, flags):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    (mine / "metrics.jsonl").write_text("not ours\n")
    before = _snapshot_files(mine)
    with pytest.raises(RunDirectoryError) as exc:
        _run(mine, 1, **flags)
    assert "holds no marginlab run" in str(exc.value)
    assert _snapshot_files(mine) == before


def test_output_path_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(RunDirectoryError):
        _run(path, 1, overwrite=True)
    assert path.read_text() == "x"


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    run = tmp_path / "run"
    _run(run, 2)
    (run / "checkpoints" / "last.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(RunDirectoryError) as exc:
        _run(run, 3, resume=True)
    assert "unreadable" in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------------------------------------
# SIGKILL at random moments: `marginlab train` in a subprocess, resumed each time
# ---------------------------------------------------------------------------------------------

TRAIN_ARGS = ["train", "--model", "mlp", "--widths", "16", "--data", "thm43", "--n-train", "100",
              "--n-test", "50", "--batch-size", "10", "--epochs", "40", "--checkpoint-every",
              "1", "--seed", "0", "--threads", "1"]


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_random_moments_then_resume(tmp_path):
    from marginlab.cli import build_parser
    from marginlab.cli.train import spec_from_args
    from marginlab.train.spec import run_training

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "marginlab.cli", *TRAIN_ARGS, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    rng = random.Random(20240601)
    kills = []
    for k, min_lines in enumerate((3, 14, 26)):
        proc = subprocess.Popen([*cmd, *(["--resume"] if k else [])], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while _lines(out / "metrics.jsonl") < min_lines and proc.poll() is None:
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.2))  # somewhere inside an epoch, a write or a checkpoint
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        metrics = _metrics(out)  # complete lines only, epochs consecutive
        ckpt = load_file(str(out / "checkpoints" / "last.safetensors"))  # readable
        assert "rng_state" in ckpt
        kills.append(len(metrics))
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "epoch 40:" in done.stdout

    resumes = [e["epoch"] for e in _events(out) if e["event"] == "resume"]
    assert len(resumes) == 3 and resumes == sorted(resumes)
    print(f"\nkilled with {kills} metrics lines on disk; resumed from epochs {resumes}")

    args = build_parser().parse_args([*TRAIN_ARGS, "--out", str(tmp_path / "ref")])
    ref = run_training(spec_from_args(args), tmp_path / "ref", progress=False)
    assert len(ref.history) == 40
    assert _strip(_metrics(out)) == _strip(_metrics(tmp_path / "ref"))
    final = load_file(str(out / "snapshots" / "model-5.safetensors"))
    assert all(torch.equal(final[k], v) for k, v in ref.model.state_dict().items())
    assert json.loads((out / "config.json").read_text())["spec"] == \
        json.loads((tmp_path / "ref" / "config.json").read_text())["spec"]
