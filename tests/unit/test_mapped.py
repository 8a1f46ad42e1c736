"""Datasets kept on disk and memory-mapped: the arrays a run reads, and memory bounded by a batch."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from quantlib import mapped
from quantlib.data import DataError, load_dataset
from quantlib.mapped import map_npz


def _arrays(n: int = 40) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.standard_normal((n, 3, 8, 8)).astype(np.float32),
        "y_train": rng.integers(0, 5, n),
        "x_eval": np.asfortranarray(rng.standard_normal((n // 2, 3, 8, 8)).astype(np.float32)),
        "y_eval": rng.integers(0, 5, n // 2),
    }


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed], ids=["stored", "compressed"])
def test_every_array_is_mapped_with_its_values(save, tmp_path: Path) -> None:
    arrays = _arrays()
    save(tmp_path / "data.npz", **arrays)
    scratch = tmp_path / "scratch"
    mapped_arrays = map_npz(tmp_path / "data.npz", scratch)
    assert set(mapped_arrays) == set(arrays)
    for key, array in arrays.items():
        assert isinstance(mapped_arrays[key], np.memmap) and not mapped_arrays[key].flags.writeable
        np.testing.assert_array_equal(mapped_arrays[key], array)
    # stored members are read where they lie in the archive; compressed ones are inflated once, to disk
    inflated = sorted(path.name for path in scratch.glob("*.npy")) if scratch.exists() else []
    assert inflated == ([] if save is np.savez else sorted(f"{key}.npy" for key in arrays))
    dataset = load_dataset(tmp_path / "data.npz", scratch=scratch)
    assert all(isinstance(array, np.memmap) for array in dataset.x_train)
    np.testing.assert_array_equal(dataset.y_eval, arrays["y_eval"])


def test_mapped_arrays_are_checked_like_loaded_ones(tmp_path: Path) -> None:
    arrays = _arrays()
    arrays["x_train"][17, 0, 0, 0] = np.nan
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(DataError, match="NaN or Inf values \\(first in sample 17\\)") as refused:
        load_dataset(tmp_path / "data.npz", scratch=tmp_path / "scratch")
    assert refused.value.field == "x_train"


def test_object_arrays_and_cut_members_are_refused_without_unpickling(tmp_path: Path) -> None:
    np.savez(tmp_path / "objects.npz", x_train=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="Python objects") as refused:
        map_npz(tmp_path / "objects.npz", tmp_path / "scratch")
    assert refused.value.field == "x_train"
    np.save(tmp_path / "x_train.npy", np.ones((100, 10), np.float32))
    header = (tmp_path / "x_train.npy").read_bytes()[:200]  # the header and a few rows of 4000 bytes
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as archive:
        archive.writestr("x_train.npy", header)
    with pytest.raises(DataError, match="cut short"):
        map_npz(tmp_path / "cut.npz", tmp_path / "scratch")


def test_compressed_arrays_may_not_inflate_without_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deflate reaches ~1000:1: a small upload could fill the worker's disk once inflated."""
    np.savez_compressed(tmp_path / "zeros.npz", x_train=np.zeros((1000, 1000), np.float32))
    monkeypatch.setattr(mapped, "INFLATE_SLACK", 0)  # the 4 MB of zeros, not 256 MiB more, decide here
    with pytest.raises(DataError, match="numpy.savez \\(uncompressed\\)"):
        map_npz(tmp_path / "zeros.npz", tmp_path / "scratch")
    assert not (tmp_path / "scratch").exists()


def test_a_dataset_larger_than_the_data_ceiling_loads_and_is_checked(tmp_path: Path) -> None:
    """400 MB of inputs under a 200 MiB RLIMIT_DATA (the sandbox's kind of ceiling): mapped and checked in
    chunks it loads; read into memory it cannot."""
    path = tmp_path / "big.npz"
    np.savez(path, x_train=np.ones((100_000, 1000), np.float32), y_train=np.zeros(100_000, np.int64))
    code = (
        "import resource, sys; from pathlib import Path; from quantlib.data import load_dataset; "
        "resource.setrlimit(resource.RLIMIT_DATA, (200 << 20, resource.RLIM_INFINITY)); "
        "mapped = load_dataset(sys.argv[1], scratch=Path(sys.argv[2])); "
        "print(float(next(iter(mapped.x_train))[-1].sum())); "
        "load_dataset(sys.argv[1])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "scratch")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.stdout.split() == ["1000.0"], run.stderr[-2000:]
    assert run.returncode != 0 and "MemoryError" in run.stderr, run.stderr[-2000:]
