"""A small CNN on sklearn's 8x8 digits: real data, a few seconds to train on a CPU.

The net has each structure the library must handle in one place: conv-bn-relu, a
residual add (the quantized conv after it sees a possibly negative input), a depthwise
conv, pooling and a linear head. ``python -m quantlib.examples.digits DIR`` writes
``DIR/model.pt2`` and ``DIR/data.npz``, the inputs ``qat quantize`` takes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, *, stride: int = 1, groups: int = 1, relu: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class DigitsNet(nn.Module):
    """stem -> residual block -> depthwise + pointwise -> global pool -> linear."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = ConvBNReLU(1, width)
        self.block_a = ConvBNReLU(width, width)
        self.block_b = ConvBNReLU(width, width, relu=False)
        self.depthwise = ConvBNReLU(width, width, stride=2, groups=width)
        self.pointwise = ConvBNReLU(width, 2 * width, kernel=1)
        self.fc = nn.Linear(2 * width, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(x + self.block_b(self.block_a(x)))
        x = self.pointwise(self.depthwise(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def digits_dataset(seed: int = 0, eval_fraction: float = 0.25) -> dict[str, np.ndarray]:
    """The digits as the ``.npz`` layout ``qat quantize`` reads, split by ``seed``.

    Pixels are standardised with the training split's statistics, as a deployed
    pipeline would, so the eval split carries no information into training.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(x, y, test_size=eval_fraction, random_state=seed, stratify=y)
    mean, std = x_train.mean(), x_train.std()
    return {
        "x_train": ((x_train - mean) / std).astype(np.float32),
        "y_train": y_train,
        "x_eval": ((x_eval - mean) / std).astype(np.float32),
        "y_eval": y_eval,
    }


def train_fp32(model: nn.Module, data: dict[str, np.ndarray], epochs: int = 30, seed: int = 0) -> float:
    """Train ``model`` in place to a good FP32 checkpoint; returns its eval top-1 accuracy.

    Adam with a cosine schedule and mild label smoothing reaches ~98% in a few seconds,
    which is the baseline QAT has to hold.
    """
    torch.manual_seed(seed)
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = epochs * ((len(x) + 63) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data["x_eval"]))
    return float((logits.argmax(1).numpy() == data["y_eval"]).mean())


def export_program(model: nn.Module) -> torch.export.ExportedProgram:
    """The model as a service upload: an ExportedProgram whose batch axis may vary."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = (torch.zeros(2, *IMAGE_SHAPE),)
    return torch.export.export(model.eval(), example, dynamic_shapes=({0: batch},))


def write_example(out_dir: str | Path, *, seed: int = 0, epochs: int = 30) -> tuple[Path, Path]:
    """Train the FP32 digits net and write ``model.pt2`` and ``data.npz`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = digits_dataset(seed)
    torch.manual_seed(seed)
    model = DigitsNet()
    if epochs:
        train_fp32(model, data, epochs=epochs, seed=seed)
    model_path, data_path = out / "model.pt2", out / "data.npz"
    torch.export.save(export_program(model), model_path)
    np.savez(data_path, **cast(dict[str, Any], data))  # Any: else mypy matches **data to allow_pickle: bool
    return model_path, data_path


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "digits_example"
    for path in write_example(target):
        print(path)
