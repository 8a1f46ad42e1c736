"""The report's sections, each a function from report.json's content to an HTML fragment.

Every value that reaches the page passes through :func:`html.escape` here or in
:mod:`quantlib.report.charts`: layer names, tuning notes and the config come from
users' models and files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from quantlib.figures import METRIC_UNITS, metric_cell, metric_header
from quantlib.report.charts import Bar, Row, bar_chart, linear_axis, log_axis
from quantlib.report.values import db, general, number, pct, plotted

ACCURACY_ROWS = {
    "fp32": "FP32",
    "int8_simulated": "INT8 simulated (PyTorch)",
    "int8_onnxruntime": "INT8 deploy (onnxruntime)",
}
Report = Mapping[str, Any]


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, css: str = "", row_css: Sequence[str] = ()) -> str:
    """A table of already-escaped cells; ``row_css`` marks rows (the best trial)."""
    head = f"<thead><tr>{''.join(f'<th>{h}</th>' for h in headers)}</tr></thead>" if headers else ""
    body = []
    for i, row in enumerate(rows):
        marked = f' class="{row_css[i]}"' if i < len(row_css) and row_css[i] else ""
        body.append(f"<tr{marked}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f'<table class="{css}">{head}<tbody>{"".join(body)}</tbody></table>'


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


@dataclass(frozen=True)
class _Metric:
    """The task's metric as the page shows it: fractions (top-1, mIoU, F1) in %, PSNR in dB."""

    key: str
    name: str
    label: str
    labelled: bool

    @property
    def in_db(self) -> bool:
        return self.name.endswith("_db")

    def value(self, row: Mapping[str, Any]) -> float | None:
        return number(row.get(self.key))

    def shown(self, value: float | None) -> str:
        return f"{metric_cell(value, self.name)} {'dB' if self.in_db else '%'}"

    def drop(self, fp32: float | None, int8: float | None) -> str:
        if fp32 is None or int8 is None:
            return "-"
        return f"{fp32 - int8:.2f} dB" if self.in_db else f"{100 * (fp32 - int8):.2f} points"


def _metric(report: Report) -> _Metric:
    """Reports before tasks existed carry top-1 only, under ``top1``."""
    task = report.get("task") or {"name": "classification", "metric": "top1", "label": "top-1"}
    key = "metric" if "metric" in report["accuracy"]["fp32"] else "top1"
    return _Metric(key, str(task.get("metric")), str(task.get("label")), task.get("name") != "distillation")


def headline(report: Report) -> str:
    """The three numbers people look for first: FP32, deployed INT8 and the drop between them."""
    accuracy = report["accuracy"]
    fp32, deployed = accuracy["fp32"], accuracy["int8_onnxruntime"]
    metric = _metric(report)
    if metric.value(fp32) is not None and metric.value(deployed) is not None:
        cards = [
            (f"FP32 {metric.label}", metric.shown(metric.value(fp32))),
            (f"INT8 deploy {metric.label}", metric.shown(metric.value(deployed))),
            ("drop", metric.drop(metric.value(fp32), metric.value(deployed))),
        ]
    elif number(deployed.get("agreement")) is not None:
        cards = [("INT8 agrees with FP32", f"{pct(deployed.get('agreement'))} %")]
    else:
        cards = []
    cards.append(("output SQNR", f"{db(deployed.get('sqnr_db'))} dB"))
    speed = report.get("speed")
    if speed:
        batch, ratio = speed["batch_sizes"][-1], speed["latency_ratio"][-1]
        cards.append((f"INT8 latency, batch {batch}", f"{ratio:.2f}x FP32"))
        cards.append(("INT8 size", f"{speed['size_ratio']:.2f}x FP32"))
    html = "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>' for k, v in cards
    )
    caveats = "".join(
        f'<p class="caveat" role="note"><strong>Warning:</strong> {escape(str(text))}</p>'
        for text in report.get("caveats", [])
    )
    return f'<div class="cards">{html}</div>{caveats}'


def accuracy_section(report: Report) -> str:
    accuracy = report["accuracy"]
    metric = _metric(report)
    fp32 = metric.value(accuracy["fp32"])
    rows = []
    for key, label in ACCURACY_ROWS.items():
        row = accuracy.get(key)
        if row is None:
            continue
        value = metric.value(row)
        drop = metric.drop(fp32, value).removesuffix(" dB").removesuffix(" points")
        scored = [metric_cell(value, metric.name), drop] if metric.labelled else []
        rows.append([escape(label), *scored, pct(row.get("agreement")), db(row.get("sqnr_db"))])
    drop_unit = "dB" if metric.in_db else "points"
    scored_headers = [metric_header(metric.name, metric.label), f"drop ({drop_unit})"] if metric.labelled else []
    headers = ["model", *scored_headers, "agrees with FP32 %", "output SQNR dB"]
    parts = [table(headers, rows, css="num")]
    deploy = report.get("deploy_vs_simulated")
    if deploy:
        parts.append(
            f'<p class="note">The exported ONNX model agrees with the PyTorch simulation on '
            f"{pct(deploy.get('agreement'))} % of the evaluation samples (SQNR {db(deploy.get('sqnr_db'))} dB): "
            "what ships computes what was evaluated.</p>"
        )
    source = str(report.get("dataset", {}).get("eval_source", "x_eval")).replace("x_", "")
    parts.append(f'<p class="note">Scored on the {escape(source)} data; SQNR compares outputs with FP32\'s.</p>')
    return section("accuracy", "Accuracy: FP32 vs INT8", *parts)


