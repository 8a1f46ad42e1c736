"""An image classifier trained from a .zip of PNGs in class folders, as a real job: the API checks
the archive's layout at submission, the sandboxed worker decodes and preprocesses it."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from service.client import ApiError, Client
from support.client_service import Service


def _png(level: int, seed: int) -> bytes:
    pixels = np.clip(level + np.random.default_rng(seed).integers(-25, 25, (10, 10, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("images")
    with zipfile.ZipFile(folder / "images.zip", "w") as archive:
        for c, (name, level) in enumerate({"dark": 40, "light": 210}.items()):
            for i in range(12):
                archive.writestr(f"train/{name}/{i}.png", _png(level, 100 * c + i))
            for i in range(4):
                archive.writestr(f"eval/{name}/{i}.png", _png(level, 100 * c + 50 + i))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    program = torch.export.export(
        model.eval(), (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, folder / "model.pt2")
    return folder / "model.pt2", folder / "images.zip"


def test_a_job_from_an_image_archive_runs(service: Service, image_job: tuple[Path, Path], tmp_path: Path) -> None:
    model, images = image_job
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"epochs": 2, "lr": 0.01, "batch_size": 8, "preprocess": {"resize": [8, 8]}}))
    run = service.cli(
        "submit", model, "--data", images, "--spec", spec, "--wait", "--download", tmp_path, "--json", timeout_s=300
    )
    assert run.returncode == 0, f"{run.stderr}\n--- worker\n{service.deployment.log('worker')[-3000:]}"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["dataset"] | {"inputs": None} == report["dataset"] | {
        "train_samples": 24,
        "eval_samples": 8,
        "eval_source": "x_eval",
        "labels": True,
        "inputs": None,
    }
    assert report["accuracy"]["fp32"]["top1"] is not None


def test_an_archive_that_is_no_dataset_is_refused_at_submission(
    service: Service, image_job: tuple[Path, Path], tmp_path: Path
) -> None:
    model, _ = image_job
    stray = tmp_path / "stray.zip"
    with zipfile.ZipFile(stray, "w") as archive:
        archive.writestr("train/a/1.png", _png(10, 0))
        archive.writestr("train/a/notes.txt", b"hello")
    with Client(service.url, service.token) as client, pytest.raises(ApiError) as refused:
        client.submit(model, data=stray)
    assert (refused.value.code, refused.value.status, refused.value.field) == ("BAD_DATA", 422, "data")
    assert "notes.txt" in refused.value.message
