"""The user's report (GDPR Art. 15) as one standalone HTML page, rendered from
``templates/user_report.html`` for the API and the CLI alike (no app needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

__all__ = ["user_report_html"]

_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True),
)


def user_report_html(report: dict[str, Any]) -> str:
    """``report``: a :func:`broker.flows.user_report.user_report`; the Art. 15 sections first."""
    sections = report.get("art15") or {}
    titles = {c["category"]: c["title"] for c in sections.get("categories", [])}
    return _ENV.get_template("user_report.html").render(r=report, titles=titles)
