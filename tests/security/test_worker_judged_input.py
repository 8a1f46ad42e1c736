"""Bad input that only the model can reveal: the API accepts it, the worker fails it as the user's.

The API never loads a model, so labels beyond the model's outputs pass submission; the
worker's first probe finds them before any calibration or training. (Config layers the
model lacks and data of the wrong sample shape are in tests/workers/test_pool.py.)
"""

from __future__ import annotations

import io

import numpy as np

from untrusted_models import Plain, export, submit
from worker_fixtures import Pool, finished


def test_labels_beyond_the_models_outputs_fail_as_bad_data(sandboxed_pool: Pool) -> None:
    data = io.BytesIO()
    np.savez(data, x_train=np.zeros((40, 4), np.float32), y_train=np.full(40, 7, np.int64))
    job = sandboxed_pool.wait_for_job(submit(sandboxed_pool, export(Plain()), data.getvalue())["id"], finished)
    assert job["state"] == "FAILED"
    assert job["failure"]["code"] == "BAD_DATA" and job["failure"]["user_error"] is True, job["failure"]
    assert "y_train" in job["failure"]["message"] and "7" in job["failure"]["message"]
    assert job["progress"] is None or job["phase"] == "loading", "it failed before calibrating"
