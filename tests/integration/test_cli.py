"""The installed ``qat quantize`` command, run as a user runs it: a separate process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from quantlib.examples.digits import write_example
from quantlib.outputs import OUTPUT_FILES
from support.qat_cli import assert_user_error, qat


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_example(tmp_path_factory.mktemp("digits"), epochs=3)


def test_quantize_writes_every_output_and_prints_the_table(example, tmp_path: Path) -> None:
    model, data = example
    out = tmp_path / "out"
    run = qat("quantize", model, "--data", data, "--out", out, "--epochs", 1)
    assert run.returncode == 0, run.stderr
    assert {path.name for path in out.iterdir()} == set(OUTPUT_FILES.values()), "the names the service publishes"
    assert "FP32 vs INT8" in run.stdout and "onnxruntime" in run.stdout
    assert "FP32 latency (batch 1)" in run.stdout and "x size" in run.stdout
    assert str(out / "model_int8.onnx") in run.stdout
    assert str(out / "report.html") in run.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["spec"]["epochs"] == 1 and report["accuracy"]["int8_onnxruntime"]["top1"] > 0.5

    # The config it wrote is a valid --config for the next run; --json prints the report.
    again = tmp_path / "again"
    run = qat(
        "quantize", model, "--data", data, "--config", out / "config.json", "--out", again, "--epochs", 0, "--json"
    )
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert printed["files"]["deploy_model"] == str(again / "model_int8.onnx")
    assert printed["loss"]["epoch_means"] == []
    assert (again / "config.json").read_text() == (out / "config.json").read_text()


def test_nan_in_data(example, tmp_path: Path) -> None:
    model, data = example
    arrays = dict(np.load(data))
    arrays["x_train"][5, 0, 3, 3] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, **arrays)
    assert_user_error(qat("quantize", model, "--data", bad, "--out", tmp_path / "o"), "BAD_DATA", "x_train")


def test_unknown_config_key(example, tmp_path: Path) -> None:
    model, data = example
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"version": 1, "stem.0": {"retrain_data_config": {"clip_mx": 3.0}}}))
    run = qat("quantize", model, "--data", data, "--config", config, "--out", tmp_path / "o")
    assert_user_error(run, "BAD_CONFIG", "stem.0.retrain_data_config.clip_mx")
    assert "did you mean 'clip_max'" in run.stderr


def test_config_layer_the_model_lacks(example, tmp_path: Path) -> None:
    model, data = example
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"version": 1, "stem.O": {"retrain_enable": True}}))
    run = qat("quantize", model, "--data", data, "--config", config, "--out", tmp_path / "o")
    assert_user_error(run, "BAD_CONFIG", "stem.O")
    assert "did you mean 'stem.0'" in run.stderr


def test_too_many_calibration_images(example, tmp_path: Path) -> None:
    model, data = example
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"version": 1, "batch_num": 2}))
    run = qat("quantize", model, "--data", data, "--config", config, "--batch-size", 32, "--out", tmp_path / "o")
    assert_user_error(run, "BAD_CONFIG", "batch_num")
    assert "64" in run.stderr and "50" in run.stderr


def test_text_file_named_pt2(example, tmp_path: Path) -> None:
    _, data = example
    fake = tmp_path / "model.pt2"
    fake.write_text("not a model\n")
    assert_user_error(qat("quantize", fake, "--data", data, "--out", tmp_path / "o"), "BAD_MODEL", "model")


def test_bad_setting(example, tmp_path: Path) -> None:
    model, data = example
    run = qat("quantize", model, "--data", data, "--out", tmp_path / "o", "--lr", "-1")
    assert_user_error(run, "BAD_SPEC", "lr")


def test_quantize_reads_an_image_archive_with_a_preprocess(tmp_path: Path) -> None:
    """``--data images.zip --preprocess JSON``: class folders of PNGs made into the model's input."""
    import io
    import zipfile

    import torch
    from PIL import Image

    images = tmp_path / "images.zip"
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(images, "w") as archive:
        for name, level in {"dark": 40, "light": 210}.items():
            for i in range(8):
                buffer = io.BytesIO()
                pixels = np.clip(level + rng.integers(-25, 25, (12, 12, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(buffer, format="PNG")
                archive.writestr(f"{name}/{i}.png", buffer.getvalue())
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2)).eval()
    program = torch.export.export(model, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: torch.export.Dim("b")},))
    torch.export.save(program, tmp_path / "model.pt2")
    args = ["quantize", tmp_path / "model.pt2", "--data", images, "--out", tmp_path / "out", "--epochs", 0]
    run = qat(*args, "--preprocess", '{"resize": 8, "mean": [0.5], "std": [0.5]}', "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["dataset"]["inputs"] == {"input": {"dtype": "float32", "shape": [3, 8, 8]}}
    assert_user_error(qat(*args, "--preprocess", '{"resize": "big"}'), "BAD_SPEC", "preprocess.resize")
