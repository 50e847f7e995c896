"""Models: the zoo of the papers' networks, the registry that builds them for a training run,
and pickle-free checkpoints (one module each).

``marginlab.models.mlp(...)``, ``models.build(name, **kwargs)``, ``models.save`` / ``load`` work
as before the package was split; :func:`entry` gives a model's registry entry, which builds it
for a data split from a run's :class:`ModelSettings` (see :mod:`marginlab.models.registry`).
"""

from marginlab.models.checkpoint import load, load_state, metadata, save
from marginlab.models.registry import (
    BIAS_MODES,
    MODELS,
    REGISTRY,
    BiasMode,
    ModelEntry,
    ModelSettings,
    build,
    entry,
    register,
)
from marginlab.models.zoo import VGG16_CONFIG, mlp, mnist_cnn, two_layer, vgg16, wrn16

__all__ = [
    "BIAS_MODES",
    "MODELS",
    "REGISTRY",
    "VGG16_CONFIG",
    "BiasMode",
    "ModelEntry",
    "ModelSettings",
    "build",
    "entry",
    "load",
    "load_state",
    "metadata",
    "mlp",
    "mnist_cnn",
    "register",
    "save",
    "two_layer",
    "vgg16",
    "wrn16",
]
