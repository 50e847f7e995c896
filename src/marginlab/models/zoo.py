"""The model zoo: the papers' networks, each registered with how a training run builds it.

Every constructor takes ``bias`` ∈ {"none", "first", "all"}: with "none" or "first" the network
is homogeneous in its parameters (the first layer's bias counts as part of its weight, Lyu & Li
Appendix K); "all" is the ordinary network with a bias in every layer. Weights are He-normal
(fan-in, ReLU gain), biases zero, and the ``seed`` fixes both. Each model remembers its
constructor's name and arguments (``marginlab_spec``), so a checkpoint can rebuild it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from marginlab import validate
from marginlab.errors import MarginlabError
from marginlab.models.registry import BIAS_MODES, MAX_WIDTH, BiasMode, flat_size, register

__all__ = ["VGG16_CONFIG", "mlp", "mnist_cnn", "two_layer", "vgg16", "wrn16"]


def _check_bias(bias: str) -> None:
    if bias not in BIAS_MODES:
        raise MarginlabError(f"bias must be one of {', '.join(BIAS_MODES)}, got {bias!r}")


def _size(value: object, name: str) -> int:
    """A layer size (inputs, outputs, channels, classes): a positive integer."""
    return validate.integer(value, name, minimum=1, maximum=1 << 24)


def _seed(value: object) -> int:
    return validate.integer(value, "seed", minimum=0, maximum=2**63 - 1)


def _width(value: object) -> float:
    return validate.number(value, "width", positive=True, maximum=MAX_WIDTH)


def _init(model: nn.Module, seed: int) -> None:
    """He-normal weights (std = sqrt(2 / fan_in)), zero biases, from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in)
                )
                if module.bias is not None:
                    module.bias.zero_()


def _tag(model: nn.Module, name: str, **kwargs) -> nn.Module:
    """Remember how the model was built, for checkpoints that rebuild it."""
    model.marginlab_spec = {"name": name, "kwargs": kwargs}  # type: ignore[assignment]
    return model


def _layer_bias(bias: str, index: int) -> bool:
    return bias == "all" or (bias == "first" and index == 0)


@register(
    uses=("bias", "width", "seed"), input_shape=(1, 28, 28), example_input=(1, 28, 28),
    inputs_note="data mnist5k or mnist",
    arguments=lambda s, shape, n_out: {"bias": s.bias, "num_classes": n_out,
                                       "in_channels": shape[0], "width": s.width,
                                       "seed": s.seed})
def mnist_cnn(bias: BiasMode = "none", *, num_classes: int = 10, in_channels: int = 1,
              width: float = 1.0, seed: int = 0) -> nn.Module:
    """The MNIST-challenge CNN of Lyu & Li, Appendix K: conv32 5×5 – maxpool – conv64 3×3 –
    maxpool – fc1024 – fc10, "same" padding, for 28×28 inputs. Homogeneous of order 4 unless
    ``bias="all"``. ``width`` scales every hidden layer (1.0 is the paper's network; smaller
    widths give the same architecture at CPU cost)."""
    _check_bias(bias)
    num_classes, in_channels = _size(num_classes, "num_classes"), _size(in_channels, "in_channels")
    width, seed = _width(width), _seed(seed)
    c1, c2, h = (max(1, round(k * width)) for k in (32, 64, 1024))
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(in_channels, c1, 5, padding=2, bias=_layer_bias(bias, 0)))
    model.add_module("relu1", nn.ReLU())
    model.add_module("pool1", nn.MaxPool2d(2))
    model.add_module("conv2", nn.Conv2d(c1, c2, 3, padding=1, bias=_layer_bias(bias, 1)))
    model.add_module("relu2", nn.ReLU())
    model.add_module("pool2", nn.MaxPool2d(2))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc1", nn.Linear(c2 * 7 * 7, h, bias=_layer_bias(bias, 2)))
    model.add_module("relu3", nn.ReLU())
    model.add_module("fc2", nn.Linear(h, num_classes, bias=_layer_bias(bias, 3)))
    _init(model, seed)
    spec = {"bias": bias, "num_classes": num_classes, "in_channels": in_channels, "seed": seed}
    if width != 1.0:
        spec["width"] = width
    return _tag(model, "mnist_cnn", **spec)


VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")


@register(
    uses=("bias", "width", "seed"), input_shape=(None, 32, 32), example_input=(3, 32, 32),
    inputs_note="data cifar10 or cifar100",
    arguments=lambda s, shape, n_out: {"bias": s.bias, "num_classes": n_out,
                                       "in_channels": shape[0], "width": s.width,
                                       "seed": s.seed})
