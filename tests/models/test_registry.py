"""The model registry builds each zoo model for a data split from a run's settings, with the
same weights as its constructor called directly, and applies each model's own checks."""

from __future__ import annotations

import math

import pytest
import torch

from marginlab import models
from marginlab.errors import MarginlabError
from marginlab.models import ModelSettings


def _direct(name: str, s: ModelSettings, shape: tuple[int, ...], n_out: int):
    """The constructor call a training run made for ``name`` before models declared it
    themselves (the per-model branches of the former ``train.spec.build_model``)."""
    if name == "mlp":
        return models.mlp(math.prod(shape), s.widths, n_out, bias=s.bias, seed=s.seed)
    if name == "two_layer":
        return models.two_layer(math.prod(shape), s.widths[0], n_out, bias=s.bias, seed=s.seed)
    if name == "mnist_cnn":
        return models.mnist_cnn(s.bias, num_classes=n_out, width=s.width, seed=s.seed)
    if name == "vgg16":
        return models.vgg16(s.bias, num_classes=n_out, width=s.width, in_channels=shape[0],
                            seed=s.seed)
    assert name == "wrn16"
    return models.wrn16(n_out, in_channels=shape[0], seed=s.seed)


# name, settings, sample shape, outputs
CASES = [
    ("mlp", ModelSettings("none", [16, 8], 1.0, 0), (1, 8, 8), 10),
    ("mlp", ModelSettings("all", [5], 1.0, 3), (64,), 2),
    ("mlp", ModelSettings("first", [7, 7, 7], 1.0, 1), (3, 4, 4), 4),
    ("two_layer", ModelSettings("none", [12], 1.0, 0), (20,), 1),
    ("two_layer", ModelSettings("first", [9], 1.0, 5), (1, 8, 8), 10),
    ("mnist_cnn", ModelSettings("none", [], 0.25, 0), (1, 28, 28), 10),
    ("mnist_cnn", ModelSettings("all", [], 0.125, 2), (1, 28, 28), 3),
    ("vgg16", ModelSettings("first", [], 0.125, 0), (3, 32, 32), 10),
    ("vgg16", ModelSettings("none", [], 0.0625, 4), (1, 32, 32), 100),
    ("wrn16", ModelSettings("none", [], 1.0, 0), (3, 32, 32), 10),
    ("wrn16", ModelSettings("none", [], 1.0, 6), (1, 16, 16), 5),
]


def test_every_model_is_registered_once():
    assert set(models.REGISTRY) == set(models.MODELS)
    assert {name for name, *_ in CASES} == set(models.MODELS)
    for name, entry in models.REGISTRY.items():
        assert entry.name == name and entry.constructor is models.MODELS[name]


@pytest.mark.parametrize("name,settings,shape,n_out", CASES,
                         ids=[f"{c[0]}-{c[1].bias}-{c[1].seed}" for c in CASES])
def test_registry_builds_bit_identical_weights(name, settings, shape, n_out):
    built = models.entry(name).build(settings, shape, n_out)
    ref = _direct(name, settings, shape, n_out)
    assert built.marginlab_spec == ref.marginlab_spec  # checkpoints rebuild the same model
    got, want = built.state_dict(), ref.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert built(x).shape == (2, n_out)


@pytest.mark.parametrize("name", list(models.MODELS))
def test_unused_settings_are_ignored_and_used_ones_matter(name):
    entry = models.entry(name)
    widths = [4] if entry.n_widths == 1 else [4, 3]
    base = ModelSettings("none", widths, 0.125, 0)
    shape = entry.example_input
    ref = entry.build(base, shape, 3).state_dict()
    changes = {"widths": [5] if entry.n_widths == 1 else [5, 3], "width": 0.25, "seed": 1}
    for setting, value in changes.items():
        other = entry.build(ModelSettings(**{**base.__dict__, setting: value}), shape,
                            3).state_dict()
        same = list(other) == list(ref) and all(
            other[k].shape == ref[k].shape and torch.equal(other[k], ref[k]) for k in ref)
        assert same == (setting not in entry.uses), setting


def test_example_inputs_build_with_the_constructors_default_outputs():
    for name, entry in models.REGISTRY.items():
        model = entry.build(ModelSettings("none", [8], 0.125, 0), entry.example_input)
        assert model.marginlab_spec["name"] == name


@pytest.mark.parametrize("name,settings,shape,fragment", [
    ("mnist_cnn", ModelSettings("none", [], 1.0, 0), (1, 8, 8),
     "mnist_cnn needs 1x28x28 inputs (data mnist5k or mnist), got 1x8x8"),
    ("vgg16", ModelSettings("none", [], 0.125, 0), (3, 28, 28), "vgg16 needs Nx32x32 inputs"),
    ("wrn16", ModelSettings("none", [], 1.0, 0), (64,), "wrn16 needs NxNxN inputs, got 64"),
    ("wrn16", ModelSettings("first", [], 1.0, 0), (3, 32, 32),
     "wrn16 is built without biases; use bias none (got 'first')"),
    ("two_layer", ModelSettings("none", [4, 4], 1.0, 0), (20,),
     "widths (two_layer) must hold exactly 1 width, got 2"),
    ("mlp", ModelSettings("none", [], 1.0, 0), (20,), "widths (mlp) must name at least one"),
    ("mlp", ModelSettings("some", [4], 1.0, 0), (20,), "bias must be one of none, first, all"),
    ("vgg16", ModelSettings("none", [], 0.0, 0), (3, 32, 32), "width must be positive"),
])
def test_each_model_checks_its_own_settings_and_inputs(name, settings, shape, fragment):
    with pytest.raises(MarginlabError) as err:
        models.entry(name).build(settings, shape, 10)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_unknown_model_names_the_setting():
    with pytest.raises(MarginlabError, match=r"unknown model 'resnet' \(--model\); expected "
                                             r"one of mnist_cnn"):
        models.entry("resnet", "--model")


def test_former_names_still_import():
    import marginlab.models as m

    for name in ("MODELS", "BIAS_MODES", "BiasMode", "VGG16_CONFIG", "build", "save", "load",
                 "load_state", "metadata", "mlp", "mnist_cnn", "two_layer", "vgg16", "wrn16"):
        assert hasattr(m, name), name
    from marginlab.models import checkpoint, registry, zoo

    assert m.save is checkpoint.save and m.build is registry.build and m.mlp is zoo.mlp
