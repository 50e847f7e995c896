"""A Lightning model trained for a few epochs on CPU with MarginCallback, stopped and resumed
from Lightning's own checkpoint: its run directory holds margins that match an independent
float64 computation, `marginlab plot`, `analyze` and `attack` read it, and the TensorBoard
scalars read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import math

import pytest
import torch

import marginlab as ml
from marginlab.cli import main
from marginlab.train.rundir import RunDir

pl = pytest.importorskip("lightning.pytorch")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

from marginlab.integrations.lightning import MarginCallback  # noqa: E402
from tests.test_tracker import _reference  # noqa: E402


class Classifier(pl.LightningModule):
    def __init__(self, lr: float):
        super().__init__()
        self.net = ml.models.build("mlp", in_dim=64, widths=[32], out_dim=10, seed=3)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def test_lightning_fit_writes_a_run_directory_and_tensorboard_scalars(tmp_path, capsys):
    split = ml.data.load("digits", n_train=100, n_test=50)
    X, y = split.train
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=10,
                                         shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    run = tmp_path / "lit"

    def fit(max_epochs: int, ckpt_path=None) -> Classifier:
        callback = MarginCallback(run, X, y, test=split.test, module="net",
                                  snapshots_at=(-0.3,), trajectory_every=1, tensorboard=True,
                                  resume=True, progress=False)
        lit = Classifier(lr=0.5)
        trainer = pl.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False,
                             callbacks=[callback], enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=str(tmp_path))
        trainer.fit(lit, loader, ckpt_path=ckpt_path)
        return lit

    fit(8)  # then resumed from Lightning's own checkpoint, in a new process as it were
    assert [r["epoch"] for r in RunDir(run).metrics()] == list(range(1, 9))
    (ckpt,) = (tmp_path / "checkpoints").glob("*.ckpt")
    lit = fit(12, ckpt_path=str(ckpt))

    records = RunDir(run).metrics()
    assert [r["epoch"] for r in records] == list(range(1, 13))
    assert all(r["steps"] == 10 and r["lr"] == 0.5 for r in records)
    gamma, gamma_multi, log10_mean = _reference(lit.net, X, y)
    assert records[-1]["normalized_margin"] == pytest.approx(gamma, rel=1e-9)
    assert records[-1]["normalized_margin_multi"] == pytest.approx(gamma_multi, rel=1e-9)
    assert records[-1]["log10_loss_mean"] == pytest.approx(log10_mean, rel=1e-9)
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "mlp" and config["epochs"] == 12
    assert (run / "report.html").exists()
    assert (run / "snapshots" / "model-2.safetensors").exists()  # the final model

    # TensorBoard's reader sees one scalar per epoch, equal to the metrics (float32 in events)
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    assert {"margin/normalized", "loss/log10_train", "accuracy/test"} <= set(
        acc.Tags()["scalars"])
    events = acc.Scalars("margin/normalized")
    assert [e.step for e in events] == list(range(1, 13))
    for e, r in zip(events, records):
        assert e.value == pytest.approx(r["normalized_margin"], rel=1e-6)
    loss_events = acc.Scalars("loss/log10_train")
    assert [e.value for e in loss_events] == pytest.approx(
        [r["log10_loss_mean"] for r in records], rel=1e-6)

    capsys.readouterr()
    assert main(["plot", str(run)]) == 0
    assert main(["analyze", str(run), "--no-svm", "--kkt-every", "11", "--quiet"]) == 0
    analysis = json.loads((run / "analysis.json").read_text())
    assert analysis["kkt"][-1]["epoch"] == 12 and math.isfinite(
        analysis["kkt"][-1]["eps_relative"])
    assert main(["attack", str(run), "--n", "10", "--steps", "5", "--certificates", "global",
                 "--snapshots", "model-2", "--split", "test", "--quiet"]) == 0
    assert "test" in json.loads((run / "robustness.json").read_text())["splits"]
