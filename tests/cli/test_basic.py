"""`marginlab homogeneity` and `marginlab margin`, in-process through marginlab.cli.main, plus
one run of the installed console script. Errors a user can cause exit 2 with one line on
stderr and no traceback."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marginlab import data, models
from marginlab.cli import main

STATS_FIELDS = {"q_min", "rho", "norm_product", "order", "normalized_margin",
                "normalized_margin_multi", "smoothed_margin", "smoothed_margin_multi",
                "log_loss_sum", "log10_loss_mean", "train_acc", "n"}


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_user_error(rc, out, err, pattern):
    assert rc == 2
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert pattern in lines[0], lines[0]


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory):
    """A saved mlp(64, [32], 10) (digits images are 1×8×8; the mlp flattens)."""
    model = models.mlp(64, [32], 10, seed=0)
    return models.save(model, tmp_path_factory.mktemp("ckpt") / "mlp.safetensors"), model


# ---------------------------------------------------------------------------------------------
# homogeneity
# ---------------------------------------------------------------------------------------------


def test_homogeneity_mnist_cnn_without_bias_is_order_4(capsys):
    rc, out, err = _run(capsys, "homogeneity", "--model", "mnist_cnn", "--bias", "none")
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("mnist_cnn: homogeneous of order 4 (max residual ")
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == ["conv1", "conv2", "fc1", "fc2"]
    assert all(": order 1 (residual" in ln for ln in lines[1:])


def test_homogeneity_mnist_cnn_with_all_biases_is_not_homogeneous(capsys):
    rc, out, _ = _run(capsys, "homogeneity", "--model", "mnist_cnn", "--bias", "all")
    assert rc == 0
    assert out.startswith("mnist_cnn: not homogeneous (worst residual ")
    assert "in no group: conv2.bias, fc1.bias, fc2.bias" in out


def test_homogeneity_json_and_mlp_widths(capsys):
    rc, out, _ = _run(capsys, "homogeneity", "--model", "mlp", "--in-dim", "12",
                      "--widths", "7,5,3", "--bias", "first", "--json")
    assert rc == 0
    report = json.loads(out)
    assert report["order"] == 4.0 and report["is_homogeneous"]
    assert report["is_multi_homogeneous"]
    assert report["layer_orders"] == {"fc1": 1.0, "fc2": 1.0, "fc3": 1.0, "fc4": 1.0}
    rc, out, _ = _run(capsys, "homogeneity", "--model", "two_layer", "--in-dim", "6", "--json")
    assert rc == 0 and json.loads(out)["order"] == 2.0


def test_homogeneity_of_a_checkpoint(capsys, digits_checkpoint):
    path, _ = digits_checkpoint
    rc, out, _ = _run(capsys, "homogeneity", "--checkpoint", str(path), "--json")
    assert rc == 0 and json.loads(out)["order"] == 2.0


# ---------------------------------------------------------------------------------------------
# margin
# ---------------------------------------------------------------------------------------------


def test_margin_json_on_digits(capsys, digits_checkpoint):
    path, model = digits_checkpoint
    rc, out, err = _run(capsys, "margin", str(path), "--data", "digits", "--json")
    assert rc == 0 and err == ""
    stats = json.loads(out)
    assert set(stats) == STATS_FIELDS
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in stats.values())
    # independent of the margins module: the margins from the raw outputs, by numpy
    X, y = data.load("digits").train
    with torch.no_grad():
        z = model(X).double().numpy()
    yy = y.numpy()
    others = z.copy()
    others[np.arange(len(yy)), yy] = -np.inf
    q = z[np.arange(len(yy)), yy] - others.max(1)
    rho = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))
    assert stats["n"] == 1500 and stats["order"] == 2.0
    assert stats["q_min"] == pytest.approx(q.min(), rel=1e-6, abs=1e-6)
    assert stats["train_acc"] == pytest.approx(np.mean(q > 0), abs=1e-12)
    assert stats["rho"] == pytest.approx(rho, rel=1e-12)
    assert stats["normalized_margin"] == pytest.approx(q.min() / rho**2, rel=1e-6, abs=1e-9)
    assert stats["smoothed_margin"] <= stats["normalized_margin"] + 1e-12


def test_margin_table_and_test_split(capsys, digits_checkpoint):
    path, _ = digits_checkpoint
    rc, out, _ = _run(capsys, "margin", str(path), "--data", "digits", "--split", "test",
                      "--n", "100", "--loss", "exponential")
    assert rc == 0
    table = dict(line.split(None, 1) for line in out.splitlines())
    assert set(table) == STATS_FIELDS
    assert table["n"].strip() == "100" and float(table["order"]) == 2.0


# ---------------------------------------------------------------------------------------------
# errors a user can cause
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.safetensors").write_bytes(b"\x00" * 40)
    models.save(models.mlp(64, [8], 10, bias="all"), d / "biased.safetensors")
    models.save(models.mnist_cnn(seed=0), d / "cnn.safetensors")
    models.save(torch.nn.Sequential(torch.nn.Linear(64, 10)), d / "user.safetensors")
    return d


USER_ERRORS = {
    "missing checkpoint": (["margin", "{d}/nope.safetensors", "--data", "digits"],
                           "no checkpoint at"),
    "corrupt checkpoint": (["margin", "{d}/corrupt.safetensors", "--data", "digits"],
                           "not a readable safetensors checkpoint"),
    "checkpoint outside the zoo": (["margin", "{d}/user.safetensors", "--data", "digits"],
                                   "outside the zoo"),
    "unknown data set": (["margin", "{ckpt}", "--data", "imagenet"], "unknown data set"),
    "model does not fit the data": (["margin", "{d}/cnn.safetensors", "--data", "digits"],
                                    "cannot be applied to inputs of shape (1, 8, 8)"),
    "non-homogeneous model": (["margin", "{d}/biased.safetensors", "--data", "digits"],
                              "not homogeneous"),
    "unknown loss": (["margin", "{ckpt}", "--data", "digits", "--loss", "hinge"],
                     "unknown loss"),
    "bad --n": (["margin", "{ckpt}", "--data", "digits", "--n", "0"],
                "--n: must be at least 1"),
    "bad --widths": (["homogeneity", "--model", "mlp", "--widths", "10,x"],
                     "--widths: must be an integer, got 'x'"),
    "negative --widths": (["homogeneity", "--model", "mlp", "--widths=-3"],
                          "--widths: must be at least 1"),
    "bad two_layer --widths": (["homogeneity", "--model", "two_layer", "--widths", "x"],
                               "--widths: must be an integer"),
    "unknown model": (["homogeneity", "--model", "resnet"], "unknown model 'resnet'"),
    "missing checkpoint (homogeneity)": (["homogeneity", "--checkpoint", "{d}/nope.st"],
                                         "no checkpoint at"),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_exit_2_with_one_line(capsys, case, bad_files, digits_checkpoint):
    argv, pattern = USER_ERRORS[case]
    argv = [a.format(d=bad_files, ckpt=digits_checkpoint[0]) for a in argv]
    rc, out, err = _run(capsys, *argv)
    _assert_user_error(rc, out, err, pattern)
    assert err.startswith(f"marginlab {argv[0]}: error: ")


@pytest.mark.parametrize("argv", [["homogeneity", "--model", "mlp", "--bias", "some"],
                                  ["margin", "x.safetensors"],
                                  ["homogeneity"],
                                  ["frobnicate"]])
def test_usage_errors_exit_2_with_one_line(capsys, argv):
    rc = main(argv)
    _, err = capsys.readouterr()
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "error:" in err and "Traceback" not in err


def test_installed_console_script(digits_checkpoint):
    """The `marginlab` entry point of the installed package: JSON on success, exit 2 on error."""
    exe = Path(sys.executable).with_name("marginlab")
    if not exe.exists():
        pytest.skip(f"no console script next to {sys.executable}")
    path, _ = digits_checkpoint
    env = {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(exe), "margin", str(path), "--data", "digits", "--json"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == STATS_FIELDS
    bad = subprocess.run([str(exe), "margin", str(path) + ".missing", "--data", "digits"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"marginlab margin: error: no checkpoint at {path}.missing"]
