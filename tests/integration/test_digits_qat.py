"""End to end on real data: sklearn's digits, the example CNN, QAT, export, onnxruntime.

The FP32 net is trained here (seeded, a few seconds) and handed to the pipeline as a
``torch.export`` program, the form the service receives.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quantlib.data import validate_arrays
from quantlib.examples.digits import DigitsNet, digits_dataset, export_program, train_fp32
from quantlib.run import run_qat
from quantlib.spec import QATSpec

SEED = 0
MAX_DROP = 0.005  # half a point of top-1


@pytest.fixture(scope="module")
def digits() -> tuple[torch.export.ExportedProgram, dict]:
    data = digits_dataset(SEED)
    torch.manual_seed(SEED)
    model = DigitsNet()
    train_fp32(model, data, epochs=15, seed=SEED)
    return export_program(model), data


def test_int8_accuracy_within_half_a_point_of_fp32(digits, tmp_path: Path) -> None:
    program, data = digits
    before = {name: t.clone() for name, t in program.state_dict.items()}
    phases: list[str] = []
    report = run_qat(
        program,
        validate_arrays(data),
        tmp_path,
        spec=QATSpec(seed=SEED),
        on_progress=lambda phase, *_: phases.append(phase),
    )

    fp32 = report.accuracy["fp32"].top1
    assert fp32 is not None and fp32 >= 0.97
    for row in ("int8_simulated", "int8_onnxruntime"):
        top1 = report.accuracy[row].top1
        assert top1 is not None and top1 >= fp32 - MAX_DROP, (row, fp32, top1)
    assert report.deploy_vs_simulated.agreement >= 0.999
    assert report.deploy_vs_simulated.sqnr_db > 40

    # The caller's program is untouched: the QAT model and the FP32 reference are copies.
    assert all(torch.equal(before[name], t) for name, t in program.state_dict.items())
    assert list(dict.fromkeys(phases)) == ["loading", "calibrating", "training", "exporting", "evaluating"]

    saved = json.loads((tmp_path / "report.json").read_text())
    layers = saved["layers"]
    assert set(layers) == {"stem.0", "block_a.0", "block_b.0", "depthwise.0", "pointwise.0", "fc"}
    # Raw pixels can be negative; every other layer reads a ReLU (through add and pooling).
    assert not layers["stem.0"]["fixed_min"] and layers["stem.0"]["observed_min"] < 0
    assert all(layers[name]["fixed_min"] for name in layers if name != "stem.0")
    assert layers["fc"]["folded_bn"] is None and layers["stem.0"]["folded_bn"] == "stem.1"
    for entry in layers.values():
        assert entry["clip_max"] > 0 >= entry["clip_min"] and entry["clip_max_learned"]
        assert entry["data_dst_type"] == entry["weight_dst_type"] == "INT8"
        assert 0 < entry["weight_rel_mse"] < 1e-3
    assert saved["accuracy"]["fp32"]["sqnr_db"] == "inf"
    assert saved["loss"]["kind"] == "ce" and len(saved["loss"]["epoch_means"]) == 2
    assert set(saved["timings_s"]) == {"loading", "calibrating", "training", "exporting", "evaluating"}


def test_without_labels_distillation_keeps_outputs_close(digits, tmp_path: Path) -> None:
    program, data = digits
    unlabelled = validate_arrays({"x_train": data["x_train"], "x_eval": data["x_eval"]})
    report = run_qat(program, unlabelled, tmp_path, spec=QATSpec(epochs=1, seed=SEED))
    assert report.loss == "mse"
    for row in ("int8_simulated", "int8_onnxruntime"):
        scores = report.accuracy[row]
        assert scores.top1 is None
        assert scores.agreement >= 0.99 and scores.sqnr_db >= 30, (row, scores)
