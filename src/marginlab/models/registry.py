"""The registry of zoo models: each name, its constructor, and how a training run builds it.

A model enters the registry with one :func:`register` call on its constructor, which declares
how the model is built for a data split (its input shape and number of outputs) from a training
run's settings (:class:`ModelSettings`: bias, widths, width, seed), which of those settings it
uses, and its own checks (the input shapes, bias modes and number of hidden widths it accepts).
``marginlab train --model NAME``, :func:`marginlab.train.spec.build_model` and the checkpoint
loader find every model here by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from torch import nn

from marginlab import validate
from marginlab.errors import MarginlabError

__all__ = ["BIAS_MODES", "MAX_WIDTH", "MODELS", "REGISTRY", "SETTINGS", "BiasMode",
           "ModelEntry", "ModelSettings", "build", "entry", "flat_size", "register"]

BiasMode = Literal["none", "first", "all"]
BIAS_MODES = ("none", "first", "all")
MAX_WIDTH = 64.0  # the largest width multiplier a constructor accepts
SETTINGS = ("bias", "widths", "width", "seed")  # the fields of ModelSettings

# name -> constructor, and name -> how a training run builds it
MODELS: dict[str, Callable[..., nn.Module]] = {}
REGISTRY: dict[str, ModelEntry] = {}


@dataclass(frozen=True)
class ModelSettings:
    """The settings of a training run that a zoo model is built from.

    Attributes:
        bias: ``none``, ``first`` or ``all`` (see :mod:`marginlab.models.zoo`).
        widths: hidden widths of the fully connected models, input to output.
        width: multiplier on every hidden layer's size of the convolutional models.
        seed: initialization seed.
    """

    bias: str
    widths: Sequence[int]
    width: float
    seed: int


# (settings, input shape of one sample, number of outputs or None) -> constructor arguments
Arguments = Callable[[ModelSettings, tuple[int, ...], "int | None"], dict[str, Any]]


def _shape_text(shape: Sequence[int | None]) -> str:
    return "x".join("N" if s is None else str(s) for s in shape)


@dataclass(frozen=True)
class ModelEntry:
    """How a training run builds one zoo model, and what it accepts.

    Attributes:
        name: the registry name.
        constructor: the zoo function.
        arguments: the constructor's keyword arguments for ``(settings, input_shape,
            n_outputs)``, where ``input_shape`` is one sample's shape, e.g. (1, 28, 28).
        uses: the settings (of :data:`SETTINGS`) the model is built from; the others are
            ignored and not checked.
        input_shape: the sample shape it needs, ``None`` entries free (e.g. (None, 32, 32):
            32×32 images with any number of channels); ``None``: any shape (flattened).
        example_input: a sample shape to build it for without data (homogeneity checks).
        biases: the bias modes it can be built with.
        n_widths: the number of hidden widths it takes (``None``: any, at least one), if it
            uses ``widths``.
        default_widths: its hidden widths when a run does not give any (``None``: the run's).
        inputs_note: a hint added to the input-shape error, e.g. which data sets fit.
    """

    name: str
    constructor: Callable[..., nn.Module]
    arguments: Arguments
    uses: tuple[str, ...]
    input_shape: tuple[int | None, ...] | None
    example_input: tuple[int, ...]
    biases: tuple[str, ...] = BIAS_MODES
    n_widths: int | None = None
    default_widths: tuple[int, ...] | None = None
    inputs_note: str = ""

    def check(self, settings: ModelSettings,
              label: Callable[[str], str] = str) -> ModelSettings:
        """The settings the model uses, checked and normalized (the others as given).

        Args:
            settings: the run's settings.
            label: how a message names a setting (e.g. by its command-line option).

        Raises:
            MarginlabError: one line naming the setting and the model.
        """
        if settings.bias not in BIAS_MODES:
            raise MarginlabError(f"{label('bias')} must be one of {', '.join(BIAS_MODES)}, got "
                                 f"{settings.bias!r}")
        if self.biases == ("none",) and settings.bias != "none":
            raise MarginlabError(f"{self.name} is built without biases; use {label('bias')} "
                                 f"none (got {settings.bias!r})")
        if settings.bias not in self.biases:
            raise MarginlabError(f"{self.name} takes {label('bias')} {' or '.join(self.biases)}"
                                 f", got {settings.bias!r}")
        if "widths" in self.uses:
            widths = validate.widths(settings.widths, f"{label('widths')} ({self.name})",
                                     count=self.n_widths)
            if max(widths) > 1 << 24:
                raise MarginlabError(f"{label('widths')} ({self.name}) must be at most "
                                     f"{1 << 24}, got {max(widths)}")
            settings = replace(settings, widths=widths)
        if "width" in self.uses:
            settings = replace(settings, width=validate.number(
                settings.width, label("width"), positive=True, maximum=MAX_WIDTH))
        if "seed" in self.uses:
            settings = replace(settings, seed=validate.integer(
                settings.seed, label("seed"), minimum=0, maximum=2**63 - 1))
        return settings

    def check_input(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """``input_shape`` (one sample's) if the model takes it, else a one-line error."""
        shape = tuple(int(s) for s in input_shape)
        need = self.input_shape
        if need is not None and (len(shape) != len(need) or any(
                n is not None and n != s for n, s in zip(need, shape))):
            note = f" ({self.inputs_note})" if self.inputs_note else ""
            raise MarginlabError(f"{self.name} needs {_shape_text(need)} inputs{note}, got "
                                 f"{_shape_text(shape) or 'scalars'}")
        return shape

    def build(self, settings: ModelSettings, input_shape: Sequence[int],
              n_outputs: int | None = None) -> nn.Module:
        """The model for samples of ``input_shape`` and ``n_outputs`` outputs (classes, or
        regression targets; ``None``: the constructor's default), from ``settings``."""
        settings = self.check(settings)
        shape = self.check_input(input_shape)
        kwargs = self.arguments(settings, shape, n_outputs)
        return self.constructor(**{k: v for k, v in kwargs.items() if v is not None})


def register(*, arguments: Arguments, uses: Sequence[str],
             input_shape: tuple[int | None, ...] | None, example_input: tuple[int, ...],
             biases: Sequence[str] = BIAS_MODES, n_widths: int | None = None,
             default_widths: Sequence[int] | None = None, inputs_note: str = ""
             ) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Enter a zoo constructor in :data:`MODELS` and :data:`REGISTRY` under its own name.

    The arguments are the :class:`ModelEntry` fields of the same names.
    """
    unknown = sorted(set(uses) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown model settings {unknown}; expected some of {SETTINGS}")

    def enter(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = fn
        REGISTRY[name] = ModelEntry(
            name, fn, arguments, tuple(uses), input_shape, tuple(example_input),
            tuple(biases), n_widths, None if default_widths is None else tuple(default_widths),
            inputs_note)
        return fn

    return enter


def entry(name: str, label: str | None = None) -> ModelEntry:
    """The registry entry of ``name``, or a one-line error listing the registered models
    (naming the setting as ``label``, e.g. ``--model``, if given)."""
    if not isinstance(name, str) or name not in REGISTRY:
        where = f" ({label})" if label else ""
        raise MarginlabError(f"unknown model {name!r}{where}; expected one of "
                             f"{', '.join(REGISTRY)}")
    return REGISTRY[name]


def build(name: str, **kwargs) -> nn.Module:
    """Build a zoo model by name with its constructor's keyword arguments."""
    if name not in MODELS:
        raise MarginlabError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    try:
        return MODELS[name](**kwargs)
    except TypeError as exc:
        raise MarginlabError(f"bad arguments for model {name!r}: {exc}") from None


def flat_size(input_shape: Sequence[int]) -> int:
    """The number of input features of a sample of ``input_shape`` (its product)."""
    return int(math.prod(input_shape))
