"""The report's numbers: top-1, agreement with FP32 and output SQNR."""

from __future__ import annotations

import math

import numpy as np

from quantlib.metrics import sqnr_db, top1_accuracy, top1_agreement


def test_top1_accuracy_and_agreement() -> None:
    ref = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.2, 0.1]], np.float32)
    out = np.array([[2.0, 1.0], [4.0, 3.0], [1.0, 0.5], [0.0, 0.1]], np.float32)
    assert top1_accuracy(ref, np.array([0, 1, 1, 0])) == 0.75
    assert top1_agreement(ref, out) == 0.5


def test_agreement_uses_the_class_axis_of_score_maps() -> None:
    ref = np.zeros((2, 3, 2, 2), np.float32)
    ref[:, 1] = 1.0
    out = ref.copy()
    out[0, 2, 0, 0] = 5.0
    assert top1_agreement(ref, out) == 7 / 8


def test_sqnr_matches_the_definition() -> None:
    ref = np.array([3.0, 4.0], np.float32)
    out = np.array([3.0, 4.5], np.float32)
    assert math.isclose(sqnr_db(ref, out), 10 * math.log10(25 / 0.25))
    assert sqnr_db(ref, ref.copy()) == math.inf
