"""`edgeq report`: Markdown and PNG charts from the result JSON of bench, eval and plan (no torch needed)."""
from .writer import ReportResult, published_ratios, report

__all__ = ["ReportResult", "published_ratios", "report"]
