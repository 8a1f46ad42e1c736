"""Automatic tuning on a model built to need it: real data (sklearn's digits), a real
FP32 model, real QAT trials, export and onnxruntime.

The model is an MLP whose second layer reads one hidden unit scaled up 1000 times (its
weights for that unit scaled down to match): the FP32 function is unchanged, but the
layer's per-tensor INT8 input grid is so coarse that its other inputs all round to zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.config import load_config
from quantlib.data import Dataset, validate_arrays
from quantlib.examples.digits import digits_dataset
from quantlib.outputs import OUTPUT_FILES
from quantlib.run import run_qat
from quantlib.spec import AccuracyTarget, QATSpec

SEED = 0
OUTLIER = 1000.0
QAT = Path(sys.executable).parent / "qat"


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Two threads on a shared two-core machine are many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trained(outlier: float) -> tuple[MLP, dict[str, np.ndarray]]:
    data = {k: v.reshape(len(v), -1) if k.startswith("x") else v for k, v in digits_dataset(SEED).items()}
    torch.manual_seed(SEED)
    model = MLP()
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(20):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        model.fc1.weight[3] *= outlier
        model.fc1.bias[3] *= outlier
        model.fc2.weight[:, 3] /= outlier
    return model.eval(), data


@pytest.fixture(scope="module")
def outlier_model() -> tuple[MLP, Dataset]:
    model, data = _trained(OUTLIER)
    return model, validate_arrays(data)


def test_tuning_fixes_the_outlier_layer_by_itself(outlier_model, tmp_path: Path) -> None:
    model, dataset = outlier_model
    target = AccuracyTarget(max_drop=0.01, max_trials=4)
    progress: list[tuple[str, int, int]] = []
    report = run_qat(
        model, dataset, tmp_path, spec=QATSpec(epochs=1, accuracy=target), on_progress=lambda *p: progress.append(p[:3])
    )
    tuning = report.tuning
    assert tuning is not None and tuning["met"] and tuning["verdict"] == "target met"
    trials = tuning["trials"]
    assert trials[0]["drop"] > 0.5, "plain INT8 must break this model, or the test proves nothing"
    best = trials[tuning["best_trial"]]
    assert tuning["best_trial"] == len(trials) - 1 >= 1 and best["drop"] <= 0.01
    # The sensitivity measurement points at fc2, and the change that fixed it is on fc2, with its reason.
    worst = max(tuning["sensitivity"], key=lambda s: s["quantized_only_drop"])
    assert worst["layer"] == "fc2" and worst["quantized_only_drop"] > 0.5
    assert any("fc2" in change and "drop" in change for change in best["changes"]), best["changes"]
    assert not any("fc1" in c or "fc3" in c for t in trials for c in t["changes"]), "only the culprit is touched"

    # What ships is the best trial: deployed accuracy within the target, report.json and report.html agree.
    fp32, deployed = report.accuracy["fp32"].top1, report.accuracy["int8_onnxruntime"].top1
    assert fp32 is not None and deployed is not None and fp32 - deployed <= 0.01 + 1 / len(dataset.y_eval)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["tuning"] == json.loads(json.dumps(tuning)) and saved["spec"]["accuracy"]["max_drop"] == 0.01
    assert "target met" in (tmp_path / "report.html").read_text()
    assert {p.name for p in tmp_path.iterdir()} == set(OUTPUT_FILES.values()), "no trial leaves a file behind"
    assert ("tuning", 1, 4) in progress

    # The config left behind is the best trial's, and a plain run with it keeps the accuracy.
    config = load_config(tmp_path / "config.json")
    fc2 = config.layers["fc2"]
    assert not fc2.retrain_enable or fc2.retrain_data_config.clip_max is not None
    again = run_qat(model, dataset, tmp_path / "again", config_file=tmp_path / "config.json", spec=QATSpec(epochs=1))
    top1 = again.accuracy["int8_onnxruntime"].top1
    assert again.tuning is None and top1 is not None and fp32 - top1 <= 0.01 + 1 / len(dataset.y_eval)


def test_unreachable_target_says_not_suitable_with_the_best_drop(outlier_model, tmp_path: Path) -> None:
    """Through ``qat quantize`` as a user runs it: an SQNR target no quantized model meets."""
    model, dataset = outlier_model
    program = torch.export.export(
        model, (torch.zeros(2, 64),), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},)
    )
    torch.export.save(program, tmp_path / "model.pt2")
    arrays = {"x_train": dataset.x_train.arrays[""], "x_eval": dataset.x_eval.arrays[""]}
    arrays |= {"y_train": dataset.y_train, "y_eval": dataset.y_eval}
    np.savez(tmp_path / "data.npz", **arrays)
    out = tmp_path / "out"
    args = ["quantize", tmp_path / "model.pt2", "--data", tmp_path / "data.npz", "--out", out, "--epochs", 1]
    args += ["--metric", "sqnr", "--max-drop", 0, "--max-trials", 2]
    run = subprocess.run(
        [str(QAT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "tuning: not suitable for QAT" in run.stdout and "left fc2 in float" in run.stdout

    tuning = json.loads((out / "report.json").read_text())["tuning"]
    assert not tuning["met"] and len(tuning["trials"]) == 2
    assert tuning["target"] == {"metric": "sqnr", "max_drop": 0.0, "max_trials": 2, "weight_bits_budget": None}
    best = min(tuning["trials"], key=lambda t: t["drop"])
    assert tuning["best_trial"] == best["index"] == 1 and best["float_layers"] == ["fc2"]
    assert tuning["verdict"] == f"not suitable for QAT: best drop {best['drop']:.4g} (output SQNR " + (
        f"{best['metric_value']:.1f} dB) with 1 layer in float"
    )
    assert load_config(out / "config.json").layers["fc2"].retrain_enable is False


def test_weight_bits_budget_puts_the_least_sensitive_weights_in_int4(tmp_path: Path) -> None:
    model, data = _trained(1.0)
    target = AccuracyTarget(max_drop=0.02, max_trials=3, weight_bits_budget=5.0)
    # INT4 weights deploy only with generic-qdq (onnxruntime-cpu refuses a budget: no int4 kernels)
    spec = QATSpec(epochs=1, accuracy=target, target="generic-qdq")
    report = run_qat(model, validate_arrays(data), tmp_path, spec=spec)
    tuning = report.tuning
    assert tuning is not None and tuning["met"], tuning
    best = tuning["trials"][tuning["best_trial"]]
    assert tuning["trials"][0]["avg_weight_bits"] == 8.0 and best["avg_weight_bits"] <= 5.0
    # 64x64 + 64x64 + 64x10 weights: the two big layers in INT4 fit (4.29 bits), one alone does not (5.86).
    assert sorted(best["int4_layers"]) == ["fc1", "fc2"]
    config = load_config(tmp_path / "config.json")
    params = {"fc1": 4096, "fc2": 4096, "fc3": 640}
    bits = {name: 4 if e.retrain_weight_config.dst_type == "INT4" else 8 for name, e in config.layers.items()}
    assert sum(params[n] * bits[n] for n in params) / sum(params.values()) <= 5.0
    assert {name: layer.weight_dst_type for name, layer in report.layers.items()} == {
        "fc1": "INT4",
        "fc2": "INT4",
        "fc3": "INT8",
    }
    fp32, deployed = report.accuracy["fp32"].top1, report.accuracy["int8_onnxruntime"].top1
    assert fp32 is not None and deployed is not None and fp32 - deployed <= 0.02 + 1 / len(data["y_eval"])
