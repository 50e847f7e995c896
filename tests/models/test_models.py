"""The model zoo (Lyu & Li Appendix K; Wei et al. Appendix F.4) and pickle-free checkpoints."""

from __future__ import annotations

import itertools
import json
import math
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy import stats as sps
from torch import nn

from marginlab import models
from marginlab.errors import MarginlabError

LAYERS = (nn.Linear, nn.Conv2d)

# name -> (constructor kwargs, input shape for a batch of 2, output shape)
ZOO = {
    "mnist_cnn": ({}, (2, 1, 28, 28), (2, 10)),
    "vgg16": ({}, (2, 3, 32, 32), (2, 10)),
    "mlp": ({"in_dim": 784, "widths": [100, 50]}, (2, 1, 28, 28), (2, 10)),
    "two_layer": ({"d": 20, "m": 30}, (2, 20), (2, 1)),
    "wrn16": ({}, (2, 3, 32, 32), (2, 10)),
}


def _layers(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LAYERS)]


def _fan_in(module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return module.in_channels // module.groups * math.prod(module.kernel_size)


@pytest.fixture(scope="module")
def zoo():
    return {name: models.build(name, **kw) for name, (kw, _, _) in ZOO.items()}


def test_registry_lists_every_constructor():
    assert set(models.MODELS) == set(ZOO)


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_output_shapes(zoo, name):
    _, in_shape, out_shape = ZOO[name]
    x = torch.rand(in_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = zoo[name](x)
    assert out.shape == out_shape
    assert torch.isfinite(out).all() and out.abs().max() > 0


def test_architectures_match_the_papers(zoo):
    cnn = dict(_layers(zoo["mnist_cnn"]))
    assert [tuple(m.weight.shape) for m in cnn.values()] == [
        (32, 1, 5, 5), (64, 32, 3, 3), (1024, 3136), (10, 1024)]
    vgg = [m for _, m in _layers(zoo["vgg16"])]
    assert [m.out_channels for m in vgg[:-1]] == [64, 64, 128, 128, 256, 256, 256,
                                                  512, 512, 512, 512, 512, 512]
    assert all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in vgg[:-1])
    assert tuple(vgg[-1].weight.shape) == (10, 512)
    assert sum(isinstance(m, nn.MaxPool2d) for m in zoo["vgg16"].modules()) == 5
    wrn = [m for _, m in _layers(zoo["wrn16"])]
    # WRN-16-4: stem conv, 3 groups × 2 blocks × 2 convs, a 1×1 projection shortcut where each
    # group widens (16→64, 64→128, 128→256), fc
    assert len(wrn) == 1 + 12 + 3 + 1
    assert [m.out_channels for m in wrn[:-1] if m.kernel_size == (1, 1)] == [64, 128, 256]
    assert wrn[-1].in_features == 256
    two = _layers(zoo["two_layer"])
    assert [tuple(m.weight.shape) for _, m in two] == [(30, 20), (1, 30)]


def test_other_options_build():
    assert models.mnist_cnn(num_classes=3, in_channels=2)(torch.rand(2, 2, 28, 28)).shape == (2, 3)
    assert models.vgg16(num_classes=100)(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    assert models.wrn16(num_classes=100, widen=1)(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    assert models.mlp(64, [], 10)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    leaky = models.mlp(5, [4], 2, activation="leaky_relu")
    assert any(isinstance(m, nn.LeakyReLU) for m in leaky.modules())


def test_he_normal_initialization(zoo):
    """Per layer: sample std within 4 standard errors (σ/√(2n)) of √(2/fan_in), mean within
    4σ/√n of 0; pooled over every layer, the standardized weights pass a KS test for N(0, 1)."""
    pooled = []
    gen = np.random.default_rng(0)
    for name, model in zoo.items():
        for lname, m in _layers(model):
            w = m.weight.detach().double().reshape(-1).numpy()
            sigma = math.sqrt(2.0 / _fan_in(m))
            n = w.size
            assert abs(w.std() / sigma - 1) < 4 / math.sqrt(2 * n), (name, lname, w.std(), sigma)
            assert abs(w.mean()) < 4 * sigma / math.sqrt(n), (name, lname)
            pooled.append(gen.choice(w / sigma, size=min(n, 2000), replace=False))
    z = np.concatenate(pooled)
    assert abs(z.std() - 1) < 0.01
    assert sps.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize("name", ["mnist_cnn", "vgg16", "mlp", "two_layer"])
def test_bias_modes(name):
    kw, _, _ = ZOO[name]
    for bias in ("none", "first", "all"):
        layers = _layers(models.build(name, bias=bias, **kw))
        has = [m.bias is not None for _, m in layers]
        want = {"none": [False] * len(layers), "first": [True] + [False] * (len(layers) - 1),
                "all": [True] * len(layers)}[bias]
        assert has == want, (name, bias)
        assert all(float(m.bias.detach().abs().max()) == 0 for _, m in layers if m.bias is not None)
    with pytest.raises(MarginlabError, match="bias must be one of"):
        models.build(name, bias="some", **kw)


@pytest.mark.parametrize("name", ["mnist_cnn", "mlp", "wrn16"])
def test_seed_determines_the_weights(name):
    kw, _, _ = ZOO[name]
    a = models.build(name, seed=5, **kw).state_dict()
    b = models.build(name, seed=5, **kw).state_dict()
    c = models.build(name, seed=6, **kw).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a if "weight" in k)


def test_build_rejects_bad_requests():
    with pytest.raises(MarginlabError, match="unknown model 'resnet'"):
        models.build("resnet")
    with pytest.raises(MarginlabError, match="bad arguments for model 'mlp'"):
        models.build("mlp", in_dim=3, widths=[2], depth=4)
    with pytest.raises(MarginlabError, match="widths must be at least 1, got 0"):
        models.mlp(10, [5, 0], 3)


# ---------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------


def _perturbed(model):
    """Weights that differ from the seed's, so a load that only rebuilds from the spec fails."""
    gen = torch.Generator().manual_seed(99)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("name", ["mnist_cnn", "two_layer", "wrn16"])
def test_zoo_checkpoint_rebuilds_from_metadata_alone(tmp_path, name):
    kw, in_shape, _ = ZOO[name]
    model = _perturbed(models.build(name, **kw) if name != "mnist_cnn"
                       else models.mnist_cnn("first", seed=3))
    extra = {"epoch": 7, "threshold": 1e-10, "test_acc": 0.99}
    path = models.save(model, tmp_path / "sub" / "model-1.safetensors", extra=extra)
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["model-1.safetensors"]
    loaded = models.load(path)
    assert type(loaded) is type(model)
    assert loaded.marginlab_spec == model.marginlab_spec
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    assert all(torch.equal(state[k], loaded_state[k]) for k in state)
    x = torch.rand(in_shape)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    meta = models.metadata(path)
    assert meta == {"spec": model.marginlab_spec, "extra": extra}


def _user_model():
    return nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))


