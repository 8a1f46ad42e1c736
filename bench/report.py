"""Benchmark results as JSON for programs and a Markdown table for people."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy
import onnxruntime
import torch


def environment() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }


def step_time_table(rows: list[dict[str, Any]]) -> str:
    variants = list(rows[0]["median_ms"]) if rows else []
    head = "| model | " + " | ".join(f"{v} ms (x FP32)" for v in variants) + " |"
    lines = [head, "|---" * (len(variants) + 1) + "|"]
    for row in rows:
        cells = [
            f"{row['median_ms'][v]:.2f} ({row['ratio_to_fp32'][v]:.2f}x)" if v in row["median_ms"] else "n/a"
            for v in variants
        ]
        lines.append(f"| {row['model']} {tuple(row['input_shape'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | seeds | FP32 top-1 | quantized top-1 (sim) | ONNX Runtime top-1 | drop (points, spread) | SQNR dB | top-1 agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {len(r['seeds'])} | {r['fp32_top1']:.4f} | {r['int8_top1']:.4f} | {r['onnx_top1']:.4f} | "
            f"{100 * (r['fp32_top1'] - r['int8_top1']):.2f} ({r['drop_spread_points']:.2f}) | {r['sqnr_db']:.1f} | "
            f"{r['agreement']:.4f} |"
        )
    return "\n".join(lines)


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    env = results["environment"]
    md = [
        "# qat-service benchmarks",
        "",
        f"{env['date']} on {env['cpus']} CPUs ({env['processor']}), torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}, {env['torch_threads']} torch threads. Mode: {results['mode']}.",
        "",
    ]
    if results.get("accuracy"):
        md += ["## Accuracy (same FP32 checkpoint, data and budget)", "", accuracy_table(results["accuracy"]), ""]
    if results.get("step_time"):
        md += ["## QAT training step vs FP32 (median, interleaved)", "", step_time_table(results["step_time"]), ""]
    md_path.write_text("\n".join(md), encoding="utf-8")
    return json_path, md_path
