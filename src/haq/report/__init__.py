"""Visual reports of search runs (``haq report``): PNG plots and a self-contained HTML page."""

from haq.report.api import make_report

__all__ = ["make_report"]
