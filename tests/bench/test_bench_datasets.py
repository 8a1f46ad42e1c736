"""The dataset loader's guards: a changed download fails, duplicates never straddle the split."""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench import datasets


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _idx(images: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, images.ndim]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    return header + images.astype(np.uint8).tobytes()


def test_members_are_read_only_when_their_sha256_matches(tmp_path: Path) -> None:
    good, bad = b"pixels", b"pixels, but changed"
    wheel = _wheel(tmp_path / "set.whl", {"d/a": good, "d/b": bad})
    members = {"a": ("d/a", datasets.sha256(good)), "b": ("d/b", datasets.sha256(good))}
    with pytest.raises(datasets.DatasetError, match="d/b: sha256 .* does not match"):
        datasets.read_members(wheel, members)
    assert datasets.read_members(wheel, {"a": members["a"]}) == {"a": good}


def test_a_cached_archive_that_changed_is_refused_before_use(tmp_path: Path) -> None:
    archive = datasets.Archive("x==1", "x-1.whl", datasets.sha256(b"original"))
    (tmp_path / "x-1.whl").write_bytes(b"tampered")
    with pytest.raises(datasets.DatasetError, match="x-1.whl"):
        datasets.fetch(archive, tmp_path)


def test_idx_files_parse_to_their_declared_shape() -> None:
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert np.array_equal(datasets.parse_idx(_idx(images)), images)
    with pytest.raises(datasets.DatasetError):
        datasets.parse_idx(b"\x00\x00\x0d\x01" + bytes(8))


def test_pickles_hold_arrays_and_nothing_that_runs_code() -> None:
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(datasets.unpickle_array(gzip.compress(pickle.dumps(array))), array)
    with pytest.raises(datasets.DatasetError, match="refusing to unpickle"):
        datasets.unpickle_array(gzip.compress(pickle.dumps(io.BytesIO(b"x"))))


def test_duplicates_are_dropped_before_the_split_so_none_is_both_trained_and_scored() -> None:
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8)
    images = np.concatenate([distinct, distinct[:10]])  # 10 exact copies
    labels = np.arange(50) % 10
    kept, kept_labels = datasets.drop_duplicates(images, labels)
    assert len(kept) == 40 and np.array_equal(kept, distinct) and np.array_equal(kept_labels, labels[:40])
    split = datasets.split(kept, kept_labels, 30, 10, seed=3)
    train = {row.tobytes() for row in split.x_train}
    assert len(train) == 30 and not train & {row.tobytes() for row in split.x_eval}
    assert abs(float(split.x_train.mean())) < 1e-5 and split.x_train.dtype == np.float32


def test_the_split_is_seeded() -> None:
    images = np.random.default_rng(0).integers(0, 255, (20, 28, 28), dtype=np.uint8)
    labels = np.arange(20)
    a, b, c = (datasets.split(images, labels, 10, 5, seed) for seed in (1, 1, 2))
    assert np.array_equal(a.y_train, b.y_train) and not np.array_equal(a.y_train, c.y_train)
    with pytest.raises(datasets.DatasetError, match="asked for 15 \\+ 10"):
        datasets.split(images, labels, 15, 10, seed=0)
