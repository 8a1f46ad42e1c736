"""Bad input that only the model can reveal: the API accepts it, the worker fails it as the user's.

The API never loads a model, so labels beyond the model's outputs pass submission; the
worker's first probe finds them before any calibration or training. A learning rate that
makes the run diverge shows only in training (``DIVERGED``). (Config layers the
model lacks and data of the wrong sample shape are in tests/workers/test_pool.py.)
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from support.pool import Pool, finished
from support.untrusted_models import Plain, export, submit


def test_labels_beyond_the_models_outputs_fail_as_bad_data(sandboxed_pool: Pool) -> None:
    data = io.BytesIO()
    np.savez(data, x_train=np.zeros((40, 4), np.float32), y_train=np.full(40, 7, np.int64))
    job = sandboxed_pool.wait_for_job(submit(sandboxed_pool, export(Plain()), data.getvalue())["id"], finished)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "BAD_DATA" and job["failure"]["user_error"] is True, job["failure"]
    assert "y_train" in job["failure"]["message"] and "7" in job["failure"]["message"]
    assert job["progress"] is None or job["phase"] == "loading", "it failed before calibrating"


def test_a_run_that_diverges_fails_as_diverged_and_no_nan_reaches_json(sandboxed_pool: Pool) -> None:
    """lr 10 with SGD blows a linear model's MSE up to inf within a few epochs: the user's setting."""
    data = io.BytesIO()
    np.savez(data, x_train=np.random.default_rng(0).standard_normal((64, 4), dtype=np.float32))
    created = submit(sandboxed_pool, export(Plain()), data.getvalue(), lr=10.0, optimizer="sgd", epochs=10)
    job = sandboxed_pool.wait_for_job(created["id"], finished)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "DIVERGED" and job["failure"]["user_error"] is True, job["failure"]
    assert "lower spec.lr" in job["failure"]["message"]
    events = sandboxed_pool.get(f"/v1/jobs/{job['id']}/events", stream=True)
    for line in events.iter_lines(decode_unicode=True):
        if line.startswith("data:"):
            json.loads(line[5:], parse_constant=lambda name: pytest.fail(f"{name} in the event stream"))
        if line == "event: end":
            break
