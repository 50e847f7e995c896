"""Bad inputs, table-driven: every command and public function refuses a user mistake or a
hostile file with one line (CLI: exit code 2 and one line on stderr, no traceback; API: the
documented error type with a one-line message) and leaves every file as it was.

Each case gets a fresh directory holding a copy of a small finished run (and, where the case
needs them, the bad files it is about); the tree is fingerprinted (paths, sizes, mtimes and
SHA-256 of every file) before and after, and must not change. CLI cases run in-process through
``marginlab.cli.main``; a few run the installed module in a subprocess.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import save_file

from marginlab import data, experiments, models, storage, validate
from marginlab.analysis.run import analyze_run
from marginlab.cli import main
from marginlab.data import files
from marginlab.data.split import balanced_first
from marginlab.errors import MarginlabError, RunDirectoryError

BASE_TRAIN = ["train", "--model", "mlp", "--widths", "8", "--data", "digits", "--n-train", "50",
              "--n-test", "20", "--batch-size", "full", "--threads", "1"]
LONG_NAME = "n" * 300


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------

@dataclass
class Case:
    """One bad input. ``argv`` (CLI) or ``call`` (API); ``prepare(ws)`` writes the files it is
    about into the case's directory ``ws`` (which holds ``run/``, a finished run, and
    ``model.safetensors``, a zoo checkpoint); strings in argv are formatted with ``ws``."""

    id: str
    category: str
    fragment: str
    argv: list[str] | None = None
    call: Callable[[Path], object] | None = None
    error: type[Exception] = MarginlabError
    prepare: Callable[[Path], None] | None = None
    patch: Callable[[pytest.MonkeyPatch, Path], None] | None = None


CASES: list[Case] = []


def cli(category: str, id: str, argv: list[str], fragment: str, **kw) -> None:
    CASES.append(Case(id=id, category=category, fragment=fragment, argv=argv, **kw))


def api(category: str, id: str, call: Callable[[Path], object], fragment: str,
        error: type[Exception] = MarginlabError, **kw) -> None:
    CASES.append(Case(id=id, category=category, fragment=fragment, call=call, error=error, **kw))


# --- file makers ---------------------------------------------------------------------------------

def write(path: Path, content: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)


def metrics_lines(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def set_metrics(text: bytes | str) -> Callable[[Path], None]:
    return lambda ws: write(ws / "run" / "metrics.jsonl", text)


def set_config(text: bytes | str | None, *, as_dir: bool = False) -> Callable[[Path], None]:
    def prepare(ws: Path) -> None:
        path = ws / "run" / "config.json"
        if as_dir:
            path.unlink()
            path.mkdir()
            (path / "keep").write_text("x")
        else:
            write(path, text)
    return prepare


def edit_spec(**fields) -> Callable[[Path], None]:
    def prepare(ws: Path) -> None:
        path = ws / "run" / "config.json"
        config = json.loads(path.read_text())
        config["spec"].update(fields)
        path.write_text(json.dumps(config))
    return prepare


def idx_bytes(magic: int, dims: tuple[int, ...], payload: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + \
        bytes(payload)


def cifar_pickle(batch: object) -> bytes:
    return pickle.dumps(batch, protocol=2)


ROWS = np.zeros((3, 3072), dtype=np.uint8)


def deep_pickle(depth: int) -> bytes:
    """A dict whose "labels" entry is a list nested ``depth`` levels deep (built with opcodes,
    not recursion): EMPTY_LIST × depth, APPEND × (depth − 1)."""
    key = b"labels"
    return (b"\x80\x02}" + b"X" + struct.pack("<I", len(key)) + key
            + b"]" * depth + b"a" * (depth - 1) + b"s.")


def checkpoint(path: Path, meta: dict | None, tensors: dict | None = None) -> None:
    """A safetensors file with the given metadata (values JSON-encoded unless strings)."""
    if tensors is None:
        tensors = models.mlp(64, [4], 10).state_dict()
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    if meta is not None:
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


MLP_SPEC = {"name": "mlp", "kwargs": {"in_dim": 64, "widths": [4], "out_dim": 10,
                                      "bias": "none", "activation": "relu", "seed": 0}}


def spec_with(**kwargs) -> dict:
    return {"format": "marginlab-model/1",
            "spec": {"name": "mlp", "kwargs": {**MLP_SPEC["kwargs"], **kwargs}}}


def bad_checkpoint(meta: dict | None, tensors: dict | None = None) -> Callable[[Path], None]:
    return lambda ws: checkpoint(ws / "bad.safetensors", meta, tensors)


# --- environment patches (the machine has no read-only or full file system to offer) ------- -----

def read_only(mp: pytest.MonkeyPatch, ws: Path) -> None:
    real = os.access
    mp.setattr(validate.os, "access",
               lambda p, mode, *a, **k: False if Path(p) == ws else real(p, mode, *a, **k))
    mp.setattr(validate, "_read_only", lambda p: Path(p) == ws)


def no_permission(mp: pytest.MonkeyPatch, ws: Path) -> None:
    real = os.access
    mp.setattr(validate.os, "access",
               lambda p, mode, *a, **k: False if Path(p) == ws else real(p, mode, *a, **k))


def disk_full(mp: pytest.MonkeyPatch, ws: Path) -> None:
    real = os.statvfs

    def statvfs(p):
        st = real(p)
        if Path(p) != ws:
            return st
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, 0, 0, st.f_files,
                                  st.f_ffree, st.f_favail, st.f_flag, st.f_namemax))
    mp.setattr(validate.os, "statvfs", statvfs)


def enospc_on_write(mp: pytest.MonkeyPatch, ws: Path) -> None:
    """The disk fills while the report is written: after the training, before any file is
    replaced; the error must still be one line."""
    def fail(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    import marginlab.report
    mp.setattr(marginlab.report, "write_run_report", fail)


# --- train: options ------------------------------------------------------------------------------

T = [*BASE_TRAIN, "--epochs", "2"]
OUT = ["--out", "{ws}/new"]
cli("train options", "device cuda without CUDA", [*T, "--device", "cuda", *OUT],
    "CUDA is not available")
cli("train options", "device cuda:3", [*T, "--device", "cuda:3", *OUT], "CUDA is not available")
cli("train options", "device banana", [*T, "--device", "banana", *OUT],
    "--device: unknown torch device 'banana'; expected cpu, cuda, cuda:N or mps")
cli("train options", "device empty", [*T, "--device", "", *OUT], "unknown torch device ''")
cli("train options", "device meta", [*T, "--device", "meta", *OUT],
    "unknown torch device 'meta'")
cli("train options", "threads -1", [*T, "--threads", "-1", *OUT], "--threads: must be at least 1")
cli("train options", "threads 0", [*T, "--threads", "0", *OUT], "--threads: must be at least 1")
cli("train options", "threads x", [*T, "--threads", "x", *OUT], "must be an integer, got 'x'")
cli("train options", "n-train beyond the data", [*T, "--n-train", "999999", *OUT],
    "n_train=999999 exceeds the 1500 samples of digits' training set")
cli("train options", "n-train 0", [*T, "--n-train", "0", *OUT], "--n-train must be at least 1")
cli("train options", "n-train 3.5", [*T, "--n-train", "3.5", *OUT], "--n-train")
cli("train options", "n-test beyond the data", [*T, "--n-test", "100000", *OUT],
    "n_test=100000 exceeds the 297 samples")
cli("train options", "n-test negative", [*T, "--n-test=-5", *OUT], "--n-test must be at least 1")
cli("train options", "widths empty", [*T, "--widths", "", *OUT],
    "--widths must be comma-separated integers, got ''")
cli("train options", "widths with a hole", [*T, "--widths", "8,,8", *OUT],
    "--widths must be comma-separated integers")
cli("train options", "widths zero", [*T, "--widths", "0", *OUT], "--widths must be at least 1")
cli("train options", "widths text", [*T, "--widths", "abc", *OUT],
    "--widths must be an integer, got 'abc'")
cli("train options", "two_layer with two widths",
    [*T, "--model", "two_layer", "--widths", "4,4", *OUT], "must hold exactly 1 width")
cli("train options", "trajectory-every 0", [*T, "--trajectory-every", "0", *OUT],
    "--trajectory-every must be at least 1")
cli("train options", "checkpoint-every 0", [*T, "--checkpoint-every", "0", *OUT],
    "--checkpoint-every must be at least 1")
cli("train options", "stop-at nan", [*T, "--stop-at", "nan", *OUT],
    "--stop-at must be a finite number")
cli("train options", "stop-at -inf", [*T, "--stop-at=-inf", *OUT],
    "--stop-at must be a finite number")
cli("train options", "epochs 0", [*BASE_TRAIN, "--epochs", "0", *OUT],
    "--epochs must be at least 1, got 0")
cli("train options", "epochs -1", [*BASE_TRAIN, "--epochs", "-1", *OUT], "--epochs must be")
cli("train options", "epochs text", [*BASE_TRAIN, "--epochs", "three", *OUT], "--epochs")
cli("train options", "max-time -1", [*T, "--max-time", "-1", *OUT],
    "--max-time must be positive, got -1")
cli("train options", "max-time 0", [*T, "--max-time", "0", *OUT], "--max-time must be positive")
cli("train options", "max-time nan", [*T, "--max-time", "nan", *OUT], "--max-time must be")
cli("train options", "weight-decay -1", [*T, "--weight-decay", "-1", *OUT],
    "--weight-decay must be at least 0")
cli("train options", "weight-decay-power 0", [*T, "--weight-decay-power", "0", *OUT],
    "--weight-decay-power must be positive")
cli("train options", "seed -1", [*T, "--seed", "-1", *OUT], "--seed must be at least 0")
cli("train options", "batch-size 0", [*T, "--batch-size", "0", *OUT],
    "--batch-size must be at least 1")
cli("train options", "batch-size half", [*T, "--batch-size", "half", *OUT],
    "--batch-size must be an integer or 'full'")
cli("train options", "width 0 for mnist_cnn",
    [*T, "--model", "mnist_cnn", "--data", "mnist5k", "--width", "0", *OUT],
    "--width must be positive")
cli("train options", "unknown model", [*T, "--model", "resnet", *OUT], "unknown model 'resnet'")
cli("train options", "unknown data set", [*T, "--data", "svhn", *OUT], "unknown data set 'svhn'")
cli("train options", "unknown loss", [*T, "--loss", "hinge", *OUT], "unknown loss 'hinge'")
cli("train options", "unknown schedule", [*T, "--schedule", "cosine", *OUT],
    "unknown schedule 'cosine'")
cli("train options", "bias choice", [*T, "--bias", "some", *OUT], "--bias: invalid choice")
cli("train options", "mnist without root", [*T, "--data", "mnist", *OUT],
    "give the directory as root")
cli("train options", "mnist root missing", [*T, "--data", "mnist", "--root", "{ws}/nope", *OUT],
    "is not a directory")
cli("train options", "momentum without its schedule", [*T, "--momentum", "0.5", *OUT],
    "--momentum applies only to --schedule loss_based_momentum")

cli("train options", "alpha0 nan", [*T, "--alpha0", "nan", *OUT], "alpha0 must be finite")
cli("train options", "up nan", [*T, "--up", "nan", *OUT], "up must be finite and > 1")
cli("train options", "down inf", [*T, "--down", "inf", *OUT], "down must be finite and > 1")
cli("train options", "lr inf", [*T, "--schedule", "constant", "--lr", "inf", *OUT],
    "learning rate must be a positive number")
cli("train options", "momentum nan",
    [*T, "--schedule", "loss_based_momentum", "--momentum", "nan", *OUT],
    "momentum must be in [0, 1)")
cli("train options", "active-gap nan",
    [*T, "--schedule", "loss_based_momentum", "--active-gap", "nan", *OUT],
    "active_gap must be a positive number")
cli("train options", "root a file", [*T, "--data", "mnist", "--root", "{ws}/run/config.json",
                                     *OUT], "is not a directory")
cli("train options", "progress-every 0", [*T, "--progress-every", "0", *OUT],
    "--progress-every: must be positive")

# --- train: output paths -------------------------------------------------------------------------

cli("output paths", "train out under a regular file", [*T, "--out", "{ws}/run/config.json/x"],
    "is a file, not a directory")
cli("output paths", "train out is a file", [*T, "--out", "{ws}/run/metrics.jsonl"],
    "exists and is not a directory")
cli("output paths", "train out name too long", [*T, "--out", "{ws}/" + LONG_NAME],
    "is longer than the file system allows")
cli("output paths", "train out path too long", [*T, "--out", "{ws}/" + "/".join(["d" * 200] * 25)],
    "the path is longer than the file system allows")
cli("output paths", "train out read-only", [*T, "--out", "{ws}/new"],
    "read-only file system", patch=read_only)
cli("output paths", "train out no permission", [*T, "--out", "{ws}/new"],
    "permission denied", patch=no_permission)
cli("output paths", "train out disk full", [*T, "--out", "{ws}/new"], "no space left",
    patch=disk_full)
cli("output paths", "train out with NUL", [*T, "--out", "{ws}/a\x00b"], "NUL byte")
cli("output paths", "train another run in out", [*T, "--seed", "1", "--out", "{ws}/run"],
    "holds a different run")
cli("output paths", "sweep out under a file",
    ["sweep", "wei-fig2", "--workers", "0", "--out", "{ws}/run/config.json/s"],
    "is a file, not a directory")
cli("output paths", "reproduce out under a file",
    ["reproduce", "wei-fig2", "--out", "{ws}/run/config.json/r"], "is a file, not a directory")
cli("output paths", "reproduce out name too long",
    ["reproduce", "wei-fig2", "--out", "{ws}/" + LONG_NAME], "longer than the file system")
cli("output paths", "plot out under a regular file",
    ["plot", "{ws}/run", "--out", "{ws}/run/config.json/p"], "is a file, not a directory")
cli("output paths", "plot out name too long", ["plot", "{ws}/run", "--out", "{ws}/" + LONG_NAME],
    "longer than the file system allows")
cli("output paths", "plot out is a directory",
    ["plot", "{ws}/run", "--out", "{ws}/dir"], "is a directory, not a file",
    prepare=lambda ws: (ws / "dir_training.png").mkdir())
cli("output paths", "plot out read-only", ["plot", "{ws}/run", "--out", "{ws}/p"],
    "read-only file system", patch=read_only)
cli("output paths", "plot out disk full", ["plot", "{ws}/run", "--out", "{ws}/p"],
    "no space left", patch=disk_full)

# --- train --resume: the saved run is input too -------------------------------------------------

R = [*BASE_TRAIN, "--resume", "--out", "{ws}/run"]
cli("resume config", "config.json is a list", R, "must hold a JSON object, got a JSON list",
    prepare=set_config("[1, 2]"))
cli("resume config", "config.json is a directory", R, "is a directory, expected a file",
    prepare=set_config(None, as_dir=True))
cli("resume config", "config.json not JSON", R, "is not valid JSON", prepare=set_config("{oops"))
cli("resume config", "config.json not UTF-8", R, "is not UTF-8 text",
    prepare=set_config(b'{"a": "\xff\xfe"}'))
cli("resume config", "config.json too deep", R, "is not valid JSON",
    prepare=set_config("[" * 100000 + "]" * 100000))
cli("resume config", "spec widths 'abc'", R, "--widths (mlp) must be a list of positive "
    "integers, got 'abc'", prepare=edit_spec(widths="abc"))
cli("resume config", "spec widths '32,32'", R, "got '32,32'", prepare=edit_spec(widths="32,32"))
cli("resume config", "spec n_train '5'", R, "--n-train must be an integer, got '5'",
    prepare=edit_spec(n_train="5"))
cli("resume config", "spec device banana", R, "unknown torch device 'banana'",
    prepare=edit_spec(device="banana"))
cli("resume config", "spec epochs 0", R, "--epochs must be at least 1",
    prepare=edit_spec(epochs=0))
cli("resume config", "spec is a list", R, "'spec' must be an object",
    prepare=lambda ws: write(ws / "run" / "config.json", json.dumps({"spec": [1]})))
cli("resume config", "spec with an unknown field", R, "unknown training settings: colour",
    prepare=edit_spec(colour="red"))

# --- plot: run directories -----------------------------------------------------------------------

P = ["plot", "{ws}/run", "--out", "{ws}/p"]
cli("run directories", "plot empty metrics", P, "holds no epochs: nothing to plot",
    prepare=set_metrics(""))
cli("run directories", "plot metrics not UTF-8", P, "is not UTF-8 text",
    prepare=set_metrics(b'{"epoch": 1, "x": "\xff"}\n'))
cli("run directories", "plot metrics line a JSON list", P, "line 1 is a JSON list",
    prepare=set_metrics("[1, 2, 3]\n"))
cli("run directories", "plot metrics record without epoch", P, "record 2 has no 'epoch'",
    prepare=set_metrics(metrics_lines({"epoch": 1, "log10_loss_mean": 0.1},
                                      {"log10_loss_mean": 0.0})))
cli("run directories", "plot metrics string epoch", P, "epoch '1', not an integer",
    prepare=set_metrics(metrics_lines({"epoch": "1"})))
cli("run directories", "plot metrics epochs twice", P, "epoch 1 after epoch 2",
    prepare=set_metrics(metrics_lines({"epoch": 1}, {"epoch": 2}, {"epoch": 1}, {"epoch": 2})))
cli("run directories", "plot metrics corrupt inner line", P, "line 1 is not valid JSON",
    prepare=set_metrics('{"epoch": 1,\n{"epoch": 2}\n'))
cli("run directories", "plot metrics without losses", P, "no log10_loss_mean values",
    prepare=set_metrics(metrics_lines({"epoch": 1}, {"epoch": 2})))
cli("run directories", "plot no metrics", P, "has no metrics.jsonl",
    prepare=lambda ws: (ws / "run" / "metrics.jsonl").unlink())
cli("run directories", "plot config a list", P, "must hold a JSON object",
    prepare=set_config("[]"))
cli("run directories", "plot not a run directory", ["plot", "{ws}/dir", "--out", "{ws}/p"],
    "missing file", prepare=lambda ws: (ws / "dir").mkdir())
cli("run directories", "plot missing directory", ["plot", "{ws}/nope", "--out", "{ws}/p"],
    "no run directory at")

# --- analyze -------------------------------------------------------------------------------------

A = ["analyze", "{ws}/run", "--no-svm"]
cli("analyze", "memory-gb -1", [*A, "--memory-gb", "-1"], "--memory-gb: must be positive")
cli("analyze", "memory-gb 0", [*A, "--memory-gb", "0"], "--memory-gb: must be positive")
cli("analyze", "memory-gb nan", [*A, "--memory-gb", "nan"], "must be a finite number")
cli("analyze", "kkt-every 0", [*A, "--kkt-every", "0"], "--kkt-every must be at least 1")
cli("analyze", "n 0", [*A, "--n", "0"], "--n must be at least 1")
cli("analyze", "n beyond the run's data", [*A, "--n", "5000"],
    "--n 5000 exceeds the run's 50 training samples")
cli("analyze", "tau -1", [*A, "--tau", "-1"], "--tau must be at least 0")
cli("analyze", "rel-tol nan", [*A, "--rel-tol", "nan"], "--rel-tol must be a finite number")
cli("analyze", "metrics not UTF-8", A, "is not UTF-8 text", prepare=set_metrics(b"\xff\xfe\n"))
cli("analyze", "metrics line a list", A, "line 2 is a JSON list",
    prepare=set_metrics(metrics_lines({"epoch": 1}, "[]")))
cli("analyze", "metrics record without epoch", A, "record 1 has no 'epoch'",
    prepare=set_metrics(metrics_lines({"log10_loss_mean": -1.0})))
cli("analyze", "config a list", A, "must hold a JSON object", prepare=set_config("[]"))
cli("analyze", "config a directory", A, "has no config.json",
    prepare=set_config(None, as_dir=True))
cli("analyze", "empty metrics", A, "holds no epochs", prepare=set_metrics(""))

# --- homogeneity, margin: models and checkpoints -------------------------------------------------

H = ["homogeneity"]
cli("models", "two_layer with two widths", [*H, "--model", "two_layer", "--widths", "4,4"],
    "--widths (two_layer) must hold exactly 1 width, got 2: 4,4")
cli("models", "mlp empty widths", [*H, "--model", "mlp", "--widths", ""],
    "--widths: must be comma-separated integers")
cli("models", "mlp zero width", [*H, "--model", "mlp", "--widths", "4,0"],
    "--widths: must be at least 1, got 0")
cli("models", "in-dim 0", [*H, "--model", "mlp", "--in-dim", "0"], "--in-dim: must be at least 1")
cli("models", "seed -1", [*H, "--model", "mlp", "--seed=-1"], "--seed: must be at least 0")
cli("models", "unknown model", [*H, "--model", "resnet"], "unknown model 'resnet'")
cli("models", "widths for a CNN", [*H, "--model", "mnist_cnn", "--widths", "4"],
    "--widths applies to mlp and two_layer")
cli("models", "wrn16 with biases", [*H, "--model", "wrn16", "--bias", "all"],
    "wrn16 is built without biases")
C = [*H, "--checkpoint", "{ws}/bad.safetensors"]
cli("models", "snapshot widths '32,32'", C, "widths must be a list of positive integers, got "
    "'32,32'", prepare=bad_checkpoint(spec_with(widths="32,32")))
cli("models", "snapshot in_dim -1", C, "in_dim must be at least 1",
    prepare=bad_checkpoint(spec_with(in_dim=-1)))
cli("models", "snapshot in_dim as text", C, "in_dim must be an integer, got '64'",
    prepare=bad_checkpoint(spec_with(in_dim="64")))
cli("models", "snapshot unknown argument", C, "bad arguments for model 'mlp'",
    prepare=bad_checkpoint(spec_with(depth=3)))
cli("models", "snapshot unknown model", C, "unknown model 'resnet'",
    prepare=bad_checkpoint({"spec": {"name": "resnet", "kwargs": {}}}))
cli("models", "snapshot spec not JSON", C, "metadata field 'spec' is not valid JSON",
    prepare=bad_checkpoint({"spec": "{oops"}))
cli("models", "snapshot spec a list", C, "the model spec in its metadata is malformed",
    prepare=bad_checkpoint({"spec": [1, 2]}))
cli("models", "snapshot spec nested too deep", C, "is not valid JSON",
    prepare=bad_checkpoint({"spec": "[" * 100000 + "]" * 100000}))
cli("models", "snapshot without metadata", C, "outside the zoo", prepare=bad_checkpoint(None))
cli("models", "snapshot of a foreign format", C, "is not a marginlab model",
    prepare=bad_checkpoint({**spec_with(), "format": "pt"}))
cli("models", "snapshot integer weights", C, "holds torch.int64 values",
    prepare=bad_checkpoint(spec_with(), {k: v.long() for k, v in
                                         models.mlp(64, [4], 10).state_dict().items()}))
cli("models", "snapshot wrong shapes", C, "has shape",
    prepare=bad_checkpoint(spec_with(widths=[5]), models.mlp(64, [4], 10).state_dict()))
cli("models", "snapshot random bytes", C, "is not a readable safetensors checkpoint",
    prepare=lambda ws: write(ws / "bad.safetensors", os.urandom(256)))
cli("models", "snapshot truncated", C, "is not a readable safetensors checkpoint",
    prepare=lambda ws: write(ws / "bad.safetensors",
                             (ws / "model.safetensors").read_bytes()[:-50]))
cli("models", "snapshot missing", [*H, "--checkpoint", "{ws}/nope.safetensors"],
    "no checkpoint at")
M = ["margin", "{ws}/model.safetensors", "--data", "digits"]
cli("models", "margin n 0", [*M, "--n", "0"], "--n: must be at least 1")
cli("models", "margin n beyond the data", [*M, "--n", "99999"], "n_train=99999 exceeds")
cli("models", "margin test n beyond the data", [*M, "--split", "test", "--n", "99999"],
    "n_test=99999 exceeds the 297 samples")
cli("models", "margin unknown loss", [*M, "--loss", "hinge"], "unknown loss")
cli("models", "margin unknown data", ["margin", "{ws}/model.safetensors", "--data", "svhn"],
    "unknown data set")
cli("models", "margin snapshot widths '32,32'", ["margin", "{ws}/bad.safetensors", "--data",
                                                  "digits"], "got '32,32'",
    prepare=bad_checkpoint(spec_with(widths="32,32")))

# --- attack --------------------------------------------------------------------------------------

K = ["attack", "{ws}/run", "--snapshots", "model-5"]
cli("attack", "n 0", [*K, "--n", "0"], "--n: must be at least 1")
cli("attack", "n beyond the run's data", [*K, "--n", "51"],
    "--n 51 exceeds the 50 points of the run's train set")
cli("attack", "n beyond the test set of both", [*K, "--split", "both", "--n", "21"],
    "--n 21 exceeds the 20 points of the run's test set")
cli("attack", "steps 0", [*K, "--steps", "0"], "--steps: must be at least 1")
cli("attack", "batch-size 0", [*K, "--batch-size", "0"], "--batch-size: must be at least 1")
cli("attack", "unknown certificate", [*K, "--certificates", "global,exact"],
    "--certificates takes a subset of global,row,local, got 'exact'")
cli("attack", "bounds reversed", [*K, "--bounds", "1,0"], "LOWER < UPPER")
cli("attack", "bounds text", [*K, "--bounds", "a,b"], "--bounds must be LOWER,UPPER")
cli("attack", "missing snapshot", ["attack", "{ws}/run", "--snapshots", "model-9"],
    "no snapshot model-9")
cli("attack", "foreign robustness.json kept", K, "is not a marginlab robustness file",
    prepare=lambda ws: write(ws / "run" / "robustness.json", '{"mine": 1}'))
cli("attack", "robustness.json a list", K, "must hold a JSON object",
    prepare=lambda ws: write(ws / "run" / "robustness.json", "[]"))
cli("attack", "config a list", K, "must hold a JSON object", prepare=set_config("[]"))
cli("attack", "missing run", ["attack", "{ws}/nope"], "no run directory at")

# --- sweep and reproduce -------------------------------------------------------------------------

cli("sweep, reproduce", "sweep workers -1",
    ["sweep", "wei-fig2", "--workers", "-1", "--out", "{ws}/s"], "--workers: must be at least 0")
cli("sweep, reproduce", "sweep seeds text",
    ["sweep", "wei-fig2", "--seeds", "1,a", "--out", "{ws}/s"], "--seeds must be an integer")
cli("sweep, reproduce", "sweep seeds empty",
    ["sweep", "wei-fig2", "--seeds", "", "--out", "{ws}/s"], "--seeds must be comma-separated")
cli("sweep, reproduce", "sweep seeds negative",
    ["sweep", "wei-fig2", "--seeds=-1", "--out", "{ws}/s"], "--seeds must be at least 0")
cli("sweep, reproduce", "sweep spec a list", ["sweep", "{ws}/spec.json", "--out", "{ws}/s"],
    "a sweep spec is a JSON object", prepare=lambda ws: write(ws / "spec.json", "[]"))
cli("sweep, reproduce", "sweep spec not JSON", ["sweep", "{ws}/spec.json", "--out", "{ws}/s"],
    "is not valid JSON", prepare=lambda ws: write(ws / "spec.json", "{"))
cli("sweep, reproduce", "sweep spec a directory", ["sweep", "{ws}/spec.json", "--out", "{ws}/s"],
    "is a directory", prepare=lambda ws: (ws / "spec.json").mkdir())
cli("sweep, reproduce", "reproduce trials=0",
    ["reproduce", "wei-fig2", "--set", "trials=0", "--out", "{ws}/r"],
    "setting 'trials' must be at least 1, got 0")
cli("sweep, reproduce", "reproduce trials=2.5",
    ["reproduce", "wei-fig2", "--set", "trials=2.5", "--out", "{ws}/r"],
    "setting 'trials' takes an integer")
cli("sweep, reproduce", "reproduce n=NaN",
    ["reproduce", "wei-fig2", "--set", "n=NaN", "--out", "{ws}/r"], "takes a finite number")
cli("sweep, reproduce", "reproduce n_train=-5",
    ["reproduce", "lyu-li-mnist", "--set", "n_train=-5", "--out", "{ws}/r"],
    "setting 'n_train' must be at least 1")
cli("sweep, reproduce", "reproduce unknown setting",
    ["reproduce", "wei-fig2", "--set", "colour=1", "--out", "{ws}/r"], "unknown setting 'colour'")
cli("sweep, reproduce", "reproduce set without =",
    ["reproduce", "wei-fig2", "--set", "trials", "--out", "{ws}/r"], "--set takes KEY=VALUE")
cli("sweep, reproduce", "reproduce device banana",
    ["reproduce", "wei-fig2", "--device", "banana", "--out", "{ws}/r"],
    "--device: unknown torch device 'banana'")
cli("sweep, reproduce", "reproduce seed -1",
    ["reproduce", "wei-fig2", "--seed=-1", "--out", "{ws}/r"], "--seed: must be at least 0")
cli("sweep, reproduce", "reproduce unknown experiment", ["reproduce", "lyu-li-imagenet"],
    "unknown experiment 'lyu-li-imagenet'")

# --- a full disk during a command: after the boundary checks, still one line ---------------------

cli("output paths", "plot disk fills while writing", ["plot", "{ws}/run", "--out", "{ws}/p"],
    "No space left on device",
    patch=lambda mp, ws: mp.setattr(
        "marginlab.plots.save_figure",
        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))))
cli("output paths", "attack read-only run directory", K, "Read-only file system",
    patch=lambda mp, ws: mp.setattr(
        "marginlab.cli.attack._load_split",
        lambda *a, **k: (_ for _ in ()).throw(
            OSError(errno.EROFS, "Read-only file system", str(ws / "run" / "x")))))

# --- API: data -----------------------------------------------------------------------------------

api("data API", "n_train 3.5", lambda ws: data.load("digits", n_train=3.5),
    "n_train must be an integer, got 3.5")
api("data API", "n_train True", lambda ws: data.load("digits", n_train=True),
    "n_train must be an integer, got True")
api("data API", "n_train '5'", lambda ws: data.load("digits", n_train="5"),
    "n_train must be an integer, got '5'")
api("data API", "n_train 0", lambda ws: data.load("digits", n_train=0),
    "n_train must be at least 1")
api("data API", "n_train beyond mnist5k", lambda ws: data.load("mnist5k", n_train=999999),
    "n_train=999999 exceeds the 4000 samples of mnist5k's training set")
api("data API", "n_test beyond digits", lambda ws: data.load("digits", n_test=10**6),
    "n_test=1000000 exceeds the 297 samples")
api("data API", "synthetic without n_train", lambda ws: data.load("thm43"), "needs n_train")
api("data API", "synthetic n_train 2.5", lambda ws: data.load("thm43", n_train=2.5),
    "n_train must be an integer")
api("data API", "unknown data set", lambda ws: data.load("svhn"), "unknown data set 'svhn'")
api("data API", "root not a path", lambda ws: data.load("mnist", 123),
    "root must be a directory path")
api("data API", "unbalanced classes", lambda ws: balanced_first(
    np.array([0] * 10 + [1] * 2), 8, 2, what="n_train"),
    "asks for 4 samples of each class")
api("data API", "options of unknown set", lambda ws: data.options("svhn"), "unknown data set")

# --- API: hostile files --------------------------------------------------------------------------


def hostile(id: str, name: str, content: bytes, read: Callable[[Path], object], fragment: str,
            **kw) -> None:
    """A hostile file ``name`` with ``content``, written before the fingerprint, then read."""
    api("hostile files", id, lambda ws: read(ws / name), fragment,
        prepare=lambda ws: write(ws / name, content), **kw)


def read_images(path: Path):
    return files.read_idx(path, files.IDX_IMAGES)


I = files.IDX_IMAGES
hostile("IDX dims overflow int64", "x.idx", idx_bytes(I, (2**32 - 1,) * 3, 16), read_images,
        "declares shape (4294967295, 4294967295, 4294967295)")
hostile("IDX dims wrap to the data size", "x.idx", idx_bytes(I, (2**31, 2**31, 4), 0),
        read_images, "= 18446744073709551616 bytes")
hostile("IDX header larger than data", "x.idx", idx_bytes(I, (10, 28, 28), 100), read_images,
        "100 data bytes, but the header declares")
hostile("IDX wrong magic", "x.idx", idx_bytes(2049, (1,), 1), read_images, "wrong magic number")
hostile("IDX truncated header", "x.idx", struct.pack(">I", I) + b"\0\0", read_images,
        "truncated IDX header")
hostile("IDX empty images", "x.idx", idx_bytes(I, (5, 0, 28), 0), read_images,
        "declares empty images")
hostile("IDX gzip corrupt", "x.idx.gz", b"\x1f\x8b\x08\x00garbage", read_images,
        "corrupt or truncated file")
hostile("IDX gzip bomb", "x.idx.gz", gzip.compress(bytes(4096)), read_images,
        "larger than 1,024 bytes", patch=lambda mp, ws: mp.setattr(files, "MAX_FILE_BYTES", 1024))


def cifar(id: str, content: bytes | object, fragment: str, **kw) -> None:
    raw = content if isinstance(content, bytes) else cifar_pickle(content)
    hostile(id, "batch", raw, files.read_cifar_batch, fragment, **kw)


cifar("CIFAR pickle nested 100000 deep", deep_pickle(100_000), "nested deeper than 8 levels")
cifar("CIFAR pickle nested 9 deep", deep_pickle(9), "nested deeper than 8 levels")
cifar("CIFAR labels 0.5", {b"data": ROWS, b"labels": [0.5, 1, 2]},
      "'labels' must be integers, found 0.5")
cifar("CIFAR labels True", {b"data": ROWS, b"labels": [True, 1, 2]},
      "'labels' must be integers, found True")
cifar("CIFAR labels text", {b"data": ROWS, b"labels": ["3", 1, 2]},
      "'labels' must be integers, found '3'")
cifar("CIFAR labels float array", {b"data": ROWS, b"labels": np.array([0.0, 1.0, 2.0])},
      "array of float64")
cifar("CIFAR label 10", {b"data": ROWS, b"labels": [0, 10, 2]},
      "labels must be in 0..9, found [10]")
cifar("CIFAR label huge", {b"data": ROWS, b"labels": [0, 2**70, 2]}, "must be integers in 0..9")
cifar("CIFAR labels a dict", {b"data": ROWS, b"labels": {1: 2}},
      "'labels' must be a list of integers, got dict")
cifar("CIFAR labels count", {b"data": ROWS, b"labels": [0, 1]}, "3 images but 2 labels")
cifar("CIFAR code execution", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85q\x01Rq\x02.",
      "refusing to unpickle global os.system")
cifar("CIFAR not a dict", [1, 2, 3], "expected a dict, got list")
cifar("CIFAR truncated", cifar_pickle({b"data": ROWS})[:-30], "corrupt or truncated pickle")
cifar("CIFAR oversized file", {b"data": ROWS, b"labels": [0, 1, 2]}, "larger than 1,024 bytes",
      patch=lambda mp, ws: mp.setattr(files, "MAX_FILE_BYTES", 1024))
cifar("CIFAR object array", {b"data": np.array([object()]), b"labels": [0]},
      "refusing to unpickle")

# --- API: models and checkpoints -----------------------------------------------------------------


def load_case(id: str, meta: dict | None, fragment: str, tensors: dict | None = None) -> None:
    api("models API", id, lambda ws: models.load(ws / "c.safetensors"), fragment,
        prepare=lambda ws: checkpoint(ws / "c.safetensors", meta, tensors))


load_case("load widths '32,32'", spec_with(widths="32,32"), "got '32,32'")
load_case("load widths nested", spec_with(widths=[[4]]), "must be an integer")
load_case("load out_dim 0", spec_with(out_dim=0), "out_dim must be at least 1")
load_case("load bias text", spec_with(bias="some"), "bias must be one of")
load_case("load activation", spec_with(activation="tanh"),
          "activation must be relu or leaky_relu")
load_case("load seed -1", spec_with(seed=-1), "seed must be at least 0")
load_case("load kwargs a list", {"spec": {"name": "mlp", "kwargs": [1]}}, "malformed")
api("models API", "mlp widths text", lambda ws: models.mlp(784, "32,32"), "got '32,32'")
api("models API", "mlp in_dim 784.5", lambda ws: models.mlp(784.5, [32]),
    "in_dim must be an integer, got 784.5")
api("models API", "two_layer m 0", lambda ws: models.two_layer(10, 0), "m must be at least 1")
api("models API", "mnist_cnn width nan", lambda ws: models.mnist_cnn(width=float("nan")),
    "width must be a finite number")
api("models API", "mnist_cnn classes 0", lambda ws: models.mnist_cnn(num_classes=0),
    "num_classes must be at least 1")
api("models API", "vgg16 width -1", lambda ws: models.vgg16(width=-1),
    "width must be positive")
api("models API", "wrn16 widen 0", lambda ws: models.wrn16(widen=0),
    "widen must be at least 1")
api("models API", "build unknown argument",
    lambda ws: models.build("mlp", in_dim=3, widths=[2], depth=4), "bad arguments")

# --- API: run directories and JSON ---------------------------------------------------------------

def json_case(id: str, content: bytes | str, read: Callable, fragment: str) -> None:
    api("run directories API", id, lambda ws: read(ws / "f.json"), fragment,
        prepare=lambda ws: write(ws / "f.json", content))


json_case("read_jsonl not UTF-8", b"\xff\n", storage.read_jsonl, "is not UTF-8 text")
json_case("read_jsonl a number line", "3\n{}\n", storage.read_jsonl, "line 1 is a JSON number")
json_case("read_metrics without epoch", "{}\n", storage.read_metrics, "record 1 has no 'epoch'")
json_case("read_metrics boolean epoch", '{"epoch": true}\n', storage.read_metrics,
          "not an integer")
json_case("read_json_object a string", '"x"', storage.read_json_object, "got a JSON string")
api("run directories API", "read_json a directory",
    lambda ws: storage.read_json(ws / "run"), "is a directory, expected a file")
api("run directories API", "analyze memory_limit -1",
    lambda ws: analyze_run(ws / "run", memory_limit=-1), "must be positive")
api("run directories API", "analyze kkt_every 0",
    lambda ws: analyze_run(ws / "run", kkt_every=0), "--kkt-every must be at least 1")
api("run directories API", "analyze tau nan",
    lambda ws: analyze_run(ws / "run", tau=float("nan")), "--tau must be a finite number")
api("run directories API", "analyze without config",
    lambda ws: analyze_run(ws / "nope"), "has no config.json", error=RunDirectoryError)

# --- API: validators -----------------------------------------------------------------------------

api("validators", "device cuda", lambda ws: validate.device("cuda"), "CUDA is not available")
api("validators", "device cpu:x", lambda ws: validate.device("cpu:x"),
    "unknown torch device 'cpu:x'")
api("validators", "device an int", lambda ws: validate.device(0), "unknown torch device 0")
api("validators", "threads 0", lambda ws: validate.threads(0), "at least 1")
api("validators", "threads 1e6", lambda ws: validate.threads(10**6), "at most 4096")
api("validators", "output_dir under a file",
    lambda ws: validate.output_dir(ws / "run" / "config.json" / "x"), "is a file")
api("validators", "output_file a directory", lambda ws: validate.output_file(ws / "run"),
    "is a directory, not a file")
api("validators", "widths None", lambda ws: validate.widths(None), "got None")
api("validators", "experiment override trials=0",
    lambda ws: experiments.get("wei-fig2").request("cpu", ws / "r", {"trials": 0}),
    "must be at least 1")
api("validators", "experiment override eta=inf",
    lambda ws: experiments.get("wei-meanfield").request("cpu", ws / "r",
                                                        {"eta": float("inf")}),
    "takes a finite number")


# ---------------------------------------------------------------------------------------------
# the harness
# ---------------------------------------------------------------------------------------------

def fingerprint(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, size, mtime and SHA-256 of files (a run directory's
    lock file included: a refused command leaves it as it was)."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = ("dir",)
        for name in filenames:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p.relative_to(root))] = ("file", st.st_size, st.st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A finished three-epoch run (with trajectory and snapshots) and a zoo checkpoint."""
    root = tmp_path_factory.mktemp("base")
    rc = main([*BASE_TRAIN, "--epochs", "3", "--trajectory-every", "1",
               "--out", str(root / "run")])
    assert rc == 0
    models.save(models.mlp(64, [4], 10), root / "model.safetensors")
    return root


