"""HTML reports of tuning sessions: per-spec pages, the run's index and the GitHub job summary."""

from __future__ import annotations

from pytest_autotuner.report.html import render_report, write_index, write_report
from pytest_autotuner.report.summary import append_step_summary, github_step_summary

__all__ = ["append_step_summary", "github_step_summary", "render_report", "write_index", "write_report"]
