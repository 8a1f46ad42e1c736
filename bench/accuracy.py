"""Quantization quality on the digits example: one FP32 checkpoint per seed, then our
INT8 QAT, W4A8 QAT and calibration-only INT8 on the same data and budget."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

import torch

from quantlib.data import validate_arrays
from quantlib.examples.digits import DigitsNet, digits_dataset, export_program, train_fp32
from quantlib.spec import QATSpec
from quantlib.train import run_qat

# variant -> (config_defination or None, epochs)
VARIANTS: dict[str, tuple[dict[str, Any] | None, int]] = {
    "quantlib QAT W8A8": (None, 2),
    "quantlib QAT W4A8": ({"defaults": {"weight_dst_type": "INT4"}}, 2),
    "quantlib calibration only W8A8": (None, 0),
}


def _run(program: torch.export.ExportedProgram, data: dict, simple: dict | None, epochs: int, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        simple_path = None
        if simple is not None:
            import yaml

            simple_path = Path(tmp) / "simple.yaml"
            simple_path.write_text(yaml.safe_dump(simple), encoding="utf-8")
        report = run_qat(
            program,
            validate_arrays(data),
            Path(tmp) / "out",
            config_defination=simple_path,
            spec=QATSpec(epochs=epochs, seed=seed),
        )
    acc = report.accuracy
    return {
        "fp32_top1": acc["fp32"].top1,
        "int8_top1": acc["int8_simulated"].top1,
        "onnx_top1": acc["int8_onnxruntime"].top1,
        "sqnr_db": acc["int8_simulated"].sqnr_db,
        "agreement": acc["int8_simulated"].agreement,
        "onnx_vs_sim_agreement": report.deploy_vs_simulated.agreement,
        "seconds": report.timings_s,
    }


def measure(seeds: list[int]) -> list[dict[str, Any]]:
    """One row per variant: means over seeds, with the spread (max - min) of the drop."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for seed in seeds:
        data = digits_dataset(seed)
        torch.manual_seed(seed)
        model = DigitsNet()
        train_fp32(model, data, seed=seed)
        program = export_program(model)
        for name, (simple, epochs) in VARIANTS.items():
            runs[name].append(_run(program, data, simple, epochs, seed))
    rows = []
    for name, results in runs.items():
        drops = [100 * (r["fp32_top1"] - r["int8_top1"]) for r in results]
        row = {
            key: statistics.mean(r[key] for r in results)
            for key in ("fp32_top1", "int8_top1", "onnx_top1", "sqnr_db", "agreement", "onnx_vs_sim_agreement")
        }
        row.update(model=f"digits CNN, {name}", seeds=seeds, drop_spread_points=max(drops) - min(drops), runs=results)
        rows.append(row)
    return rows
