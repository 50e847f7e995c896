"""Sweeps: one trial over a grid of settings × seeds, in parallel, resumable, with mean ± std.

A :class:`SweepSpec` names the trial (an experiment's ``trial``, handed over as a
:class:`TrialSource`, or one training run) and the grid; :func:`run_sweep` runs the trials on
worker processes or a Ray cluster, appending each result to ``OUT/trials.jsonl`` as it finishes,
and writes a report with :func:`aggregate`'s mean ± std over seeds (:func:`mean_std`: ddof = 1)::

    spec = SweepSpec.from_dict({"train": {"model": "mlp", "data": "digits", "epochs": 3},
                                "grid": {"widths": [[64], [128]]}, "seeds": [0, 1, 2]})
    result = run_sweep(spec, "runs/widths", workers=2)
    rows = aggregate(result.records, x="widths", y="test_acc")

This package is the only runner and process pool of marginlab, and holds the trial id
(:func:`trial_id`) and the version record (:func:`versions`) experiments write with results.
"""

from marginlab.io.environment import versions
from marginlab.sweep.aggregate import (
    AggregateRow,
    MeanStd,
    aggregate,
    format_mean_std,
    mean_std,
    plot_rows,
    write_report,
)
from marginlab.sweep.runner import (
    SweepResult,
    TrialRecord,
    TrialsRun,
    read_records,
    run_sweep,
    run_trials,
)
from marginlab.sweep.spec import (
    ReportSpec,
    SweepSpec,
    Trial,
    TrialSource,
    expand,
    load_spec,
    trial_id,
)

__all__ = [
    "AggregateRow",
    "MeanStd",
    "ReportSpec",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialRecord",
    "TrialSource",
    "TrialsRun",
    "aggregate",
    "expand",
    "format_mean_std",
    "load_spec",
    "mean_std",
    "plot_rows",
    "read_records",
    "run_sweep",
    "run_trials",
    "trial_id",
    "versions",
    "write_report",
]
