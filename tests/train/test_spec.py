"""TrainSpec: one source of a run's defaults and one validation, used by every path that builds
a spec (the command line, from_dict for sweeps, experiments and resumed runs)."""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch

from marginlab import models
from marginlab.errors import MarginlabError
from marginlab.train.config import FitConfig
from marginlab.train.settings import default_of, info
from marginlab.train.spec import TrainSpec, build_model


def test_every_field_is_a_described_setting():
    for field in dataclasses.fields(TrainSpec):
        meta = info(field)
        assert meta is not None and meta.help.strip(), field.name


def test_defaults_shared_with_the_loop_are_the_loops():
    for name in ("batch_size", "loss", "seed", "device", "checkpoint_every"):
        assert default_of(TrainSpec, name) == default_of(FitConfig, name), name
    assert TrainSpec().snapshots_at == list(default_of(FitConfig, "snapshots_at"))


def test_resolved_defaults():
    assert TrainSpec().widths == [100, 100]
    assert TrainSpec(model="two_layer").widths == list(models.entry("two_layer").default_widths)
    assert TrainSpec(model="two_layer", widths=[7]).widths == [7]
    assert TrainSpec().margin_convention == "homogeneous"
    assert TrainSpec(bias="all").margin_convention == "paper_with_bias"
    assert TrainSpec(bias="all", margin_convention="homogeneous").margin_convention == \
        "homogeneous"
    assert TrainSpec.from_dict({}) == TrainSpec()


def test_from_dict_normalizes():
    spec = TrainSpec.from_dict({"model": "mlp", "widths": (8, 4), "width": 2, "n_train": 10.0,
                                "weight_decay": 1, "snapshots_at": [1]})
    assert spec.widths == [8, 4] and spec.n_train == 10 and type(spec.n_train) is int
    assert type(spec.weight_decay) is float and spec.snapshots_at == [1.0]
    assert spec.width == 2  # not a setting mlp uses: neither checked nor changed


@pytest.mark.parametrize("settings,message", [
    ({"model": "resnet"}, "unknown model 'resnet'; expected one of"),
    ({"model": "wrn16", "bias": "all"}, "wrn16 is built without biases; use bias none (got 'all')"),
    ({"model": "two_layer", "widths": [3, 3]}, "widths (two_layer) must hold exactly 1 width"),
    ({"model": "mlp", "widths": "32,32"}, "widths (mlp) must be a list of positive integers"),
    ({"model": "mnist_cnn", "width": -1}, "width must be positive, got -1"),
    ({"n_train": 0}, "n_train must be at least 1, got 0"),
    ({"n_test": "5"}, "n_test must be an integer, got '5'"),
    ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
    ({"batch_size": True}, "batch_size must be an integer, got True"),
    ({"weight_decay": -1}, "weight_decay must be at least 0"),
    ({"weight_decay_power": 0}, "weight_decay_power must be positive"),
    ({"weight_decay_milestones": {"x": 1}}, "weight_decay_milestones: epoch 'x'"),
    ({"seed": -2}, "seed must be at least 0"),
    ({"max_time": float("nan")}, "max_time must be a finite number"),
    ({"stop_at_log10_loss": float("inf")}, "stop_at_log10_loss must be a finite number"),
    ({"margin_convention": "other"}, "margin_convention must be one of homogeneous"),
    ({"checkpoint_every": 0}, "checkpoint_every must be at least 1"),
    ({"trajectory_every": -1}, "trajectory_every must be at least 1"),
    ({"snapshots_at": [1e-5, 0]}, "snapshots_at must be positive"),
    ({"snapshots_at": "1e-5"}, "snapshots_at must be a list"),
    ({"allow_tf32": "yes"}, "allow_tf32 must be true or false"),
    ({"data": "svhn"}, "unknown data set 'svhn'"),
    ({"root": 3}, "root must be a directory path"),
    ({"loss": "hinge"}, "unknown loss 'hinge' (loss)"),
    ({"schedule": {"name": "loss_based", "up": 0.5}}, "up must be finite and > 1"),
    ({"schedule": "constant"}, "the schedule must be a dict with a name"),
    ({"device": "banana"}, "unknown torch device 'banana'"),
    ({"colour": "red"}, "unknown training settings: colour"),
])
def test_from_dict_refuses_bad_values_in_one_line(settings, message):
    with pytest.raises(MarginlabError) as err:
        TrainSpec.from_dict({"model": "mlp", **settings})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_messages_name_options_when_asked():
    with pytest.raises(MarginlabError, match=r"^--stop-at must be a finite number"):
        TrainSpec.from_dict({"stop_at_log10_loss": float("nan")}, label=TrainSpec.option)
    with pytest.raises(MarginlabError, match=r"^--widths \(mlp\) must be"):
        TrainSpec.from_dict({"model": "mlp", "widths": [0]}, label=TrainSpec.option)
    assert TrainSpec.option("margin_convention") == "--convention"
    assert TrainSpec.option("n_train") == "--n-train"


def test_build_model_is_the_registry_entry():
    split = types.SimpleNamespace(X_train=torch.zeros(2, 1, 8, 8), num_classes=10)
    spec = TrainSpec(model="mlp", widths=[6], bias="first", seed=4)
    model = build_model(spec, split)
    ref = models.mlp(64, [6], 10, bias="first", seed=4)
    assert model.marginlab_spec == ref.marginlab_spec
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 ref.state_dict().values(), strict=True))
    split.out_dim = 1  # regression splits declare their outputs
    assert build_model(spec, split).marginlab_spec["kwargs"]["out_dim"] == 1
    with pytest.raises(MarginlabError, match="mnist_cnn needs 1x28x28 inputs"):
        build_model(TrainSpec(model="mnist_cnn"), split)
