"""`marginlab train`'s options are generated from TrainSpec's fields and the schedules' fields:
every field is reachable, every default is the dataclass's, command lines parse to the specs
they parsed to before the options were generated, and bad values name their option."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from marginlab.cli import build_parser, main
from marginlab.cli import train as train_cli
from marginlab.train import SCHEDULES
from marginlab.train.config import DEFAULT_SNAPSHOTS
from marginlab.train.schedules import make_schedule
from marginlab.train.settings import default_of, info, option_name
from marginlab.train.spec import TrainSpec

README = Path(__file__).resolve().parents[2] / "README.md"

# The spec of `marginlab train --out r` before the options were generated from TrainSpec
# (recorded from that version's spec_from_args), and what each command line changed in it.
MAIN_DEFAULT = {
    "model": "mnist_cnn", "bias": "none", "widths": [100, 100], "width": 1.0,
    "data": "mnist5k", "root": None, "n_train": None, "n_test": None,
    "schedule": {"name": "loss_based", "alpha0": 0.1, "up": 1.148698354997035,
                 "down": 1.0717734625362931},
    "epochs": 100, "batch_size": 100, "loss": "cross_entropy", "weight_decay": 0.0,
    "weight_decay_power": 2.0, "weight_decay_milestones": {}, "seed": 0, "device": "cpu",
    "max_time": None, "stop_at_log10_loss": None, "margin_convention": "homogeneous",
    "checkpoint_every": 1, "trajectory_every": None,
    "snapshots_at": [1e-10, 1e-15, 1e-20, 1e-120], "allow_tf32": False,
}
MAIN_SPECS = {
    "--model mlp --widths 64,64 --n-train 200 --schedule loss_based --epochs 2000 "
    "--stop-at -100 --out runs/mlp":
        {"model": "mlp", "widths": [64, 64], "n_train": 200, "epochs": 2000,
         "stop_at_log10_loss": -100.0},
    "--model mlp --widths 64,64 --n-train 200 --schedule loss_based_momentum --epochs 2000 "
    "--stop-at -100 --out runs/mlp-fast":
        {"model": "mlp", "widths": [64, 64], "n_train": 200,
         "schedule": {"name": "loss_based_momentum", "alpha0": 0.1}, "epochs": 2000,
         "stop_at_log10_loss": -100.0},
    "--out r": {},
    "--model two_layer --out r": {"model": "two_layer", "widths": [100]},
    "--model mlp --out r": {"model": "mlp"},
    "--model vgg16 --data cifar10 --width 0.5 --bias first --out r":
        {"model": "vgg16", "bias": "first", "width": 0.5, "data": "cifar10"},
    "--model wrn16 --data cifar10 --out r": {"model": "wrn16", "data": "cifar10"},
    "--bias all --out r": {"bias": "all", "margin_convention": "paper_with_bias"},
    "--bias all --convention homogeneous --out r": {"bias": "all"},
    "--schedule constant --lr 0.05 --out r": {"schedule": {"name": "constant", "lr": 0.05}},
    "--schedule constant --out r": {"schedule": {"name": "constant", "lr": 0.01}},
    "--schedule loss_based --alpha0 0.2 --up 1.5 --down 1.2 --out r":
        {"schedule": {"name": "loss_based", "alpha0": 0.2, "up": 1.5, "down": 1.2}},
    "--schedule loss_based_momentum --alpha0 0.2 --up 1.5 --down 3 --momentum 0.8 "
    "--active-gap none --no-margin-guard --out r":
        {"schedule": {"name": "loss_based_momentum", "alpha0": 0.2, "up": 1.5, "down": 3.0,
                      "momentum": 0.8, "active_gap": None, "monotone_margin": False}},
    "--schedule loss_based_momentum --active-gap 20 --out r":
        {"schedule": {"name": "loss_based_momentum", "alpha0": 0.1, "active_gap": 20.0}},
    "--batch-size full --loss logistic --weight-decay 0.001 --weight-decay-power 3 --seed 7 "
    "--device cpu --max-time 60 --checkpoint-every 5 --trajectory-every 10 --n-test 100 "
    "--root /tmp/x --data digits --epochs 3 --out r":
        {"data": "digits", "root": "/tmp/x", "n_test": 100, "epochs": 3, "batch_size": None,
         "loss": "logistic", "weight_decay": 0.001, "weight_decay_power": 3.0, "seed": 7,
         "max_time": 60.0, "checkpoint_every": 5, "trajectory_every": 10},
    "--model mlp --widths 16 --data digits --n-train 100 --n-test 50 --batch-size 25 "
    "--threads 1 --epochs 3 --out r":
        {"model": "mlp", "widths": [16], "data": "digits", "n_train": 100, "n_test": 50,
         "epochs": 3, "batch_size": 25},
}


def _spec(argv: list[str]) -> dict:
    args = build_parser().parse_args(["train", *argv])
    return json.loads(json.dumps(train_cli.spec_from_args(args).to_dict()))


def _actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions}


def _readme_train_commands() -> list[str]:
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    return [" ".join(re.sub(r"\s+#.*$", "", m).split())
            for m in re.findall(r"^marginlab train (.*)$", text, flags=re.M)]


# --- every field is an option, and its default is the dataclass's ------------------------------

def test_every_trainspec_field_has_an_option():
    actions = _actions()
    for field in dataclasses.fields(TrainSpec):
        dest = field.name
        assert dest in actions, f"TrainSpec.{dest} has no option"
        assert option_name(field) in actions[dest].option_strings
    for new in ("--weight-decay-milestones", "--snapshots-at", "--allow-tf32"):
        assert any(new in a.option_strings for a in actions.values())


def test_every_schedule_parameter_keeps_its_option():
    actions = _actions()
    options = {o for a in actions.values() for o in a.option_strings}
    for flag in ("--lr", "--alpha0", "--up", "--down", "--momentum", "--active-gap",
                 "--no-margin-guard"):
        assert flag in options
    for cls in SCHEDULES.values():
        for field in dataclasses.fields(cls):
            if info(field) is not None:
                assert option_name(field) in options


def test_no_option_restates_a_default():
    """A generated option's default is None (not given): the dataclass supplies it. An option
    given a hand default fails here."""
    setting_dests = {f.name for f in dataclasses.fields(TrainSpec)}
    for cls in SCHEDULES.values():
        setting_dests |= {f.name for f in dataclasses.fields(cls) if info(f) is not None}
    for dest, action in _actions().items():
        if dest in setting_dests:
            assert action.default is None, f"{action.option_strings} restates a default"


def test_defaults_are_the_dataclasses():
    spec = _spec(["--out", "r"])
    schedule = spec.pop("schedule")
    expected = TrainSpec().to_dict()
    expected.pop("schedule")
    assert spec == json.loads(json.dumps(expected))
    assert make_schedule(schedule).config() == make_schedule(TrainSpec().schedule).config()
    assert spec["snapshots_at"] == list(DEFAULT_SNAPSHOTS)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_defaults_are_the_dataclasses(name):
    config = _spec(["--schedule", name, "--out", "r"])["schedule"]
    assert config["name"] == name
    assert make_schedule(config).config() == SCHEDULES[name]().config()


def test_help_shows_the_dataclass_defaults():
    actions = _actions()
    up = actions["up"].help
    for name in ("loss_based", "loss_based_momentum"):
        assert f"{default_of(SCHEDULES[name], 'up'):g} for {name}" in up
    assert f"default: {default_of(TrainSpec, 'epochs')}" in actions["epochs"].help


def test_model_defaults_come_from_the_registry():
    assert _spec(["--model", "two_layer", "--out", "r"])["widths"] == [100]
    assert _spec(["--model", "mlp", "--out", "r"])["widths"] == list(TrainSpec().widths)


# --- command lines parse to the specs they parsed to before ------------------------------------

def test_readme_examples_are_in_the_table():
    commands = _readme_train_commands()
    assert len(commands) >= 2
    for command in commands:
        assert command in MAIN_SPECS, command


@pytest.mark.parametrize("command", list(MAIN_SPECS))
def test_command_line_parses_to_the_same_spec(command):
    assert _spec(shlex.split(command)) == {**MAIN_DEFAULT, **MAIN_SPECS[command]}


def test_new_options_reach_their_fields():
    spec = _spec(["--weight-decay", "0.01", "--weight-decay-milestones", "60:0.2,120:0.5",
                  "--snapshots-at", "1e-5,1e-8", "--allow-tf32", "--out", "r"])
    assert spec["weight_decay_milestones"] == {"60": 0.2, "120": 0.5}
    assert spec["snapshots_at"] == [1e-5, 1e-8] and spec["allow_tf32"] is True
    assert _spec(["--snapshots-at", "", "--out", "r"])["snapshots_at"] == []


# --- bad values: one line naming the option ----------------------------------------------------

@pytest.mark.parametrize("argv,fragment", [
    (["--snapshots-at", "0"], "--snapshots-at must be positive"),
    (["--snapshots-at", "1e-5,x"], "--snapshots-at must be comma-separated numbers"),
    (["--weight-decay-milestones", "60"], "--weight-decay-milestones must be comma-separated "
                                          "EPOCH:FACTOR pairs"),
    (["--weight-decay-milestones", "0:0.5"], "--weight-decay-milestones: epoch '0'"),
    (["--weight-decay-milestones", "5:-1"], "--weight-decay-milestones factor"),
    (["--lr", "0.1"], "--lr applies only to --schedule constant"),
    (["--schedule", "constant", "--alpha0", "0.1"],
     "--alpha0 applies only to --schedule loss_based or loss_based_momentum"),
    (["--width", "100", "--model", "mnist_cnn"], "--width must be at most 64"),
    (["--model", "wrn16", "--bias", "first"],
     "wrn16 is built without biases; use --bias none (got 'first')"),
    (["--seed", "x"], "--seed must be an integer, got 'x'"),
    (["--max-time", "soon"], "--max-time must be a number, got 'soon'"),
    (["--convention", "other"], "--convention: invalid choice"),
])
def test_bad_values_name_the_option(capsys, tmp_path, argv, fragment):
    out = tmp_path / "run"
    rc = main(["train", "--model", "mlp", "--data", "digits", "--epochs", "1", *argv,
               "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("marginlab train: error: ") and fragment in err[0], err[0]
    assert not out.exists()


# --- --resume compares the options given with the saved run ------------------------------------

TINY = ["--model", "mlp", "--widths", "8", "--data", "digits", "--n-train", "40",
        "--n-test", "20", "--batch-size", "20", "--threads", "1"]


def test_resume_refuses_an_option_given_at_its_default_that_differs(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--seed", "3", "--epochs", "1", "--out", str(out)]) == 0
    rc = main(["train", *TINY, "--seed", "0", "--epochs", "2", "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "gives seed=0 where the run has 3" in err
    assert "only --epochs, --max-time, --stop-at may change" in err


def test_resume_accepts_the_same_schedule_spelled_differently(capsys, tmp_path):
    out = tmp_path / "run"
    fast = ["--schedule", "loss_based_momentum"]
    assert main(["train", *TINY, *fast, "--epochs", "1", "--out", str(out)]) == 0
    # the saved spec holds no momentum; 0.9 is the schedule's own default
    rc = main(["train", *TINY, *fast, "--momentum", "0.9", "--epochs", "2", "--out", str(out),
               "--resume"])
    assert rc == 0, capsys.readouterr().err


# --- other commands take their defaults from the same places -----------------------------------

def _command_actions(name: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices[name]._actions}


def test_other_commands_derive_their_defaults():
    from marginlab.experiments import RunRequest

    reproduce = _command_actions("reproduce")
    assert reproduce["device"].default == default_of(RunRequest, "device")
    assert reproduce["seed"].default == default_of(RunRequest, "seed")
    homogeneity = _command_actions("homogeneity")
    assert homogeneity["bias"].default == default_of(TrainSpec, "bias")
    assert homogeneity["widths"].default is None  # the model's own, as for train
    from marginlab.robustness.certify import CERTIFICATES  # the parser does not import it

    assert _command_actions("attack")["certificates"].default == ",".join(CERTIFICATES)


def test_homogeneity_builds_through_the_registry(capsys):
    assert main(["homogeneity", "--model", "two_layer", "--in-dim", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layer_orders"] == {"fc1": 1.0, "fc2": 1.0}
    assert main(["homogeneity", "--model", "wrn16", "--bias", "first"]) == 2
    assert "wrn16 is built without biases; use --bias none" in capsys.readouterr().err
