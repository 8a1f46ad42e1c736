"""Models as users export them, refused early and in words they can act on.

A ``.pt2`` exported without a dynamic batch used to pass the two-sample probe and die in
calibration with a traceback; a Hugging Face model exported directly returns its own output
class, which the loading process cannot rebuild, and the loader said only "check the warnings
above"; the probe kept only the first line of torch's message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from quantlib.data import DataError, Dataset, validate_arrays
from quantlib.modelfile import ModelError, load_exported_program
from quantlib.run import run_qat
from quantlib.spec import QATSpec

ROOT = Path(__file__).parents[2]


def _data(n: int = 16) -> Dataset:
    return validate_arrays({"x_train": np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)})


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()


@pytest.mark.parametrize("exported_batch", [1, 2])
def test_a_program_with_a_fixed_batch_is_refused_before_any_work(exported_batch: int, tmp_path: Path) -> None:
    program = torch.export.export(_net(), (torch.randn(exported_batch, 8),))  # no dynamic_shapes
    with pytest.raises(ModelError, match=r"batch size is fixed .*to be equal to .*dynamic_shapes") as refused:
        run_qat(program, _data(), tmp_path, spec=QATSpec(epochs=1))
    assert f"a batch of {exported_batch} but not of {exported_batch + 1}" in str(refused.value)
    assert not (tmp_path / "model_int8.onnx").exists()


class _Picky(nn.Module):
    """Fails as torch often does: a headline, then the line that says what was expected."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != 9:
            raise RuntimeError(f"shape check failed\n  expected 9 features per sample, got {x.shape[1]}")
        return self.fc(x)


def test_the_probe_keeps_torch_whole_message(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="shape check failed expected 9 features per sample, got 8"):
        run_qat(_Picky(), _data(), tmp_path, spec=QATSpec(epochs=1))


def _hf_classifier(**config: object) -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    return ResNetForImageClassification(
        ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], layer_type="basic", num_labels=3, **config)
    ).eval()


def _exported(model: nn.Module, path: Path) -> Path:
    program = torch.export.export(model, (torch.randn(2, 3, 16, 16),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, path)
    return path


def test_a_hugging_face_output_class_loads_where_transformers_is_absent(tmp_path: Path) -> None:
    """Exported directly, a transformers classifier returns ImageClassifierOutputWithNoAttention, which
    a process without transformers (the job's sandbox) cannot rebuild: the loader returns its one
    tensor, the logits, instead."""
    model = _hf_classifier()
    x = torch.randn(3, 3, 16, 16)
    np.savez(tmp_path / "io.npz", x=x.numpy(), logits=model(x).logits.detach().numpy())
    runner = (
        "import sys, numpy as np, torch\nfrom quantlib.modelfile import load_exported_program\n"
        "io = np.load(sys.argv[2])\nout = load_exported_program(sys.argv[1]).module()(torch.from_numpy(io['x']))\n"
        "assert 'transformers' not in sys.modules\n"
        "print(type(out).__name__, np.abs(out.detach().numpy() - io['logits']).max())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", runner, str(_exported(model, tmp_path / "model.pt2")), str(tmp_path / "io.npz")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    kind, error = run.stdout.split()
    assert kind == "Tensor" and float(error) < 1e-5, run.stderr[-2000:]


def test_several_outputs_are_named_with_the_fix(tmp_path: Path) -> None:
    """The output class becomes a dict of its fields (the same with or without transformers)."""
    path = _exported(_hf_classifier(output_hidden_states=True), tmp_path / "model.pt2")
    data = validate_arrays({"x_train": np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)})
    with pytest.raises(ModelError) as refused:
        run_qat(load_exported_program(path), data, tmp_path / "out", spec=QATSpec(epochs=0))
    assert "it returns a dict of 3 values (logits, hidden_states.0, hidden_states.1)" in str(refused.value)
    assert "model(x).logits" in str(refused.value)


class _ConstructedConv(nn.Conv2d):
    """Another constructor (Hugging Face's EfficientNetDepthwiseConv2d), nn.Conv2d's forward."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, padding=1, groups=channels, bias=False)


class _ShiftedConv(nn.Conv2d):
    """Its own forward: arithmetic a quantized Conv2d would not reproduce."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1


def test_a_subclass_of_a_layer_is_quantized_unless_it_has_its_own_forward(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), _ConstructedConv(4), _ShiftedConv(4, 4, 1), nn.Flatten()).eval()
    data = validate_arrays({"x_train": np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32)})
    report = run_qat(model, data, tmp_path, spec=QATSpec(epochs=0, target="generic-qdq"))
    assert set(report.layers) == {"0", "1"}
    assert report.deploy_vs_simulated.sqnr_db > 40
