"""Benchmark results as JSON for programs and Markdown tables for people."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy
import onnxruntime
import torch


def environment() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchao": metadata.version("torchao"),  # importing torchao costs seconds
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
    }


def _num(value: float | None, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def quality_table(rows: list[dict[str, Any]]) -> str:
    """One line per task and variant; the autoencoder's score and drop are PSNR dB."""
    lines = [
        "| task (data) | variant | score | drop vs FP32 (spread) | SQNR dB | top-1 agreement | ours simulated | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        task = f"{r['task']} ({r['dataset']})"
        if "error" in r:
            lines.append(f"| {task} | {r['variant']} | failed: {r['error'][:120]} | | | | | {r['seeds']} |")
            continue
        percent = r["metric"] == "top-1"
        score = _num(100 * r["score"], 2) + " %" if percent else _num(r["score"], 2) + " dB"
        simulated = _num(100 * r["simulated_score"], 2) + " %" if r.get("simulated_score") is not None else "–"
        lines.append(
            f"| {task} | {r['variant']} | {score} | {_num(r['drop'], 2)} ({_num(r['drop_spread'], 2)}) | "
            f"{_num(r['sqnr_db'], 1)} | {_num(r['agreement'], 4)} | {simulated} | {r['seeds']} |"
        )
    return "\n".join(lines)


def timing_table(rows: list[dict[str, Any]]) -> str:
    """Calibration (50 images) and export/convert seconds per task and variant, means over seeds."""
    lines = ["| task | variant | calibrate 50 images s | train s | export / convert s |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r or r["variant"] == "FP32":
            continue
        s = r["seconds"]
        export = s.get("exporting", s.get("converting"))
        lines.append(
            f"| {r['task']} | {r['variant']} | {_num(s.get('calibrating'), 2)} | {_num(s.get('training'), 2)} | "
            f"{_num(export, 2)} |"
        )
    return "\n".join(lines)


def step_time_table(rows: list[dict[str, Any]]) -> str:
    variants = list(rows[0]["median_ms"]) if rows else []
    head = "| model (input) | " + " | ".join(f"{v}: ms (x FP32), MiB" for v in variants) + " |"
    lines = [head, "|---" * (len(variants) + 1) + "|"]
    for row in rows:
        cells = [
            f"{row['median_ms'][v]:.2f} ({row['ratio_to_fp32'][v]:.2f}x), {row['saved_for_backward_mib'][v]:.1f}"
            if v in row["median_ms"]
            else "failed"
            for v in variants
        ]
        lines.append(f"| {row['model']} {tuple(row['input_shape'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def service_table(*summaries: dict[str, Any]) -> str:
    """One column per run of the service bench: children started ahead of their jobs, then (if run) not."""

    def waits(summary: dict[str, Any]) -> str:
        return ", ".join(
            f"{team} {w['median']} s (max {w['max']})" if w else f"{team} –"
            for team, w in summary["queue_wait_s"].items()
        )

    rows = {
        "jobs submitted / succeeded / unfinished at the deadline": lambda s: (
            f"{s['submitted']} / {s['succeeded']} / {s['unfinished_at_deadline']}"
        ),
        "jobs per minute (2 workers)": lambda s: f"{s['jobs_per_minute']}",
        "submit latency p50 / p99": lambda s: f"{s['submit']['p50_ms']} / {s['submit']['p99_ms']} ms",
        "status latency p50 / p99": lambda s: f"{s['status']['p50_ms']} / {s['status']['p99_ms']} ms",
        "queue wait per team, median": waits,
        "overhead per job beyond quantization compute, median": lambda s: (
            f"{s['overhead_s']['median_per_job']} s (child start-up {s['overhead_s']['child_startup_median']} s)"
        ),
    }
    names = ["child started ahead" if s.get("child_start_ahead", True) else "child started per job" for s in summaries]
    lines = [f"| measure | {' | '.join(names)} |", "|---" * (len(summaries) + 1) + "|"]
    lines += [f"| {label} | {' | '.join(cell(s) for s in summaries)} |" for label, cell in rows.items()]
    return "\n".join(lines)


def job_start_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| worker's child | jobs | worker wall time per job, median | child start-up, median (max) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {row['mode']} | {row['jobs']} | {row['worker_wall_s_median']} s | "
        f"{row['child_startup_s_median']} s ({row['child_startup_s_max']} s) |"
        for row in rows
    ]
    return "\n".join(lines)


def api_under_load_table(figures: dict[str, Any]) -> str:
    quiet, loaded = figures["quiet"], figures["loaded"]
    rows = [
        ("another team's `GET /v1/jobs`", quiet["jobs"], loaded["jobs"]),
        ("`/healthz`", quiet["healthz"], loaded["healthz"]),
    ]
    lines = ["| request | quiet p50 / p99 ms | under load p50 / p99 ms | requests under load |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {q['p50_ms']} / {q['p99_ms']} | {u['p50_ms']} / {u['p99_ms']} | {u['requests']} |"
        for name, q, u in rows
    ]
    lines.append(
        f"\np99 ratio under load: {figures['jobs_p99_ratio']}x; streams whose tokens were revoked ended "
        f"{', '.join(map(str, figures['revoked_stream_ends_s']))} s after the revocation (three phases of the "
        "2 s re-check)."
    )
    return "\n".join(lines)


def sandbox_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| command | plain ms | in the sandbox ms | added ms |", "|---|---|---|---|"]
    lines += [f"| `{r['command']}` | {r['plain_ms']} | {r['sandboxed_ms']} | {r['added_ms']} |" for r in rows]
    return "\n".join(lines)


def deploy_speed_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | variant | batch 1 ms | batch 32 ms | vs FP32 (1 / 32) | SQNR dB | top-1 agreement "
        "| deploy vs simulation dB | integer kernels / float conv-matmul-gemm | size KiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = " / ".join(f"{v:.2f}x" for v in r["latency_vs_fp32"])
        sqnr = "–" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}"
        agreement = "–" if r["agreement"] is None else f"{r['agreement']:.4f}"
        faithful = "–" if r.get("deploy_vs_simulated_db") is None else f"{r['deploy_vs_simulated_db']:.1f}"
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['latency_ms']['1']:.2f} | {r['latency_ms']['32']:.1f} | {ratio} "
            f"| {sqnr} | {agreement} | {faithful} | {r['integer_ops']} / {r['float_compute_ops']} "
            f"| {r['bytes'] / 1024:.0f} |"
        )
    return "\n".join(lines) + "\n"


