"""The environment record: versions and machine facts written beside every result.

:func:`versions` is the one version probe (what produced a number); :func:`environment` adds
the facts of one run (device, threads, commit, start time).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import numpy
import scipy
import torch

__all__ = ["environment", "git_commit", "versions"]


def _marginlab_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("marginlab")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+local"


def versions() -> dict:
    """Versions of marginlab, Python and the numeric libraries, and the machine's architecture."""
    return {"marginlab": _marginlab_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine()}


def git_commit() -> str | None:
    """The commit of the source tree marginlab runs from, if it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: str) -> dict:
    """:func:`versions` plus the facts of one run: platform, CPUs, torch threads, device,
    commit and start time."""
    return {
        **versions(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