def speed_section(report: Report) -> str:
    """Latency and size of the deploy model against the same network in FP32, on the machine that ran the job."""
    speed = report.get("speed")
    if not speed:
        return ""
    rows = [
        [str(batch), general(fp32), general(int8), f"{ratio:.2f}x"]
        for batch, fp32, int8, ratio in zip(
            speed["batch_sizes"], speed["fp32_ms"], speed["int8_ms"], speed["latency_ratio"], strict=True
        )
    ]
    sizes = (
        f'<p class="note">Size: {speed["int8_bytes"]:,} bytes against {speed["fp32_bytes"]:,} in FP32 '
        f"({speed['size_ratio']:.2f}x). Measured with onnxruntime on the CPU that ran the job, "
        f"{speed['threads']} thread, medians of interleaved runs; below 1x is faster.</p>"
    )
    return section(
        "speed",
        "Speed: INT8 deploy vs FP32",
        table(["batch", "FP32 ms", "INT8 ms", "INT8 / FP32"], rows, css="num"),
        sizes,
    )


def layers_section(report: Report) -> str:
    layers: Mapping[str, Mapping[str, Any]] = report.get("layers", {})
    if not layers:
        return section("layers", "Layers", '<p class="note">No layer is quantized.</p>')
    return section(
        "layers",
        "Layers",
        "<h3>Activation range: observed vs clips</h3>",
        _range_chart(layers),
        '<p class="note">Clips outside the observed range waste levels; clips well inside it cut outliers. '
        "Values set in config.json are fixed; the advised range is 0.3..1.7 x the observed max/min.</p>",
        "<h3>Weight quantization error</h3>",
        _weight_chart(layers),
        _layer_table(layers),
        _embedding_table(report.get("embeddings", {})),
    )


def _embedding_table(embeddings: Mapping[str, Mapping[str, Any]]) -> str:
    """Embedding tables have no activation to clip: their own table, rows x dim and the weight error."""
    if not embeddings:
        return ""
    rows = [
        [
            f"<code>{escape(name)}</code>",
            escape(f"{table.get('rows', '-')} x {table.get('dim', '-')}"),
            escape(str(table.get("weight_dst_type", "-"))),
            escape("per row" if table.get("channel_wise") else "per tensor"),
            general(table.get("weight_rel_mse"), 3),
        ]
        for name, table in embeddings.items()
    ]
    return "<h3>Embedding tables (int8 rows, gathered then scaled)</h3>" + table(
        ["table", "rows x dim", "weights", "scale", "weight rel. MSE"], rows, css="layers"
    )


def _range_chart(layers: Mapping[str, Mapping[str, Any]]) -> str:
    keys = ("observed_min", "observed_max", "clip_min", "clip_max")
    values = [plotted(layer.get(key)) for layer in layers.values() for key in keys]
    rows = []
    for name, layer in layers.items():
        clip_css = "clip" if layer.get("clip_min_learned") or layer.get("clip_max_learned") else "fixed"
        observed = f"{name}: observed {general(layer.get('observed_min'))} .. {general(layer.get('observed_max'))}"
        clips = f"{name}: clips {general(layer.get('clip_min'))} .. {general(layer.get('clip_max'))}"
        rows.append(
            Row(
                name,
                [
                    Bar(plotted(layer.get("observed_min")), plotted(layer.get("observed_max")), "obs", observed),
                    Bar(plotted(layer.get("clip_min")), plotted(layer.get("clip_max")), clip_css, clips),
                ],
            )
        )
    legend = [("obs", "observed range"), ("clip", "learned clips"), ("fixed", "fixed clips (config)")]
    return bar_chart(rows, linear_axis(values), legend, "activation range per layer: observed vs clips")


