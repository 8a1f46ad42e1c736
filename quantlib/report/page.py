"""report.html: the whole report as one self-contained page.

Inline CSS and inline SVG only: no script, no font, no image and no link leaves the
file, so it opens offline, from an artifact store or a mail attachment, and the API can
serve it under a Content-Security-Policy that forbids everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from quantlib.outputs import OUTPUT_FILES
from quantlib.report.sections import (
    accuracy_section,
    config_section,
    headline,
    layers_section,
    run_section,
    speed_section,
    tuning_section,
)

REPORT_HTML = OUTPUT_FILES["report_html"]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;margin:0;background:#f5f7fa}
main{max-width:1060px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px;border-bottom:2px solid #e4e7eb;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px;color:#3e4c59}
nav a{margin-right:14px;color:#2563eb;text-decoration:none}
.sub{color:#616e7c;margin:0 0 14px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.caveat{border-left:4px solid #b45309;background:#fffbeb;padding:8px 12px;margin:10px 0}
.card{border:1px solid #e4e7eb;border-radius:6px;padding:8px 14px;min-width:150px}
.card .k{color:#616e7c;font-size:12px}.card .v{font-size:20px;font-weight:600}
table{border-collapse:collapse;margin:8px 0}th,td{padding:4px 10px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#f5f7fa;font-weight:600}table.num td+td{text-align:right;font-variant-numeric:tabular-nums}
table.layers td{font-variant-numeric:tabular-nums;white-space:nowrap}table.layers td:first-child{white-space:normal;overflow-wrap:anywhere;min-width:90px}
table.trials ul{margin:0;padding-left:18px}table.trials td:not(:nth-child(2)){white-space:nowrap}tr.best{background:#ecfdf3}
table.kv td:first-child{color:#616e7c}
.facts{display:flex;gap:28px;flex-wrap:wrap}
.note{color:#616e7c;font-size:13px;margin:4px 0}
.verdict{font-size:16px;font-weight:600;padding:8px 12px;border-radius:6px}
.verdict.met{background:#ecfdf3;color:#05603a}.verdict.missed{background:#fef3f2;color:#912018}
pre{background:#f5f7fa;border:1px solid #e4e7eb;padding:10px;overflow:auto;max-height:480px;font-size:12px}
code{font-size:12px}
svg.chart{display:block;max-width:100%;height:auto;margin:4px 0}
svg .grid{stroke:#e4e7eb}svg .tick,svg .legend{font-size:11px;fill:#616e7c}svg .label{font-size:12px;fill:#1f2933}
svg .obs{fill:#cbd2d9}svg .clip{fill:#2563eb}svg .fixed{fill:#f79009}
svg .w8{fill:#2563eb}svg .w4{fill:#9e77ed}svg .sq{fill:#f04438}svg .sf{fill:#12b76a}
"""


def render_report(report: Mapping[str, Any], config_text: str | None = None) -> str:
    """The page for one report.json's content (with or without ``tuning``) and its config.json text."""
    tuning = report.get("tuning")
    sections = [
        headline(report),
        accuracy_section(report),
        speed_section(report),
        tuning_section(tuning) if tuning else "",
        layers_section(report),
        config_section(config_text),
        run_section(report),
    ]
    anchors = [
        ("accuracy", "Accuracy"),
        *([("speed", "Speed")] if report.get("speed") else []),
        *([("tuning", "Tuning")] if tuning else []),
        ("layers", "Layers"),
        ("config", "Config"),
        ("run", "Run"),
    ]
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in anchors)
    layers = len(report.get("layers", {}))
    subtitle = f"{layers} quantized layer{'s' if layers != 1 else ''}"
    if tuning:
        subtitle += f" \u00b7 tuned: {tuning.get('verdict', '')}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>QAT report</title><style>{CSS}</style></head>\n<body><main>"
        f'<h1>Quantization report</h1><p class="sub">{escape(subtitle)}</p><nav>{nav}</nav>'
        + "\n".join(sections)
        + "</main></body></html>\n"
    )


def write_report_html(report: Mapping[str, Any], out_dir: str | Path) -> Path:
    """Write ``report.html`` into ``out_dir``, beside report.json and the config it names.

    Called wherever report.json is written (:func:`quantlib.train.write_report`), so the
    page always shows what report.json says.
    """
    out = Path(out_dir)
    files = report.get("files", {})
    config = out / str(files.get("config", OUTPUT_FILES["config"]))
    config_text = config.read_text(encoding="utf-8") if config.is_file() else None
    path = out / str(files.get("report_html", REPORT_HTML))
    path.write_text(render_report(report, config_text), encoding="utf-8")
    return path