def vgg16(bias: BiasMode = "none", *, num_classes: int = 10, in_channels: int = 3,
          width: float = 1.0, seed: int = 0) -> nn.Module:
    """The CIFAR-10 VGG-16 variant of Lyu & Li, Appendix K (no batch-norm): conv64×2, pool,
    conv128×2, pool, conv256×3, pool, conv512×3, pool, conv512×3, pool, fc10; 3×3 convs with
    "same" padding, for 32×32 inputs. Homogeneous of order 14 unless ``bias="all"``.
    ``width`` scales every layer's channels (1.0 is the paper's network)."""
    _check_bias(bias)
    num_classes, in_channels = _size(num_classes, "num_classes"), _size(in_channels, "in_channels")
    width, seed = _width(width), _seed(seed)
    model = nn.Sequential()
    channels, layer, block = in_channels, 0, 1
    for item in VGG16_CONFIG:
        if item == "M":
            model.add_module(f"pool{block}", nn.MaxPool2d(2))
            block += 1
            continue
        c = max(1, round(item * width))
        model.add_module(f"conv{layer + 1}",
                         nn.Conv2d(channels, c, 3, padding=1, bias=_layer_bias(bias, layer)))
        model.add_module(f"relu{layer + 1}", nn.ReLU())
        channels, layer = c, layer + 1
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc", nn.Linear(channels, num_classes, bias=_layer_bias(bias, layer)))
    _init(model, seed)
    spec = {"bias": bias, "num_classes": num_classes, "in_channels": in_channels, "seed": seed}
    if width != 1.0:
        spec["width"] = width
    return _tag(model, "vgg16", **spec)


@register(
    uses=("bias", "widths", "seed"), input_shape=None, example_input=(784,),
    arguments=lambda s, shape, n_out: {"in_dim": flat_size(shape), "widths": list(s.widths),
                                       "out_dim": n_out, "bias": s.bias, "seed": s.seed})
def mlp(in_dim: int, widths: Sequence[int], out_dim: int = 10, *, bias: BiasMode = "none",
        activation: Literal["relu", "leaky_relu"] = "relu", seed: int = 0) -> nn.Module:
    """A fully connected ReLU network in_dim → widths… → out_dim; inputs are flattened.
    Homogeneous of order len(widths) + 1 unless ``bias="all"``."""
    _check_bias(bias)
    in_dim, out_dim = _size(in_dim, "in_dim"), _size(out_dim, "out_dim")
    widths = validate.widths(widths, "widths", allow_empty=True)
    if any(w > 1 << 24 for w in widths):
        raise MarginlabError(f"widths must be at most {1 << 24}, got {max(widths)}")
    if activation not in ("relu", "leaky_relu"):
        raise MarginlabError(f"activation must be relu or leaky_relu, got {activation!r}")
    seed = _seed(seed)
    model = nn.Sequential()
    model.add_module("flatten", nn.Flatten())
    dims = [in_dim, *widths, out_dim]
    for i in range(len(dims) - 1):
        model.add_module(f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1], bias=_layer_bias(bias, i)))
        if i < len(dims) - 2:
            act = nn.ReLU() if activation == "relu" else nn.LeakyReLU(0.1)
            model.add_module(f"act{i + 1}", act)
    _init(model, seed)
    return _tag(model, "mlp", in_dim=in_dim, widths=list(widths), out_dim=out_dim, bias=bias,
                activation=activation, seed=seed)


@register(
    uses=("bias", "widths", "seed"), input_shape=None, example_input=(784,), n_widths=1,
    default_widths=(100,),
    arguments=lambda s, shape, n_out: {"d": flat_size(shape), "m": s.widths[0],
                                       "out_dim": n_out, "bias": s.bias, "seed": s.seed})
def two_layer(d: int, m: int, out_dim: int = 1, *, bias: BiasMode = "none",
              seed: int = 0) -> nn.Module:
    """f(x) = Σ_j a_j relu(w_jᵀx) (Wei et al., Section 4): d inputs, m hidden units.
    Homogeneous of order 2 unless ``bias="all"``."""
    d, m = _size(d, "d"), _size(m, "m")
    return _tag(mlp(d, [m], out_dim, bias=bias, seed=seed), "two_layer", d=d, m=m,
                out_dim=out_dim, bias=bias, seed=seed)


class _WideBasic(nn.Module):
    """Pre-activation wide-ResNet block without batch-norm: relu-conv-relu-conv + shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = torch.relu(x)
        y = self.conv2(torch.relu(self.conv1(o)))
        return y + (x if self.shortcut is None else self.shortcut(o))


@register(
    uses=("seed",), input_shape=(None, None, None), example_input=(3, 32, 32),
    biases=("none",),
    arguments=lambda s, shape, n_out: {"num_classes": n_out, "in_channels": shape[0],
                                       "seed": s.seed})
def wrn16(num_classes: int = 10, *, widen: int = 4, in_channels: int = 3,
          seed: int = 0) -> nn.Module:
    """WideResNet-16-``widen`` without batch-norm (Wei et al., Appendix F.4), bias-free.

    Residual sums of paths of different depth make it non-homogeneous; it is used for the
    weight-decay experiments, not for normalized margins.
    """
    num_classes, in_channels = _size(num_classes, "num_classes"), _size(in_channels, "in_channels")
    widen, seed = validate.integer(widen, "widen", minimum=1, maximum=64), _seed(seed)
    widths = [16, 16 * widen, 32 * widen, 64 * widen]
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False))
    cin = widths[0]
    for g, (w, stride) in enumerate(zip(widths[1:], (1, 2, 2))):
        blocks = nn.Sequential(*[_WideBasic(cin if i == 0 else w, w, stride if i == 0 else 1)
                                 for i in range(2)])
        model.add_module(f"group{g + 1}", blocks)
        cin = w
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc", nn.Linear(cin, num_classes, bias=False))
    _init(model, seed)
    return _tag(model, "wrn16", num_classes=num_classes, widen=widen, in_channels=in_channels,
                seed=seed)
