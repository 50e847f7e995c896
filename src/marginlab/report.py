"""The former path of the report helpers, kept so that existing imports work: page rendering
is :mod:`marginlab.io.report`, the page of a run :mod:`marginlab.run_report`."""

from marginlab.io.report import CSS, Report, fmt
from marginlab.run_report import SNAPSHOT_HEADERS, snapshot_rows, write_run_report

__all__ = ["CSS", "SNAPSHOT_HEADERS", "Report", "fmt", "snapshot_rows", "write_run_report"]
