"""Every way a dataset upload can be wrong gives a DataError that names the array."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from quantlib.data import ALLOWED_KEYS, DataError, Dataset, check_labels, load_dataset
from quantlib.tasks import task_named


def _good(n: int = 6, eval_n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.standard_normal((n, 1, 4, 4)).astype(np.float32),
        "y_train": rng.integers(0, 3, n).astype(np.int64),
        "x_eval": rng.standard_normal((eval_n, 1, 4, 4)).astype(np.float32),
        "y_eval": rng.integers(0, 3, eval_n).astype(np.int64),
    }


def _write(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def _error(source: object) -> DataError:
    with pytest.raises(DataError) as info:
        load_dataset(source)  # type: ignore[arg-type]
    assert info.value.code == "BAD_DATA"
    assert info.value.to_dict() == {"code": "BAD_DATA", "message": info.value.message, "field": info.value.field}
    return info.value


def test_full_dataset_loads_from_a_path_and_a_file_object(tmp_path: Path) -> None:
    arrays = _good()
    path = _write(tmp_path, **arrays)
    for source in (path, str(path), io.BytesIO(path.read_bytes())):
        data = load_dataset(source)
        assert isinstance(data, Dataset) and data.has_labels
        assert data.x_train.describe() == {"": {"dtype": "float32", "shape": [1, 4, 4]}}
        np.testing.assert_array_equal(data.y_eval, arrays["y_eval"])
        x, y, source_name = data.eval_split()
        assert source_name == "x_eval" and x.arrays[""].shape == (4, 1, 4, 4) and y is not None


def test_unlabelled_train_only_dataset_evaluates_on_train(tmp_path: Path) -> None:
    data = load_dataset(_write(tmp_path, x_train=_good()["x_train"]))
    assert not data.has_labels
    x, y, source_name = data.eval_split()
    assert source_name == "x_train" and y is None and len(x) == 6


def test_missing_file(tmp_path: Path) -> None:
    err = _error(tmp_path / "nope.npz")
    assert err.field == "data" and "does not exist" in err.message


def test_text_file_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    path.write_text("x_train,y_train\n1,2\n")
    err = _error(path)
    assert err.field == "data" and "numpy.savez" in err.message


def test_single_npy_array_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "data.npy"
    np.save(path, _good()["x_train"])
    err = _error(path)
    assert err.field == "data" and ".npz" in err.message


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, **_good(), labels=np.zeros(6, np.int64)))
    assert err.field == "labels"
    assert all(key in err.message for key in ALLOWED_KEYS)


def test_x_train_is_required(tmp_path: Path) -> None:
    err = _error(_write(tmp_path, x_eval=_good()["x_eval"]))
    assert err.field == "x_train" and "required" in err.message


@pytest.mark.parametrize(
    ("key", "dtype", "cast"),
    [
        ("x_train", np.float64, "x_train.astype(np.float32)"),
        ("x_eval", np.float64, "x_eval.astype(np.float32)"),
        ("x_train", np.uint32, "the dtype the model's input takes"),
        ("y_train", np.int32, "y_train.astype(np.int64)"),
        ("y_eval", np.float64, "y_eval.astype(np.float32)"),
    ],
)
def test_wrong_dtype_says_how_to_cast(tmp_path: Path, key: str, dtype: type, cast: str) -> None:
    arrays = _good()
    arrays[key] = arrays[key].astype(dtype)
    err = _error(_write(tmp_path, **arrays))
    assert err.field == key and cast in err.message


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    arrays = _good()
    arrays["y_train"] = np.array([object()] * 6, dtype=object)
    err = _error(_write(tmp_path, **arrays))
    assert err.field == "y_train" and "pickle" in err.message


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("y_train", np.zeros((), np.int64), "shape (N, ...)"),
        ("x_train", np.zeros(6, np.float32), "at least 2 dimensions"),
        ("x_train", np.zeros((0, 1, 4, 4), np.float32), "empty"),
        ("x_eval", np.zeros((4, 0), np.float32), "empty"),
    ],
)
def test_bad_shapes(tmp_path: Path, key: str, value: np.ndarray, words: str) -> None:
    arrays = _good()
    arrays[key] = value
    err = _error(_write(tmp_path, **arrays))
    assert err.field == key and words in err.message


def test_label_count_must_match_samples(tmp_path: Path) -> None:
    arrays = _good()
    arrays["y_train"] = arrays["y_train"][:5]
    err = _error(_write(tmp_path, **arrays))
    assert err.field == "y_train" and "5 labels for 6 samples" in err.message


def test_eval_samples_must_match_train_sample_shape(tmp_path: Path) -> None:
    arrays = _good()
    arrays["x_eval"] = np.zeros((4, 1, 5, 5), np.float32)
    err = _error(_write(tmp_path, **arrays))
    assert err.field == "x_eval" and "(1, 5, 5)" in err.message and "(1, 4, 4)" in err.message


def test_y_eval_without_x_eval(tmp_path: Path) -> None:
    arrays = _good()
    del arrays["x_eval"]
    err = _error(_write(tmp_path, **arrays))
    assert err.field == "y_eval" and "without x_eval" in err.message


@pytest.mark.parametrize("dropped", ["y_train", "y_eval"])
def test_labels_for_every_split_or_none(tmp_path: Path, dropped: str) -> None:
    arrays = _good()
    del arrays[dropped]
    err = _error(_write(tmp_path, **arrays))
    assert err.field == dropped and "every split" in err.message


@pytest.mark.parametrize(("key", "value"), [("x_train", np.nan), ("x_eval", np.inf), ("x_eval", -np.inf)])
def test_nan_and_inf_are_rejected(tmp_path: Path, key: str, value: float) -> None:
    arrays = _good()
    arrays[key][2, 0, 1, 1] = value
    err = _error(_write(tmp_path, **arrays))
    assert err.field == key and "NaN or Inf" in err.message and "sample 2" in err.message


@pytest.mark.parametrize("key", ["y_train", "y_eval"])
def test_negative_labels(tmp_path: Path, key: str) -> None:
    arrays = _good()
    arrays[key][1] = -1
    err = _error(_write(tmp_path, **arrays))
    assert err.field == key and "negative" in err.message


@pytest.mark.parametrize("key", ["y_train", "y_eval"])
def test_labels_must_index_the_model_outputs(tmp_path: Path, key: str) -> None:
    arrays = _good()
    arrays[key][0] = 7
    data = load_dataset(_write(tmp_path, **arrays))
    check_labels(data, task_named("classification"), (6, 8))
    with pytest.raises(DataError) as info:
        check_labels(data, task_named("classification"), (6, 3))
    assert info.value.field == key and "3 outputs" in info.value.message and "label 7" in info.value.message


def test_both_splits_need_the_same_kind_of_labels(tmp_path: Path) -> None:
    arrays = _good()
    arrays["y_eval"] = arrays["y_eval"].astype(np.float32)
    err = _error(_write(tmp_path, **arrays))
    assert err.field == "y_eval" and "same kind of labels" in err.message
