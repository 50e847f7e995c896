"""The torch device of a run, resolved once, with the float32 precision the papers' numbers need.

On NVIDIA GPUs since Ampere, PyTorch may run float32 matrix products and convolutions in TF32
(a 10-bit mantissa, about 1e-3 relative precision; convolutions do by default). At the losses of
the paper's runs (10^-881, margins q ≈ 2000) an error of that size would decide the loss-based
schedule's accept/redo steps and blur every margin, so :func:`configure` turns TF32 off for
matrix products and cuDNN convolutions unless the caller allows it for speed. The choice is
process-wide (these are torch's global flags) and is recorded in every run's ``config.json``.
"""

from __future__ import annotations

import torch

from marginlab import validate

__all__ = ["configure", "tf32_enabled"]

_allow_tf32: bool | None = None  # the last explicit choice in this process


def configure(device: str | torch.device, *, allow_tf32: bool | None = None) -> dict:
    """Resolve ``device`` and set its float32 precision; returns ``{"device", "tf32"}``.

    Args:
        device: a torch device (``cpu``, ``cuda``, ``cuda:1``, ...).
        allow_tf32: allow TF32 matrix products and convolutions on CUDA (faster, about 1e-3
            relative precision). None keeps the last explicit choice of this process, and
            off when there was none.

    Raises:
        MarginlabError: CUDA was asked for and is not available, or the name is not a device.
    """
    global _allow_tf32
    dev = torch.device(validate.device(device, "device"))  # one check of device names
    if allow_tf32 is not None:
        _allow_tf32 = bool(allow_tf32)
    allow = bool(_allow_tf32)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        return {"device": str(dev), "tf32": allow}
    return {"device": str(dev), "tf32": False}


def tf32_enabled(device: str | torch.device) -> bool:
    """Whether float32 work on ``device`` may currently use TF32 (always False off CUDA)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        return False
    if dev.type != "cuda":
        return False
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
