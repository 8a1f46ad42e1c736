"""Checkpoints: a run resumed from one computes what the uninterrupted run computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from quantlib.checkpoint import Checkpoints
from quantlib.data import validate_arrays
from quantlib.run import run_qat
from quantlib.spec import QATSpec

SPEC = QATSpec(epochs=4, batch_size=8, lr=1e-3, seed=3)


def _model_and_data() -> tuple[nn.Module, dict[str, np.ndarray]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    rng = np.random.default_rng(0)
    return model, {"x_train": rng.standard_normal((96, 16)).astype(np.float32), "y_train": rng.integers(0, 4, 96)}


def _run(out: Path, checkpoints: Checkpoints) -> dict:
    model, arrays = _model_and_data()
    run_qat(model, validate_arrays(arrays), out, spec=SPEC, checkpoints=checkpoints)
    return json.loads((out / "report.json").read_text())


def test_a_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run(tmp_path: Path) -> None:
    whole = _run(tmp_path / "whole", Checkpoints(tmp_path / "saved"))
    assert [p.name for p in (tmp_path / "saved").iterdir()] == ["epoch-0003.pt"], "the latest one only, not the last"
    assert whole["resumed_at_epoch"] is None

    resumed = _run(tmp_path / "resumed", Checkpoints(tmp_path / "again", tmp_path / "saved" / "epoch-0003.pt"))

    assert resumed["resumed_at_epoch"] == 4
    assert "at epoch 4, from an earlier attempt" in (tmp_path / "resumed" / "report.html").read_text()
    assert resumed["loss"]["epoch_means"] == whole["loss"]["epoch_means"], "epochs 1-3 restored, epoch 4 the same"
    assert resumed["accuracy"] == whole["accuracy"] and resumed["layers"] == whole["layers"]
    assert resumed["fine_tune"] == whole["fine_tune"], "the calibrated state it compares with came along"
    assert (tmp_path / "resumed" / "record.txt").read_text() == (tmp_path / "whole" / "record.txt").read_text()


def test_a_checkpoint_that_cannot_be_read_or_is_not_ours_means_starting_over(tmp_path: Path) -> None:
    """Torn by a kill mid-write, or something else under its name: the epochs are lost, not the job."""
    torn = tmp_path / "epoch-0002.pt"
    torn.write_bytes(b"PK\x03\x04 not a whole archive")
    assert Checkpoints(tmp_path / "saved", torn).load() is None
    foreign = tmp_path / "epoch-0003.pt"
    torch.save([1, 2, 3], foreign)
    assert Checkpoints(tmp_path / "saved", foreign).load() is None
    assert Checkpoints(tmp_path / "saved").load() is None