@pytest.fixture
def ws(base_run, tmp_path) -> Path:
    shutil.copytree(base_run / "run", tmp_path / "run", copy_function=shutil.copy2)
    shutil.copy2(base_run / "model.safetensors", tmp_path / "model.safetensors")
    return tmp_path


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category}: {c.id}" for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, ws, capsys, monkeypatch):
    if case.prepare is not None:
        case.prepare(ws)
    if case.patch is not None:
        case.patch(monkeypatch, ws)
    before = fingerprint(ws)
    capsys.readouterr()
    if case.argv is not None:
        argv = [a.replace("{ws}", str(ws)) for a in case.argv]
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 2, (out, err)
        line = _one_line(err)
        assert line.startswith(f"marginlab {argv[0]}: error: "), line
        assert case.fragment in line, line
    else:
        with pytest.raises(case.error) as info:
            case.call(ws)
        message = str(info.value)
        assert "\n" not in message and message.strip(), message
        assert case.fragment in message, message
        assert not capsys.readouterr().err.strip()
    assert fingerprint(ws) == before


def test_the_table_is_large_and_covers_every_category():
    by_category: dict[str, int] = {}
    for c in CASES:
        by_category[c.category] = by_category.get(c.category, 0) + 1
    assert len(CASES) >= 100, len(CASES)
    assert len({(c.category, c.id) for c in CASES}) == len(CASES)  # ids are unique
    commands = {c.argv[0] for c in CASES if c.argv}
    assert commands >= {"train", "plot", "analyze", "homogeneity", "margin", "attack", "sweep",
                        "reproduce"}
    assert sum(c.call is not None for c in CASES) >= 40


