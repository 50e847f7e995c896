"""Kill a run between any two of its writes, resume it, and compare with the uninterrupted run.

Every schedule (constant, loss-based, loss-based momentum, and a constant rate with weight
decay) is stopped after a named write — the metrics line, a snapshot or trajectory file, an
event, the checkpoint — several times in a row, each time resumed in a fresh model; the
finished run must equal the uninterrupted one bit for bit: every metrics field but the times,
the final parameters, the final snapshot and the checkpoint's tensors.

The fast tests stop the run in-process by raising from the write (nothing the loop does after a
write touches a file on the way out, so the directory is left exactly as a SIGKILL would leave
it); the slow ones SIGKILL a subprocess at the same points.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from marginlab import models
from marginlab.train import ConstantLR, LossBasedLR, LossBasedMomentum, WeightDecay, fit
from marginlab.train.rundir import RunDir

TIME_KEYS = {"wall_time", "cpu_time"}
EPOCHS = 8


def _clusters(n: int, d: int, k: int, *, seed: int):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g, dtype=torch.float64)
    centres = 2 * centres / centres.norm(dim=1, keepdim=True)
    y = torch.arange(n) % k
    return centres[y] + torch.randn(n, d, generator=g, dtype=torch.float64), y


DATA = _clusters(30, 4, 3, seed=1)
TEST = _clusters(12, 4, 3, seed=2)

SETTINGS = {
    "constant": lambda: {"schedule": ConstantLR(0.05)},
    # a large α0: the schedule rolls epochs back, so α must survive the kills
    "loss_based": lambda: {"schedule": LossBasedLR(alpha0=20.0)},
    "loss_based_momentum": lambda: {"schedule": LossBasedMomentum(alpha0=2.0)},
    "weight_decay": lambda: {"schedule": ConstantLR(0.05, milestones={5: 0.5}),
                             "weight_decay": WeightDecay(1e-3, milestones={4: 0.5})},
}
# (write, n-th such write in that process): after the epoch-0 checkpoint; between a metrics line
# and its checkpoint; after a snapshot; after the resume event; after a trajectory file; after a
# later checkpoint. Each entry is one process, resumed by the next.
KILLS = [("checkpoint", 1), ("metrics", 2), ("model", 1), ("event", 1), ("model", 2),
         ("checkpoint", 3)]


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the library catches it."""


def _train(run_dir, *, resume: bool, name: str, **kw):
    model = models.mlp(4, [6], 3, seed=2).double()
    result = fit(model, DATA, TEST, epochs=EPOCHS, batch_size=8, seed=3, run_dir=run_dir,
                 resume=resume, snapshots_at=(10 ** -0.2, 10 ** -0.4), trajectory_every=2,
                 progress=False, **SETTINGS[name](), **kw)
    return model, result


def _kill_after(monkeypatch, write: str, n: int, action) -> None:
    """Make the ``n``-th call of the named write run ``action`` once it has written."""
    targets = {"metrics": (RunDir, "append_metrics"), "event": (RunDir, "append_event"),
               "checkpoint": (RunDir, "save_checkpoint"), "model": (models, "save")}
    owner, attr = targets[write]
    real, calls = getattr(owner, attr), []

    def wrapped(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == n:
            action()
        return out

    monkeypatch.setattr(owner, attr, wrapped)


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n")
    records = [json.loads(s) for s in text.splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def _same_run(run: Path, ref: Path, model=None, ref_model=None) -> None:
    assert _metrics(run) == _metrics(ref)
    if model is not None:
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_model.parameters()))
    for rel in ("snapshots/model-3.safetensors", "checkpoints/last.safetensors"):
        mine, theirs = load_file(str(run / rel)), load_file(str(ref / rel))
        assert mine.keys() == theirs.keys(), rel
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), rel
    trajectory = sorted(p.name for p in (run / "trajectory").iterdir())
    assert trajectory == sorted(p.name for p in (ref / "trajectory").iterdir())


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    out = {}
    for name in SETTINGS:
        run = tmp_path_factory.mktemp(name) / "run"
        model, result = _train(run, resume=False, name=name)
        assert len(result.history) == EPOCHS
        if name == "loss_based":
            assert sum(r.retries for r in result.history) > 0
        out[name] = (run, model)
    return out


@pytest.mark.parametrize("name", list(SETTINGS))
def test_killed_after_any_write_then_resumed_is_the_uninterrupted_run(name, references,
                                                                      tmp_path, monkeypatch):
    ref_run, ref_model = references[name]
    run = tmp_path / "run"

    def killed():
        raise _Killed

    done = []
    for k, (write, n) in enumerate(KILLS):
        with monkeypatch.context() as m:
            _kill_after(m, write, n, killed)
            with pytest.raises(_Killed):
                _train(run, resume=k > 0, name=name)
        done.append(len(_metrics(run)))
        RunDir(run).load_checkpoint()  # always readable and verified
    model, result = _train(run, resume=True, name=name)
    # lines on disk after each kill (a resume first drops those past the checkpoint)
    assert done == [0, 2, 2, 1, 4, 6], done
    _same_run(run, ref_run, model, ref_model)
    assert [r.epoch for r in result.history] == list(range(1, EPOCHS + 1))
    events = [json.loads(s) for s in (run / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "resume" for e in events) == len(KILLS)


@pytest.mark.parametrize("name", ["loss_based", "loss_based_momentum"])
def test_kill_between_sparse_checkpoints_rewinds_to_the_checkpoint(name, tmp_path, monkeypatch):
    """Checkpoints every 3 epochs: a kill after the metrics of epoch 5 leaves lines 4-5 past
    the checkpoint of epoch 3; resuming drops and recomputes them, bit for bit."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref_model, _ = _train(ref, resume=False, name=name, checkpoint_every=3)

    def killed():
        raise _Killed

    with monkeypatch.context() as m:
        _kill_after(m, "metrics", 5, killed)
        with pytest.raises(_Killed):
            _train(run, resume=False, name=name, checkpoint_every=3)
    assert len(_metrics(run)) == 5
    model, _ = _train(run, resume=True, name=name, checkpoint_every=3)
    _same_run(run, ref, model, ref_model)


# --- SIGKILL in a subprocess -------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    import tests.train.test_kill_resume as t
    from _pytest.monkeypatch import MonkeyPatch

    write, n, resume, name = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    if write != "none":
        t._kill_after(MonkeyPatch(), write, n, lambda: os.kill(os.getpid(), signal.SIGKILL))
    t._train(sys.argv[5], resume=resume, name=name)
""")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SETTINGS))
def test_sigkill_after_any_write_then_resume(name, references, tmp_path):
    ref_run, _ = references[name]
    run = tmp_path / "run"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(Path(__file__).parents[2])))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MARGINLAB_TEST_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    for k, (write, n) in enumerate([*KILLS, ("none", 0)]):
        proc = subprocess.run([sys.executable, str(script), write, str(n), str(int(k > 0)), name,
                               str(run)], env=env, capture_output=True, text=True, timeout=300)
        if write == "none":
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode == -signal.SIGKILL, proc.stderr
    _same_run(run, ref_run)
