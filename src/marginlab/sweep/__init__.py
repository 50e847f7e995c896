"""Sweeps: one trial over a grid of settings × seeds, in parallel, resumable, with mean ± std.

A :class:`SweepSpec` names the trial (a registered experiment's ``trial`` or one training run)
and the grid; :func:`run_sweep` runs the trials on worker processes or a Ray cluster, appending
each result to ``OUT/trials.jsonl`` as it finishes, and writes a report with
:func:`aggregate`'s mean ± std over seeds::

    spec = SweepSpec.from_dict({"train": {"model": "mlp", "data": "digits", "epochs": 3},
                                "grid": {"widths": [[64], [128]]}, "seeds": [0, 1, 2]})
    result = run_sweep(spec, "runs/widths", workers=2)
    rows = aggregate(result.records, x="widths", y="test_acc")
"""

from marginlab.sweep.aggregate import AggregateRow, aggregate, plot_rows, write_report
from marginlab.sweep.runner import SweepResult, TrialRecord, read_records, run_sweep
from marginlab.sweep.spec import ReportSpec, SweepSpec, Trial, expand, for_experiment, load_spec

__all__ = [
    "AggregateRow",
    "ReportSpec",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialRecord",
    "aggregate",
    "expand",
    "for_experiment",
    "load_spec",
    "plot_rows",
    "read_records",
    "run_sweep",
    "write_report",
]
