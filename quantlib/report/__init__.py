"""The human-readable report: report.json's content rendered as one offline HTML page.

Standard library only, so anything that holds a report.json (quantlib, a worker, a
script) can render it without torch.
"""

from quantlib.report.page import REPORT_HTML, render_report, write_report_html

__all__ = ["REPORT_HTML", "render_report", "write_report_html"]
