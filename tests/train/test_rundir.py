"""Run directories that defend themselves (marginlab.train.rundir) and configs refused at the
boundary (marginlab.train.config): one writer at a time, a checkpoint verified on load, resume
only when config, checkpoint and metrics agree — each refusal one line, nothing changed."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from marginlab import models
from marginlab.core.margins import MarginStats
from marginlab.errors import MarginlabError, RunDirectoryError
from marginlab.train import (
    ConstantLR,
    EpochRecord,
    FitConfig,
    History,
    LossBasedLR,
    LossBasedMomentum,
    RunDir,
    WeightDecay,
    fit,
)
from marginlab.train.config import RESUMABLE_FIELDS
from marginlab.train.rundir import IDENTITY_KEYS


def _data(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return X, torch.arange(n) % 3


DATA = _data()


def _run(run_dir, epochs=4, *, resume=False, schedule=None, **kw):
    model = models.mlp(4, [5], 3, seed=0).double()
    kw.setdefault("batch_size", 8)
    return fit(model, DATA, schedule=schedule or LossBasedMomentum(), epochs=epochs,
               run_dir=run_dir, resume=resume, progress=False, **kw)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def _refused(exc_info, *fragments):
    msg = str(exc_info.value)
    assert msg and "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg


# --- the config, checked where it enters ---------------------------------------------------
@pytest.mark.parametrize("field,value,fragment", [
    ("epochs", 0, "epochs"), ("epochs", 2.5, "epochs"), ("epochs", True, "epochs"),
    ("epochs", "10", "epochs"), ("batch_size", 0, "batch_size"), ("batch_size", -3, "batch_size"),
    ("loss", "hinge", "unknown loss"), ("weight_decay", -1.0, "weight decay"),
    ("weight_decay", math.nan, "weight decay"), ("snapshots_at", [-1.0], "snapshot threshold"),
    ("snapshots_at", [0.0], "snapshot threshold"), ("snapshots_at", [math.inf], "snapshot"),
    ("snapshots_at", "1e-10", "snapshots_at"), ("seed", -1, "seed"), ("seed", 1.5, "seed"),
    ("device", "banana", "device"), ("max_time", -1.0, "max_time"), ("max_time", 0, "max_time"),
    ("max_cpu_time", math.nan, "max_cpu_time"), ("stop_at_log10_loss", math.nan, "stop_at"),
    ("stop_at_log10_loss", -math.inf, "stop_at"), ("margin_convention", "x", "margin_convention"),
    ("checkpoint_every", 0, "checkpoint_every"), ("trajectory_every", 0, "trajectory_every"),
    ("eval_batch_size", 0, "eval_batch_size"), ("max_retries", 0, "max_retries"),
    ("schedule", "loss_based", "Schedule"),
])
def test_bad_config_values_are_one_line_errors_before_any_file(field, value, fragment,
                                                               tmp_path):
    settings = {"schedule": LossBasedLR(), "epochs": 2, field: value}
    with pytest.raises(MarginlabError) as exc:
        fit(models.mlp(4, [5], 3).double(), DATA, run_dir=tmp_path / "run", progress=False,
            **settings)
    _refused(exc, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make,fragment", [
    (lambda: WeightDecay(1e-3, milestones={"abc": 0.5}), "epoch 'abc'"),
    (lambda: WeightDecay(1e-3, milestones={0: 0.5}), "epoch 0"),
    (lambda: WeightDecay(1e-3, milestones={5: -1.0}), "factor"),
    (lambda: WeightDecay(1e-3, power=0.5), "power"),
    (lambda: ConstantLR(0.1, milestones={"abc": 0.2}), "epoch 'abc'"),
    (lambda: ConstantLR(0.1, milestones={60: math.nan}), "factor"),
    (lambda: ConstantLR("fast"), "learning rate"),
    (lambda: LossBasedLR(alpha0="big"), "alpha0"),
    (lambda: LossBasedMomentum(momentum=math.inf), "momentum"),
])
def test_bad_schedule_and_penalty_values(make, fragment):
    with pytest.raises(MarginlabError) as exc:
        make()
    _refused(exc, fragment)


def test_keyword_form_and_config_form_are_one_run():
    X, y = DATA
    runs = []
    for how in ("keywords", "config", "config+override"):
        model = models.mlp(4, [5], 3, seed=0).double()
        if how == "keywords":
            res = fit(model, (X, y), schedule=LossBasedLR(), epochs=3, batch_size=8,
                      progress=False)
        elif how == "config":
            res = fit(model, (X, y), FitConfig(LossBasedLR(), epochs=3, batch_size=8),
                      progress=False)
        else:
            res = fit(model, (X, y), FitConfig(LossBasedLR(), epochs=9, batch_size=8),
                      epochs=3, progress=False)
        assert isinstance(res.history, History) and len(res.history) == 3
        runs.append(res.history.column("log_loss_sum"))
    assert runs[0] == runs[1] == runs[2]
    with pytest.raises(MarginlabError) as exc:
        fit(models.mlp(4, [5], 3).double(), DATA, schedule=LossBasedLR(), epochs=1,
            batch_sise=8)
    _refused(exc, "batch_sise")


def test_history_is_typed_and_reads_like_the_metrics_file(tmp_path):
    res = _run(tmp_path / "run", 3, schedule=ConstantLR(0.05))
    rec = res.history[-1]
    assert rec.epoch == 3 and rec["epoch"] == 3 and "samples_used" not in rec
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [list(r) for r in lines] == [list(r) for r in res.history]
    assert res.history.column("steps") == [3, 3, 3]
    assert History.from_dicts(lines).column("log_loss_sum") == res.history.column("log_loss_sum")
    with pytest.raises(MarginlabError):
        res.history.column("no_such_field")


def test_an_epoch_record_is_its_margin_stats_and_keeps_the_file_order(tmp_path):
    res = _run(tmp_path / "run", 2, schedule=ConstantLR(0.05))
    rec = res.history[-1]
    stats = [f.name for f in dataclasses.fields(MarginStats)]
    assert isinstance(rec, MarginStats) and all(rec[k] == getattr(rec, k) for k in stats)
    # the column order of metrics.jsonl, written out: epoch, the margin statistics, the rest
    assert list(rec) == ["epoch", "q_min", "rho", "norm_product", "order", "normalized_margin",
                         "normalized_margin_multi", "smoothed_margin", "smoothed_margin_multi",
                         "log_loss_sum", "log10_loss_mean", "train_acc", "n", "alpha", "lr",
                         "log10_lr", "steps", "retries", "wall_time", "cpu_time"]
    assert res.history.column("q_min") == [r["q_min"] for r in res.history]
    assert EpochRecord.from_dict(rec.as_dict()) == rec
    with pytest.raises(MarginlabError, match="without epoch, q_min"):
        EpochRecord.from_dict({})


def test_last_metrics_reads_the_last_complete_line(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run.last_metrics() is None  # no run yet
    _run(run.path, 3, schedule=ConstantLR(0.05))
    lines = run.metrics_path.read_text().splitlines()
    assert run.last_metrics() == json.loads(lines[-1])
    with open(run.metrics_path, "a") as fh:  # an epoch line being appended right now
        fh.write('{"epoch": 4, "q_mi')
    assert run.last_metrics() == json.loads(lines[-1])


# --- one writer --------------------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    _run(run, 2)
    before = _files(run)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(run / '.lock')!r}, os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0); os.pwrite(fd, b"pid %d (holder)" % os.getpid(), 0)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for resume in (True, False):
            with pytest.raises(RunDirectoryError) as exc:
                _run(run, 4, resume=resume)
            _refused(exc, "in use by another process", f"pid {holder.pid}")
        assert _files(run) == before
    finally:
        holder.kill()
        holder.wait()
    _run(run, 4, resume=True)  # the lock dies with its holder
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4


def test_a_refused_run_leaves_the_lock_file_as_it_was(tmp_path):
    run = tmp_path / "run"
    _run(run, 2)
    lock = run / ".lock"
    before = (lock.read_bytes(), lock.stat().st_mtime_ns)
    with pytest.raises(RunDirectoryError):
        _run(run, 2, seed=5)  # a different run
    assert (lock.read_bytes(), lock.stat().st_mtime_ns) == before
    lock.unlink()  # a run directory from before lock files: refused, and given none
    with pytest.raises(RunDirectoryError):
        _run(run, 2, seed=5)
    assert not lock.exists()


def test_lock_is_released_after_a_run_and_after_an_error(tmp_path):
    run = tmp_path / "run"
    _run(run, 2)
    with pytest.raises(RunDirectoryError):
        _run(run, 2, seed=5)  # a different run: refused, and the lock released
    t0 = time.perf_counter()
    _run(run, 3, resume=True)
    assert time.perf_counter() - t0 < 60


# --- resume verifies before it continues ---------------------------------------------------
def _flip_tensor_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    header = int.from_bytes(raw[:8], "little")
    raw[8 + header + 5] ^= 0x01  # a byte of the first tensor's data
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage,fragment", [
    ("bit_flip", "SHA-256"),
    ("metrics_short", "ends at epoch 2 but the checkpoint is at epoch 3"),
    ("metrics_edited", "does not match the checkpoint"),
    ("metrics_cut_before_checkpoint", "incomplete line"),
    ("metrics_garbage_line", "line 2 is not valid JSON"),
    ("metrics_wrong_epoch", "line 2 is not the record of epoch 2"),
    ("checkpoint_missing", "no checkpoint"),
    ("config_edited", "belongs to another run"),
    ("checkpoint_garbage", "unreadable"),
])
def test_damaged_run_is_refused_and_left_as_it_is(damage, fragment, tmp_path):
    run = tmp_path / "run"
    _run(run, 3)
    ckpt, metrics = run / "checkpoints" / "last.safetensors", run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    if damage == "bit_flip":
        _flip_tensor_byte(ckpt)
    elif damage == "metrics_short":
        metrics.write_text("".join(lines[:2]))
    elif damage == "metrics_edited":
        rec = json.loads(lines[2])
        rec["log_loss_sum"] *= 1 + 1e-12
        metrics.write_text("".join(lines[:2]) + json.dumps(rec) + "\n")
    elif damage == "metrics_cut_before_checkpoint":
        metrics.write_text(lines[0] + lines[1][:40])
    elif damage == "metrics_garbage_line":
        metrics.write_text(lines[0] + "{not json\n" + lines[2])
    elif damage == "metrics_wrong_epoch":
        metrics.write_text(lines[0] + lines[2] + lines[1])
    elif damage == "checkpoint_missing":
        ckpt.unlink()
    elif damage == "config_edited":  # what defines the run changed behind its back
        config = json.loads((run / "config.json").read_text())
        config["batch_size"] = 6
        (run / "config.json").write_text(json.dumps(config))
    elif damage == "checkpoint_garbage":
        ckpt.write_bytes(b"\x00" * 20)
    before = _files(run)
    with pytest.raises(RunDirectoryError) as exc:
        if damage == "config_edited":
            model = models.mlp(4, [5], 3, seed=0).double()
            fit(model, DATA, schedule=LossBasedMomentum(), epochs=5, batch_size=6, run_dir=run,
                resume=True, progress=False)
        else:
            _run(run, 5, resume=True)
    _refused(exc, fragment)
    assert _files(run) == before


def test_a_metrics_line_cut_off_past_the_checkpoint_is_dropped_on_resume(tmp_path):
    run, straight = tmp_path / "run", tmp_path / "straight"
    _run(run, 3)
    metrics = run / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole + whole.splitlines()[-1][:40])  # epoch 4's write, cut off
    resumed = _run(run, 5, resume=True).history
    reference = _run(straight, 5).history
    assert resumed.column("log_loss_sum") == reference.column("log_loss_sum")
    assert metrics.read_text().endswith("\n") and len(metrics.read_text().splitlines()) == 5


def test_resume_refuses_what_defines_the_run_and_accepts_budgets(tmp_path):
    run = tmp_path / "run"
    _run(run, 2, checkpoint_every=1)
    before = _files(run)
    for kw, what in (({"seed": 1}, "seed"), ({"batch_size": 6}, "batch_size"),
                     ({"schedule": LossBasedMomentum(momentum=0.5)}, "schedule"),
                     ({"weight_decay": 1e-3}, "weight_decay"), ({"loss": "exponential"}, "loss"),
                     ({"snapshots_at": (1e-3,)}, "snapshots_at"),
                     ({"eval_batch_size": 7}, "eval_batch_size")):
        with pytest.raises(RunDirectoryError) as exc:
            _run(run, 3, resume=True, **kw)
        _refused(exc, "different run", what)
    assert _files(run) == before
    assert {"epochs", "max_time", "max_cpu_time", "stop_at_log10_loss"} <= set(RESUMABLE_FIELDS)
    assert not set(RESUMABLE_FIELDS) & set(IDENTITY_KEYS)
    res = _run(run, 5, resume=True, max_time=1e6, max_cpu_time=1e6, stop_at_log10_loss=-1e3,
               checkpoint_every=2, trajectory_every=1, max_retries=50)
    assert len(res.history) == 5
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 5 and config["max_time"] == 1e6


def test_budgets_stop_a_run_and_are_recorded(tmp_path):
    res = _run(tmp_path / "run", 10**6, schedule=ConstantLR(0.05), max_cpu_time=0.5)
    assert res.stop_reason == "cpu_time" and 0 < len(res.history) < 10**6
    events = [json.loads(s) for s in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[-1] == {"event": "stop", "reason": "cpu_time", "epoch": len(res.history)}


def test_checkpoint_is_one_file_with_everything_to_continue(tmp_path):
    run = tmp_path / "run"
    model = models.mlp(4, [5], 3, seed=0).double()
    fit(model, DATA, schedule=LossBasedMomentum(), epochs=3, batch_size=8, run_dir=run,
        progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.safetensors"]
    ck = RunDir(run).load_checkpoint()
    names = set(ck.tensors)
    assert {f"model.{k}" for k in model.state_dict()} <= names
    assert {"rng_state", "train.log_losses"} <= names
    assert sum(k.startswith("step.velocity.") for k in names) == len(list(model.parameters()))
    assert ck.state["epoch"] == 3 and "alpha" in ck.state["schedule"]
    for k, v in model.state_dict().items():
        assert torch.equal(ck.tensors[f"model.{k}"], v)


def test_a_failed_write_is_one_line_and_leaves_the_last_checkpoint(tmp_path, monkeypatch):
    """A full disk while checkpointing (ENOSPC from the write): a one-line RunDirectoryError, no
    temporary file left, and the run resumes from its last complete checkpoint."""
    import errno

    from safetensors import torch as st

    run = tmp_path / "run"
    _run(run, 2)
    real, calls = st.save_file, []

    def full_disk(tensors, filename, metadata=None):
        calls.append(1)
        if len(calls) == 2:  # the second checkpoint of the resumed run
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr("marginlab.train.checkpoint.save_file", full_disk)
    with pytest.raises(RunDirectoryError) as exc:
        _run(run, 5, resume=True)
    _refused(exc, "No space left on device")
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.safetensors"]
    monkeypatch.undo()
    res = _run(run, 5, resume=True)
    assert [r.epoch for r in res.history] == [1, 2, 3, 4, 5]
