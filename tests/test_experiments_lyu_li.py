"""End-to-end runs of the Lyu & Li experiments at tiny sizes (the registry, the runner, the
report), and the refusal to overwrite."""

import json
import pickle

import numpy as np
import pytest

from marginlab import experiments
from marginlab.cli import main
from marginlab.errors import MarginlabError


def write_cifar(root, n_per_batch=4, n_test=4, seed=0):
    """CIFAR-10 python batches in the distributed layout (bytes keys, uint8 rows)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_lyu_li_cifar_one_epoch_end_to_end(tmp_path):
    write_cifar(tmp_path / "data")
    exp = experiments.get("lyu-li-cifar")
    out = tmp_path / "out"
    req = exp.request("cpu", out, {"n_train": 20, "n_test": 4, "epochs": 1,
                                   "seconds_per_run": None, "workers": 2, "width": 0.0625},
                      root=tmp_path / "data")
    page = exp.run(req)
    assert page.exists() and (out / "report.md").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["final"]) == {"constant-bias-first", "loss_based-bias-first",
                                     "constant-bias-none", "loss_based-bias-none"}
    for name, last in summary["final"].items():
        assert last["epoch"] == 1, name
        assert np.isfinite(last["log10_loss_mean"])
        assert (out / "runs" / name / "snapshots" / "model-5.safetensors").exists()
    assert (out / "plots" / "training.png").stat().st_size > 10_000
    # The same directory is never overwritten without --overwrite.
    with pytest.raises(MarginlabError, match="--resume"):
        exp.run(req)


def test_lyu_li_mnist_cli_tiny(tmp_path, capsys):
    out = tmp_path / "mnist"
    code = main(["reproduce", "lyu-li-mnist", "--out", str(out), "--set", "n_train=20",
                 "--set", "n_test=20", "--set", "epochs=3", "--set", "seconds_per_run=null",
                 "--set", "widths=[8]"])
    assert code == 0
    assert "report:" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert {r["bias"] for r in summary["ratios"]} == {"first", "none"}
    md = (out / "report.md").read_text()
    assert "Table 1" in md and "CPU scale" in md


def test_reproduce_errors_are_one_line(tmp_path, capsys):
    assert main(["reproduce", "no-such-experiment"]) == 2
    assert main(["reproduce", "lyu-li-mnist", "--set", "bogus=1", "--out", str(tmp_path)]) == 2
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    assert main(["reproduce", "lyu-li-mnist", "--out", str(tmp_path / "foreign"),
                 "--overwrite"]) == 2
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "mine"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("marginlab reproduce: error:") for line in err)