def _weight_chart(layers: Mapping[str, Mapping[str, Any]]) -> str:
    errors = {name: plotted(layer.get("weight_rel_mse")) for name, layer in layers.items()}
    rows = [
        Row(name, [Bar(0.0, error, _weight_css(layers[name]), f"{name}: {general(error)}")])
        for name, error in errors.items()
    ]
    legend = [("w8", "INT8 weights"), ("w4", "INT4 weights")]
    caption = "weight quantization error per layer: |Q(w) - w|\u00b2 / |w|\u00b2, log scale"
    return bar_chart(rows, log_axis(list(errors.values())), legend, caption) + f'<p class="note">{escape(caption)}.</p>'


def _weight_css(layer: Mapping[str, Any]) -> str:
    return "w4" if layer.get("weight_dst_type") == "INT4" else "w8"


def _layer_table(layers: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, layer in layers.items():
        rows.append(
            [
                f"<code>{escape(name)}</code>",
                escape(f"{layer.get('data_dst_type', '-')} / {layer.get('weight_dst_type', '-')}"),
                f"{general(layer.get('observed_min'))} .. {general(layer.get('observed_max'))}",
                f"{general(layer.get('clip_min'))} .. {general(layer.get('clip_max'))}",
                escape(_learned(layer)),
                escape(_ratio(layer)),
                general(layer.get("weight_rel_mse"), 3),
                escape("per channel" if layer.get("channel_wise") else "per tensor"),
                f"<code>{escape(str(layer['folded_bn']))}</code>" if layer.get("folded_bn") else "-",
            ]
        )
    headers = [
        "layer",
        "data / weights",
        "observed",
        "clips",
        "clips are",
        "clip / observed",
        "weight rel. MSE",
        "weight scale",
        "BN folded",
    ]
    return table(headers, rows, css="layers")


def _learned(layer: Mapping[str, Any]) -> str:
    def one(side: str) -> str:
        if side == "min" and layer.get("fixed_min"):
            return "min 0"
        return f"{side} learned" if layer.get(f"clip_{side}_learned") else f"{side} fixed"

    return ", ".join((one("min"), one("max")))


def _ratio(layer: Mapping[str, Any]) -> str:
    """clip_max / observed_max: what a user tunes within 0.3..1.7."""
    clip, observed = number(layer.get("clip_max")), number(layer.get("observed_max"))
    return f"{clip / observed:.2f} x" if clip is not None and observed else "-"


def tuning_section(tuning: Mapping[str, Any]) -> str:
    target = tuning.get("target", {})
    metric = str(target.get("metric", "top1"))
    met = bool(tuning.get("met"))
    parts = [
        f'<p class="verdict {"met" if met else "missed"}">{escape(str(tuning.get("verdict", "")))}</p>',
        f'<p class="note">{escape(_target_text(target))}</p>',
    ]
    sensitivity = tuning.get("sensitivity") or []
    if sensitivity:
        parts += ["<h3>Sensitivity per layer</h3>", _sensitivity_chart(sensitivity, metric)]
    parts += ["<h3>Trials</h3>", _trials_table(tuning.get("trials") or [], tuning.get("best_trial"), metric)]
    return section("tuning", "Tuning", *parts)


def _target_text(target: Mapping[str, Any]) -> str:
    metric = str(target.get("metric", "top1"))
    drop = _metric_amount(target.get("max_drop"), metric)
    text = f"Target: {metric} drop of at most {drop}, in at most {target.get('max_trials', '-')} trials"
    budget = target.get("weight_bits_budget")
    return text + (f", weights at most {general(budget)} bits on average." if budget is not None else ".")


def _metric_amount(value: Any, metric: str) -> str:
    """A drop in the tuner's metric: top-1 fractions as points; for SQNR the tuner's drop
    is the output noise-to-signal power ratio, shown with the SQNR it amounts to."""
    v = number(value)
    if v is None:
        return "-"
    if metric == "sqnr":
        return f"noise/signal {general(v, 3)} (SQNR {db(-10 * math.log10(v) if v > 0 else math.inf)} dB)"
    return f"{100 * v:.2f} points"


def _sensitivity_chart(sensitivity: Sequence[Mapping[str, Any]], metric: str) -> str:
    unit = "noise/signal" if metric == "sqnr" else "points"
    scale = 1.0 if metric == "sqnr" else 100.0
    rows = []
    for entry in sensitivity:
        name = str(entry.get("layer", ""))
        quantized = plotted(entry.get("quantized_only_drop")) * scale
        floated = plotted(entry.get("float_only_drop")) * scale
        rows.append(
            Row(
                name,
                [
                    Bar(0.0, quantized, "sq", f"{name}: only this layer quantized: drop {general(quantized)} {unit}"),
                    Bar(0.0, floated, "sf", f"{name}: only this layer in float: drop {general(floated)} {unit}"),
                ],
            )
        )
    values = [bar.end for row in rows for bar in row.bars]
    legend = [("sq", "drop with only this layer quantized"), ("sf", "drop with only this layer left in float")]
    caption = f"sensitivity per layer ({metric} drop in {unit}; longer = more sensitive)"
    note = (
        f'<p class="note">{escape(caption)}. A layer whose drop is large when it alone is quantized, or that '
        "lowers the drop most when it alone stays in float, is the first to leave in float.</p>"
    )
    return bar_chart(rows, linear_axis(values), legend, caption) + note


def _trials_table(trials: Sequence[Mapping[str, Any]], best: Any, metric: str) -> str:
    rows, marks = [], []
    for trial in trials:
        changes = trial.get("changes") or []
        listed = "".join(f"<li>{escape(str(change))}</li>" for change in changes) or "<li>the config as given</li>"
        value = trial.get("metric_value")
        rows.append(
            [
                escape(str(trial.get("index", ""))) + (" (best)" if trial.get("index") == best else ""),
                f"<ul>{listed}</ul>",
                f"{db(value)} dB" if metric == "sqnr" else f"{pct(value)} %",
                escape(_metric_amount(trial.get("drop"), metric)),
                _names(trial.get("float_layers")),
                _names(trial.get("int4_layers")),
                general(trial.get("avg_weight_bits"), 3),
            ]
        )
        marks.append("best" if trial.get("index") == best else "")
    headers = ["trial", "what changed", metric, "drop", "left in float", "INT4", "avg weight bits"]
    return table(headers, rows, css="trials", row_css=marks)


def _names(names: Any) -> str:
    return ", ".join(f"<code>{escape(str(n))}</code>" for n in names or []) or "-"


def config_section(config_text: str | None) -> str:
    if config_text is None:
        return section("config", "Final config", '<p class="note">config.json was not found beside the report.</p>')
    try:
        pretty = json.dumps(json.loads(config_text), indent=2)
    except ValueError:
        pretty = config_text
    return section(
        "config",
        "Final config",
        '<p class="note">The config.json this run used, reusable as is (<code>--config</code>).</p>',
        f"<pre>{escape(pretty)}</pre>",
    )


def _inputs(inputs: dict[str, Any]) -> str:
    """``input_ids: int64, 128 · attention_mask: bool, 128``, one entry per model input."""
    return (
        " · ".join(
            f"{escape(str(name))}: {escape(str(info.get('dtype')))}, "
            f"{escape(' x '.join(str(d) for d in info.get('shape', [])))}"
            for name, info in inputs.items()
        )
        or "-"
    )


def run_section(report: Report) -> str:
    dataset = report.get("dataset", {})
    source = escape(str(dataset.get("eval_source")))
    facts = [
        ("training samples", general(dataset.get("train_samples"), 12)),
        ("evaluation samples", f"{general(dataset.get('eval_samples'), 12)} ({source})"),
        ("inputs", _inputs(dataset.get("inputs", {}))),
        *(
            [("classes", escape(", ".join(f"{i} {name}" for i, name in enumerate(dataset["classes"]))))]
            if dataset.get("classes")
            else []
        ),
        ("labels", "yes" if dataset.get("labels") else "no (scored by agreement with FP32)"),
        ("calibration batches", escape(str(report.get("batch_num", "-")))),
    ]
    loss = report.get("loss", {})
    means = ", ".join(general(m) for m in loss.get("epoch_means", [])) or "-"
    facts.append(("loss per epoch", f"{escape(str(loss.get('kind', '-')))}: {means}"))
    if report.get("resumed_at_epoch"):
        facts.append(
            ("resumed", f"at epoch {escape(str(report['resumed_at_epoch']))}, from an earlier attempt's checkpoint")
        )
    chosen = report.get("fine_tune")
    if chosen:
        unit = METRIC_UNITS.get(str(chosen.get("metric")), str(chosen.get("metric")))
        facts.append(
            (
                "model kept",
                f"{escape(str(chosen.get('kept')))} (calibrated only {general(chosen.get('calibrated'))}, "
                f"fine-tuned {general(chosen.get('fine_tuned'))} {unit})",
            )
        )
    spec = [(escape(str(k)), escape(_setting(v))) for k, v in report.get("spec", {}).items()]
    timings = report.get("timings_s", {})
    total = sum(plotted(v) for v in timings.values())
    times = [(escape(str(k)), f"{plotted(v):.2f}") for k, v in timings.items()] + [("total", f"{total:.2f}")]
    return section(
        "run",
        "The run",
        '<div class="facts">',
        _kv("dataset", facts),
        _kv("training spec", spec),
        _kv("time (s)", times),
        "</div>",
    )


def _setting(value: Any) -> str:
    """A spec value as a user would type it: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _kv(title: str, pairs: Sequence[tuple[str, str]]) -> str:
    return f"<div><h3>{escape(title)}</h3>" + table((), [list(pair) for pair in pairs], css="kv") + "</div>"
