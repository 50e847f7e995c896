"""An experiment's output directory: created for one experiment, marked with
``experiment.json``, and never taken over from something else.

The experiments run their trials (training runs, measurements) on the sweep engine,
:func:`marginlab.sweep.run_trials`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from marginlab.errors import MarginlabError
from marginlab.experiments import RunRequest
from marginlab.io import storage

__all__ = ["prepare_output"]

MARKER = "experiment.json"


def prepare_output(request: RunRequest, experiment_id: str) -> Path:
    """Create ``request.out``, refusing to touch a directory holding something else.

    An existing directory of the same experiment is continued with ``resume`` or replaced with
    ``overwrite``; any other non-empty directory is an error.
    """
    out = request.out
    if out.exists() and any(out.iterdir()):
        marker = out / MARKER
        if not marker.exists():
            raise MarginlabError(f"{out} is not empty and holds no marginlab experiment; "
                                 "choose another directory")
        if request.overwrite:
            shutil.rmtree(out)
        elif not request.resume:
            raise MarginlabError(f"{out} already holds a run of "
                                 f"{storage.read_json(marker).get('id')}; use --resume to "
                                 "continue it or --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    storage.write_json(out / MARKER, {"id": experiment_id, "scale": request.scale,
                                      "settings": dict(request.settings),
                                      "device": request.device, "seed": request.seed})
    return out
