"""`edgeq report`: Markdown and PNG charts from the result JSON of bench, eval and plan (no torch needed)."""
from .writer import ReportResult, published_ratios, write_report

__all__ = ["ReportResult", "published_ratios", "write_report"]