def test_user_model_needs_the_module(tmp_path):
    model = _perturbed(_user_model())
    path = models.save(model, tmp_path / "user.safetensors")
    with pytest.raises(MarginlabError, match="outside the zoo; pass the module"):
        models.load(path)
    loaded = models.load(path, _user_model())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 loaded.state_dict().values()))
    assert models.metadata(path) == {}


def test_file_is_safetensors_without_pickle(tmp_path):
    """The file is exactly: 8-byte header length, a JSON header, raw tensor bytes."""
    model = models.mlp(6, [5], 3, bias="first")
    path = models.save(model, tmp_path / "m.safetensors", extra={"epoch": 1})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == "marginlab-model/1"
    assert json.loads(meta["spec"])["name"] == "mlp"
    assert set(header) == set(model.state_dict())
    spans = sorted(tuple(v["data_offsets"]) for v in header.values())
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert len(raw) == 8 + n + spans[-1][1]  # nothing else in the file
    for k, v in header.items():
        start, end = v["data_offsets"]
        t = model.state_dict()[k]
        assert v["dtype"] == "F32" and v["shape"] == list(t.shape)
        assert raw[8 + n + start : 8 + n + end] == t.numpy().tobytes()
    assert not raw.startswith((b"\x80", b"PK"))  # neither a pickle nor a torch zip archive


def _one_line_error(call, pattern):
    with pytest.raises(MarginlabError, match=pattern) as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_checkpoints_raise_one_line_errors(tmp_path):
    model = models.mlp(10, [8], 3)
    good = models.save(model, tmp_path / "good.safetensors")
    raw = good.read_bytes()
    cases = {
        "truncated": raw[: len(raw) // 2],
        "header only": raw[:5],
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
        "huge header": (10**12).to_bytes(8, "little") + b"{}",
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        _one_line_error(lambda p=path: models.load(p), "not a readable safetensors checkpoint")
        _one_line_error(lambda p=path: models.metadata(p), "not a readable safetensors")
    _one_line_error(lambda: models.load(tmp_path / "missing.safetensors"), "no checkpoint at")
    _one_line_error(lambda: models.load(tmp_path), "no checkpoint at")
    _one_line_error(lambda: models.load(good, models.mlp(10, [9], 3)),
                    r"fc1\.weight has shape \(8, 10\), model expects \(9, 10\)")
    _one_line_error(lambda: models.load(good, models.mlp(10, [8, 8], 3)),
                    r"does not fit the model \(missing: \['fc3\.weight'\]")
    _one_line_error(lambda: models.load(good, models.mlp(10, [8], 3, bias="first")),
                    r"unexpected: \[\]|missing: \['fc1\.bias'\]")


def test_corrupt_metadata_raises_one_line_errors(tmp_path):
    tensors = {k: v.contiguous() for k, v in models.mlp(10, [8], 3).state_dict().items()}
    cases = {
        "spec not json": ({"spec": "nope{"}, "not valid JSON"),
        "spec without kwargs": ({"spec": json.dumps({"name": "mlp"})}, "malformed"),
        "spec a list": ({"spec": "[1, 2]"}, "malformed"),
        "unknown zoo name": ({"spec": json.dumps({"name": "resnet", "kwargs": {}})},
                             "unknown model"),
        "wrong kwargs": ({"spec": json.dumps({"name": "mlp", "kwargs": {"depth": 3}})},
                         "bad arguments"),
    }
    for name, (meta, pattern) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata=meta)
        _one_line_error(lambda p=path: models.load(p), pattern)
    path = tmp_path / "extra.safetensors"
    save_file(tensors, str(path), metadata={"extra": "{{"})
    _one_line_error(lambda: models.metadata(path), "'extra' is not valid JSON")
