"""Model zoo of the papers' networks, and pickle-free checkpoints.

Every constructor takes ``bias`` ∈ {"none", "first", "all"}: with "none" or "first" the network
is homogeneous in its parameters (the first layer's bias counts as part of its weight, Lyu & Li
Appendix K); "all" is the ordinary network with a bias in every layer. Weights are He-normal
(fan-in, ReLU gain), biases zero, and the ``seed`` fixes both.

Checkpoints are safetensors files whose metadata holds the constructor's name and arguments,
so :func:`load` rebuilds the model without unpickling anything.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from marginlab import validate
from marginlab.errors import MarginlabError

__all__ = [
    "MODELS",
    "BiasMode",
    "build",
    "load",
    "load_state",
    "mlp",
    "mnist_cnn",
    "save",
    "two_layer",
    "vgg16",
    "wrn16",
]

BiasMode = Literal["none", "first", "all"]
BIAS_MODES = ("none", "first", "all")
MODELS: dict[str, Callable[..., nn.Module]] = {}


def _registered(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    MODELS[fn.__name__] = fn
    return fn


def _check_bias(bias: str) -> None:
    if bias not in BIAS_MODES:
        raise MarginlabError(f"bias must be one of {', '.join(BIAS_MODES)}, got {bias!r}")


def _size(value: object, name: str) -> int:
    """A layer size (inputs, outputs, channels, classes): a positive integer."""
    return validate.integer(value, name, minimum=1, maximum=1 << 24)


def _seed(value: object) -> int:
    return validate.integer(value, "seed", minimum=0, maximum=2**63 - 1)


def _width(value: object) -> float:
    return validate.number(value, "width", positive=True, maximum=64.0)


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


@_registered
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


@_registered
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


@_registered
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


@_registered
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


@_registered
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


def build(name: str, **kwargs) -> nn.Module:
    """Build a zoo model by name with keyword arguments."""
    if name not in MODELS:
        raise MarginlabError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise MarginlabError(f"bad arguments for model {name!r}: {exc}") from None


def save(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
    """Write the model's parameters and buffers to a safetensors file, atomically.

    The metadata records the zoo constructor and its arguments (when the model came from the
    zoo), so :func:`load` can rebuild it; ``extra`` adds JSON-serializable metadata.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "marginlab-model/1"}
    spec = getattr(model, "marginlab_spec", None)
    if spec is not None:
        meta["spec"] = json.dumps(spec)
    if extra:
        meta["extra"] = json.dumps(extra)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise MarginlabError(f"no checkpoint at {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MarginlabError(f"{path} is not a readable safetensors checkpoint ({exc})") from None
    return tensors, meta


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save`.

    Args:
        path: the safetensors file.
        model: for models outside the zoo, a module of the right architecture to load the
            weights into; for zoo checkpoints it may be omitted.

    Raises:
        MarginlabError: missing or corrupt file, or weights that do not fit the model.
    """
    path = Path(path)
    tensors, meta = _read(path)
    fmt = meta.get("format")
    if fmt is not None and not fmt.startswith("marginlab-model/"):
        raise MarginlabError(f"{path}: metadata format {fmt[:40]!r} is not a marginlab model")
    if model is None:
        if "spec" not in meta:
            raise MarginlabError(
                f"{path} holds weights of a model outside the zoo; pass the module to load into"
            )
        spec = _json_metadata(meta, "spec", path)
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
                and isinstance(spec.get("kwargs"), dict)):
            raise MarginlabError(f"{path}: the model spec in its metadata is malformed")
        try:
            model = build(spec["name"], **spec["kwargs"])
        except MarginlabError as exc:
            raise MarginlabError(f"{path}: the model spec in its metadata is invalid: {exc}"
                                 ) from None
        dtypes = {v.dtype for v in tensors.values() if v.is_floating_point()}
        if len(dtypes) == 1:  # rebuild in the dtype it was saved in (e.g. float64)
            model.to(dtypes.pop())
    load_state(model, tensors, source=str(path))
    return model


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str = "") -> None:
    """Copy ``tensors`` into ``model`` in place, with a one-line error on any mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise MarginlabError(
            f"checkpoint {source} does not fit the model (missing: {missing[:3]}, "
            f"unexpected: {unexpected[:3]})"
        )
    for k, v in tensors.items():
        if own[k].shape != v.shape:
            raise MarginlabError(
                f"checkpoint {source}: {k} has shape {tuple(v.shape)}, model expects "
                f"{tuple(own[k].shape)}"
            )
        if own[k].is_floating_point() and not v.is_floating_point():
            raise MarginlabError(f"checkpoint {source}: {k} holds {v.dtype} values, model "
                                 f"expects floating point")
    model.load_state_dict(tensors)


def metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a checkpoint: ``spec`` and ``extra`` decoded."""
    _, meta = _read(Path(path))
    out: dict = {}
    for key in ("spec", "extra"):
        if key in meta:
            out[key] = _json_metadata(meta, key, Path(path))
    return out


def _json_metadata(meta: dict[str, str], key: str, path: Path):
    try:
        return json.loads(meta[key])
    except (json.JSONDecodeError, RecursionError):
        raise MarginlabError(f"{path}: metadata field {key!r} is not valid JSON") from None
