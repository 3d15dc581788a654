"""What a tuning item shows: its report view (``view.py``, built once from the outcome by the builders), and the
renderers that read only the view: per-spec pages and the run's index (``html.py``), plots, the terminal summary
(``terminal.py``) and the GitHub job summary (``summary.py``)."""

from __future__ import annotations

from pytest_autotuner.report.html import render_report, write_index, write_report
from pytest_autotuner.report.summary import append_step_summary, github_step_summary
from pytest_autotuner.report.view import ReportView, report_view

__all__ = [
    "ReportView",
    "append_step_summary",
    "github_step_summary",
    "render_report",
    "report_view",
    "write_index",
    "write_report",
]
