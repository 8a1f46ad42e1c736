"""Image datasets as people keep them: zips and tars of JPEG/PNG files in class folders or with a CSV."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from quantlib.data import DataError, load_dataset
from quantlib.images import MAX_PIXELS, Preprocess
from quantlib.run import run_qat
from quantlib.spec import parse_spec

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}


def _png(color: tuple[int, int, int], size: tuple[int, int] = (12, 10), seed: int = 0) -> bytes:
    """A noisy image of ``color``, ``size`` = (width, height)."""
    noise = np.random.default_rng(seed).integers(-20, 20, (size[1], size[0], 3))
    pixels = np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _folders(n: int = 8, eval_n: int = 3) -> dict[str, bytes]:
    files = {}
    for c, (name, color) in enumerate(COLORS.items()):
        files |= {f"train/{name}/{i}.png": _png(color, seed=100 * c + i) for i in range(n)}
        files |= {f"val/{name}/{i}.png": _png(color, seed=100 * c + 50 + i) for i in range(eval_n)}
    return files | {"__MACOSX/._x.png": b"junk", "train/.DS_Store": b"junk"}


def test_class_folders_become_arrays_with_sorted_class_indices(tmp_path: Path) -> None:
    preprocess = Preprocess(resize=[8, 8], mean=[0.5], std=[0.25])
    data = load_dataset(_zip(tmp_path / "images.zip", _folders()), preprocess)
    x = data.x_train.arrays[""]
    assert x.shape == (24, 3, 8, 8) and x.dtype == np.float32
    assert data.x_eval is not None and data.x_eval.arrays[""].shape == (9, 3, 8, 8)
    # classes sorted by name: blue 0, green 1, red 2; the red channel of red images is high
    assert data.y_train is not None and sorted(set(data.y_train.tolist())) == [0, 1, 2]
    assert data.classes == ("blue", "green", "red")
    red = x[data.y_train == 2]
    assert red[:, 0].mean() > (220 / 255 - 0.5) / 0.25 - 0.5 and red[:, 2].mean() < 0


def test_decoded_images_can_go_to_a_mapped_file(tmp_path: Path) -> None:
    """What a job does: the decoded arrays are files in its folder, mapped, not process memory."""
    preprocess = Preprocess(resize=[8, 8])
    archive = _zip(tmp_path / "images.zip", _folders())
    in_memory = load_dataset(archive, preprocess)
    on_disk = load_dataset(archive, preprocess, tmp_path / "scratch")
    x = on_disk.x_train.arrays[""]
    assert isinstance(x, np.memmap) and (tmp_path / "scratch" / "x_train.npy").is_file()
    np.testing.assert_array_equal(x, in_memory.x_train.arrays[""])
    assert np.load(tmp_path / "scratch" / "x_eval.npy").shape == (9, 3, 8, 8)


def test_a_tar_with_a_csv_of_labels_and_the_preprocess_arithmetic(tmp_path: Path) -> None:
    image = _png((255, 0, 51), size=(6, 4))
    rows = "file,label,split\nimgs/a.png,cat,train\nimgs/b.png,dog,train\nimgs/c.png,cat,eval\n"
    path = tmp_path / "images.tar"
    with tarfile.open(path, "w") as archive:
        for name, data in {
            "labels.csv": rows.encode(),
            "imgs/a.png": image,
            "imgs/b.png": image,
            "imgs/c.png": image,
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = load_dataset(path, Preprocess(center_crop=[2, 4], channels="BGR"))
    assert data.y_train is not None and data.y_train.tolist() == [0, 1] and data.y_eval is not None
    pixel = data.x_train.arrays[""][0, :, 0, 0]
    decoded = np.asarray(Image.open(io.BytesIO(image)).convert("RGB"), np.float32)[1, 1] / 255  # the crop's corner
    np.testing.assert_allclose(pixel, decoded[::-1], atol=1e-6)
    assert data.x_train.arrays[""].shape == (2, 3, 2, 4)


@pytest.mark.parametrize(
    ("files", "preprocess", "words"),
    [
        (
            {"a/1.png": _png((1, 2, 3)), "a/2.png": _png((1, 2, 3), size=(8, 8))},
            Preprocess(),
            "set spec.preprocess.resize",
        ),
        ({"a/1.png": _png((1, 2, 3)), "a/notes.txt": b"hi"}, Preprocess(), "only JPEG/PNG images"),
        ({"a/1.png": b"not a png"}, Preprocess(), "cannot be decoded"),
        ({"1.png": _png((1, 2, 3))}, Preprocess(), "not in a class folder"),
        ({"a/1.png": _png((1, 2, 3))}, Preprocess(center_crop=64), "larger than the image"),
        (
            {"train/a/1.png": _png((1, 2, 3)), "eval/b/1.png": _png((1, 2, 3))},
            Preprocess(),
            "class 'b' have no training",
        ),
    ],
    ids=["sizes", "stray file", "corrupt", "no folder", "crop", "eval class"],
)
def test_archives_that_cannot_be_used_say_why(
    tmp_path: Path, files: dict[str, bytes], preprocess: Preprocess, words: str
) -> None:
    with pytest.raises(DataError) as refused:
        load_dataset(_zip(tmp_path / "bad.zip", files), preprocess)
    assert words in refused.value.message, refused.value.message


def test_an_image_bomb_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    side = int(MAX_PIXELS**0.5) + 100
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")  # a few kB on disk
    with pytest.raises(DataError, match="pixels; at most"):
        load_dataset(_zip(tmp_path / "bomb.zip", {"a/1.png": buffer.getvalue()}))


def test_an_image_classifier_quantizes_from_an_image_archive(tmp_path: Path) -> None:
    spec = parse_spec({"epochs": 1, "lr": 1e-3, "batch_size": 8, "preprocess": {"resize": [8, 8], "mean": [0.5]}})
    data = load_dataset(_zip(tmp_path / "images.zip", _folders()), spec.preprocess)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    report = run_qat(model.eval(), data, tmp_path / "out", spec=spec)
    assert report.task.name == "classification" and report.dataset["eval_source"] == "x_eval"
    assert report.dataset["inputs"] == {"input": {"dtype": "float32", "shape": [3, 8, 8]}}
    assert report.dataset["classes"] == ["blue", "green", "red"]
    assert "0 blue, 1 green, 2 red" in (tmp_path / "out" / "report.html").read_text()