# ---------------------------------------------------------------------------------------------
# through the installed entry point: a fresh interpreter, the same one line
# ---------------------------------------------------------------------------------------------

SUBPROCESS = [
    ([*T, "--device", "cuda", "--out", "{ws}/new"], "CUDA is not available"),
    (["plot", "{ws}/run", "--out", "{ws}/p"], "holds no epochs: nothing to plot"),
]


@pytest.mark.parametrize("argv,fragment", SUBPROCESS, ids=[s[1] for s in SUBPROCESS])
def test_bad_input_in_a_fresh_process(argv, fragment, ws):
    (ws / "run" / "metrics.jsonl").write_text("")
    before = fingerprint(ws)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-m", "marginlab.cli",
                           *[a.replace("{ws}", str(ws)) for a in argv]],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    line = _one_line(done.stderr)
    assert line.startswith(f"marginlab {argv[0]}: error: ") and fragment in line, line
    assert fingerprint(ws) == before


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only user errors become one line: an unexpected exception propagates."""
    def boom(args):
        raise ZeroDivisionError("a bug")
    import marginlab.cli.homogeneity as cmd
    monkeypatch.setattr(cmd, "run", boom)
    with pytest.raises(ZeroDivisionError):
        main(["homogeneity", "--model", "mlp"])
    monkeypatch.setattr(cmd, "run", lambda args: (_ for _ in ()).throw(
        OSError(errno.EIO, "Input/output error")))
    with pytest.raises(OSError):
        main(["homogeneity", "--model", "mlp"])


def test_validators_accept_good_values(tmp_path):
    """The checks are not simply refusing: good values come back normalized."""
    assert validate.integer(3.0, "n") == 3 and validate.integer("7", "n", from_text=True) == 7
    assert validate.number(1, "x") == 1.0 and validate.int_list(" 4, 5", "w") == [4, 5]
    assert validate.widths((3, 2)) == [3, 2] and validate.device("cpu") == "cpu"
    assert validate.output_dir(tmp_path / "a" / "b") == (tmp_path / "a" / "b").resolve()
    assert validate.output_file(tmp_path / "f.png").name == "f.png"
    assert not (tmp_path / "a").exists()  # checked without creating anything
    assert len(data.load("digits", n_train=1500).y_train) == 1500  # the whole set is in range
    labels = files._labels(np.array([1, 2], dtype=np.uint8), "labels", 2, 10, Path("x"))
    assert labels.dtype == np.int64 and labels.tolist() == [1, 2]