def sentence_embeddings_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | cosine to FP32, mean / min | retrieval agreement | paraphrase top-1 | s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | failed: {r['error']} | – | – | {r['seconds']} |")
        else:
            lines.append(
                f"| {r['variant']} | {r['cosine_mean']:.4f} / {r['cosine_min']:.4f} | {r['retrieval_agreement']:.3f} "
                f"| {r['paraphrase_top1']:.3f} | {r['seconds']} |"
            )
    return "\n".join(lines) + "\n"


def dataset_memory_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset GiB (train rows) | variant | peak own memory MiB (RssAnon) | peak RSS MiB (with mapped pages) | s |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['dataset_gib']} ({r['train_rows']}) | {r['variant']} |"
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} | | |")
            continue
        lines.append(f"{head} {r['peak_anon_mib']:.0f} | {r['peak_rss_mib']:.0f} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    md = [
        "# qat-service benchmarks",
        "",
        f"{env['date']} on {env['cpus']} CPUs ({env['processor']}, load average {env['load_average_1m']} at start), "
        f"Python {env['python']}, torch {env['torch']}, torchao {env['torchao']}, onnxruntime {env['onnxruntime']}, "
        f"{env['torch_threads']} torch thread(s). Mode: {results['mode']}, {results.get('wall_s', '?')} s.",
        "",
    ]
    if results.get("quality"):
        b = results["quality_budget"]
        md += [
            "## Quality (same FP32 checkpoint, data, budget and 50 calibration images)",
            "",
            f"{b['n_train']} training and {b['n_eval']} evaluation images per seed (digits: its own 1347/450 split); "
            f"FP32 {b['fp32_epochs']} epochs; every QAT variant {b['qat_epochs']} epochs, Adam lr {b['qat_lr']}, "
            f"batch {b['batch_size']}, BatchNorm frozen; seeds {b['seeds']}. Score: top-1 of the deployed model "
            "(ours: ONNX in onnxruntime; torch.ao: convert_fx; PT2E: convert_pt2e), or PSNR dB of reconstructions "
            "for the autoencoder. Drop: points (dB for PSNR), mean over seeds, spread = max - min.",
            "",
            quality_table(results["quality"]),
            "",
            "## Calibration and export time (mean s per run)",
            "",
            timing_table(results["quality"]),
            "",
        ]
    if results.get("step_time"):
        md += [
            "## QAT training step vs FP32 (median, interleaved) and step memory",
            "",
            "MiB: tensors autograd saves for backward in one step (distinct storages), the part of a step's "
            "peak memory that grows with the batch and with fake quantization.",
            "",
            step_time_table(results["step_time"]),
            "",
        ]
    if results.get("deploy_speed"):
        md += [
            "## Deployed INT8 vs FP32 on onnxruntime's CPU (1 thread; ours vs quantize_static)",
            "",
            "Random-init models, 50 calibration inputs, scored against FP32 on 64 others; medians of interleaved "
            "runs. Integer kernels: ops onnxruntime ran in the integer domain (QLinear*, QGemm, MatMulInteger...) "
            "against convolutions, matmuls and gemms left in float, read off its optimized graph.",
            "",
            deploy_speed_table(results["deploy_speed"]),
            "",
        ]
    if results.get("sentence_embeddings"):
        md += [
            "## Pretrained all-MiniLM-L6-v2: sentence embeddings after INT8",
            "",
            "72 sentences calibrate (ours also fine-tunes on them, label-free); 160 others, 80 pairs of "
            "paraphrases, are embedded. Retrieval: each sentence's nearest other sentence, as FP32 finds it; "
            "paraphrase top-1: it is the sentence's own paraphrase.",
            "",
            sentence_embeddings_table(results["sentence_embeddings"]),
            "",
        ]
    if results.get("dataset_memory"):
        md += [
            "## Memory as the dataset grows: mapped from disk (jobs) vs read into memory",
            "",
            "A fresh process runs a job's whole pipeline (load, calibrate, 1 epoch at batch 50, export, score) on "
            "float32 rows of 3072 features with a small MLP. Own memory is what an out-of-memory kill is about; "
            "mapped pages are page cache.",
            "",
            dataset_memory_table(results["dataset_memory"]),
            "",
        ]
    if results.get("service"):
        md += [
            "## Service: small jobs from 4 teams, PostgreSQL, Redis, 2 CPU workers",
            "",
            service_table(
                results["service"]["summary"],
                *([results["service_cold"]["summary"]] if "service_cold" in results else []),
            ),
            "",
        ]
    if results.get("job_start"):
        md += [
            "## A small job on an idle worker (one at a time, both modes alternating)",
            "",
            job_start_table(results["job_start"]),
            "",
        ]
    if results.get("api_under_load"):
        figures = results["api_under_load"]
        md += [
            f"## API under {figures['streams']} event streams and {figures['slow_connections']} slow-header "
            "connections (qat serve, PostgreSQL)",
            "",
            api_under_load_table(figures),
            "",
        ]
    if results.get("sandbox"):
        rounds = results["sandbox"][0]["rounds"]
        md += [
            f"## Job sandbox start-up (bubblewrap; median of {rounds} interleaved runs each)",
            "",
            sandbox_table(results["sandbox"]),
            "",
        ]
    return "\n".join(md)


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    md_path.write_text(markdown(results), encoding="utf-8")
    return json_path, md_path
