"""The page of one training run: ``RUN_DIR/report.html`` and ``report.md``, built from what the
run directory holds (its layout is owned by :class:`~marginlab.train.rundir.RunDir`), including
the sections other analyses left in ``RUN_DIR/report/`` (robustness, convergence analysis).
"""

from __future__ import annotations

import os
from pathlib import Path

from marginlab import models
from marginlab.io.report import Report
from marginlab.train.rundir import RunDir

__all__ = ["SNAPSHOT_HEADERS", "snapshot_rows", "write_run_report"]


SNAPSHOT_HEADERS = ["snapshot", "epoch", "log10 train loss", "normalized margin (multi)",
                    "normalized margin", "train acc", "test acc"]


def snapshot_rows(run_dir: Path) -> list[list]:
    """Table-1-style rows from the snapshots' metadata."""
    rows = []
    for path in RunDir(run_dir).snapshot_paths():
        extra = models.metadata(path).get("extra", {})
        rows.append([path.stem, extra.get("epoch"), extra.get("log10_loss_mean"),
                     extra.get("normalized_margin_multi"), extra.get("normalized_margin"),
                     extra.get("train_acc"), extra.get("test_acc")])
    return rows


def write_run_report(run_dir: str | os.PathLike) -> Path:
    """Write ``RUN_DIR/report.html`` and ``report.md`` from what the run directory holds."""
    run = RunDir(run_dir)
    config = run.config()
    metrics = run.metrics()
    rep = Report(f"marginlab run: {run.path.name}")
    model = config.get("model", {})
    rep.paragraph(
        f"Model {model.get('name')} {model.get('kwargs', {})}; data {config.get('data')}; "
        f"schedule {config.get('schedule')}; loss {config.get('loss')}; batch size "
        f"{config.get('batch_size')}; seed {config.get('seed')}; device {config.get('device')}."
    )
    if metrics:
        last = metrics[-1]
        rep.heading("Final epoch")
        keys = ["epoch", "log10_loss_mean", "normalized_margin", "normalized_margin_multi",
                "smoothed_margin", "smoothed_margin_multi", "q_min", "rho", "train_acc",
                "test_acc", "alpha", "wall_time"]
        rep.table(["quantity", "value"], [[k, last.get(k)] for k in keys if k in last])
    rows = snapshot_rows(run.path)
    if rows:
        rep.heading("Snapshots (Lyu & Li, Table 1 style)")
        rep.table(SNAPSHOT_HEADERS, rows)
    for png in sorted(run.plots_dir.glob("*.png")):
        if not png.name.startswith(("robust", "analysis")):
            rep.image(png.relative_to(run.path).as_posix(), png.stem)
    for frag in sorted(run.fragments_dir.glob("*.html")):
        md = frag.with_suffix(".md")
        rep.raw(frag.read_text(encoding="utf-8"),
                md.read_text(encoding="utf-8") if md.exists() else "")
    rep.heading("Configuration")
    rep.code(run.config_path.read_text(encoding="utf-8"))
    return rep.write(run.path)
