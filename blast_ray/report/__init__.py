"""Run reports: the console summary and the self-contained report.html."""

from blast_ray.report.console import format_metrics_table, print_summary
from blast_ray.report.stage import build_report, find_baselines

__all__ = ["format_metrics_table", "print_summary", "build_report", "find_baselines"]
