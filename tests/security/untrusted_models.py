"""Model files that attack the worker: a pickle payload, a memory hog and an endless loop.

Each is a genuine ``torch.export`` archive of a one-layer model (``fc``, 4 inputs, 2
classes), so it gets past the API's checks and reaches the sandboxed child like any
real submission; what it then tries is what the sandbox and the limits must stop.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch._higher_order_ops.while_loop import while_loop

from worker_fixtures import Pool

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


class _Exec:
    """Unpickling this runs ``code``: what a malicious weights entry carries."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (self.code,)


def with_payload(pt2: bytes, code: str) -> bytes:
    """``pt2`` with its first weight marked ``use_pickle`` and replaced by a pickle that runs ``code``."""
    source = zipfile.ZipFile(io.BytesIO(pt2))
    config_name = next(n for n in source.namelist() if n.endswith("/weights/model_weights_config.json"))
    config = json.loads(source.read(config_name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    weight_name = f"{config_name.rsplit('/', 1)[0]}/{first['path_name']}"
    replaced = {config_name: json.dumps(config).encode(), weight_name: pickle.dumps(_Exec(code))}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info, replaced.get(info.filename, source.read(info)))
    return out.getvalue()


def touch_and_connect(marker: Path, port: int) -> str:
    """Python that creates ``marker`` and opens a TCP connection to ``127.0.0.1:port``."""
    return (
        f"import pathlib, socket; pathlib.Path({str(marker)!r}).touch(); "
        f"socket.create_connection(('127.0.0.1', {port}), timeout=5).close()"
    )
