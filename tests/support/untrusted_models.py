"""Model files that attack the worker: a pickle payload, a memory hog and an endless loop.

Each is a genuine ``torch.export`` archive of a one-layer model (``fc``, 4 inputs, 2
classes), so it gets past the API's checks and reaches the sandboxed child like any
real submission; what it then tries is what the sandbox and the limits must stop.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch
from torch._higher_order_ops.while_loop import while_loop

from support.pool import Pool

# the hog wants this many bytes per sample: two samples (the worker's first probe) exceed 1 GiB
HOG_BYTES_PER_SAMPLE = 1 << 29
# the sandboxed pool's per-job memory ceiling, and a made-up secret in its workers' environment
CEILING = 1 << 30
CANARY = "sandbox-canary-7f3a"


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)


class Plain(_Net):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class Hog(_Net):
    """Allocates (and fills) half a GiB per sample on top of the real work."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        waste = x.new_ones(x.shape[0], HOG_BYTES_PER_SAMPLE // 4)
        return self.fc(x) + waste.sum(1, keepdim=True)


class Forever(_Net):
    """A loop whose condition never turns false, exported as torch's ``while_loop``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        start = torch.zeros((), dtype=torch.int64)
        _, h = while_loop(lambda i, h: i >= 0, lambda i, h: (i + 1, h * 1.0), (start, x))
        return self.fc(h)


def export(model: torch.nn.Module) -> bytes:
    batch = torch.export.Dim("batch")
    program = torch.export.export(model.eval(), (torch.randn(2, 4),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def dataset() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, x_train=rng.standard_normal((40, 4), dtype=np.float32), y_train=np.arange(40) % 2)
    return buffer.getvalue()


def submit(pool: Pool, model: bytes, data: bytes | None = None, **spec: Any) -> dict[str, Any]:
    """Submit ``model`` (with this module's data unless ``data``) for one epoch; the created job."""
    files = {"model": ("model.pt2", model), "data": ("data.npz", data or dataset())}
    created = pool.post("/v1/jobs", files=files, data={"spec": json.dumps({"epochs": 1, "batch_size": 8, **spec})})
    assert created.status_code == 201, created.text
    return dict(created.json())
