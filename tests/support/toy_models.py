"""Tiny models and helpers for the unit tests.

Everything here is small enough that a QAT round trip (calibrate, a few SGD steps,
ONNX export, onnxruntime) takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

NUM_CLASSES = 10


class Reshape(nn.Module):
    """``x.reshape(batch, *shape)``: lets a Sequential hop between 1-D and 3-D layers."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


def _head(features: int) -> list[nn.Module]:
    return [nn.ReLU(), nn.Flatten(), nn.Linear(features, NUM_CLASSES)]


# kind -> (builder, per-sample input shape). Layer "0" is the layer under test; every
# model ends in a quantized Linear classifier ("3") fed by a ReLU (so fixed_min there).
LAYER_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "Conv1d": (lambda: nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), *_head(8 * 8)), (3, 8)),
    "Conv2d": (lambda: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *_head(8 * 6 * 6)), (3, 6, 6)),
    "Conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), *_head(4 * 4 * 4 * 4)), (2, 4, 4, 4)),
    "ConvTranspose1d": (lambda: nn.Sequential(nn.ConvTranspose1d(3, 4, 3, stride=2), *_head(4 * 17)), (3, 8)),
    "ConvTranspose2d": (
        lambda: nn.Sequential(nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), *_head(4 * 8 * 8)),
        (3, 4, 4),
    ),
    # big enough that weights, not graph metadata, dominate the file size
    "Linear": (lambda: nn.Sequential(nn.Linear(256, 256), *_head(256)), (256,)),
    "grouped": (lambda: nn.Sequential(nn.Conv2d(4, 8, 3, groups=2, padding=1), *_head(8 * 4 * 4)), (4, 4, 4)),
    "depthwise": (lambda: nn.Sequential(nn.Conv2d(4, 4, 3, groups=4, padding=1), *_head(4 * 4 * 4)), (4, 4, 4)),
}


def mixed_2d() -> nn.Module:
    """Conv2d, depthwise, grouped, ConvTranspose2d and Linear in one small net."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 1, groups=2),
        nn.ConvTranspose2d(8, 4, 2, stride=2),
        *_head(4 * 8 * 8),
    )


def mixed_1d_3d() -> nn.Module:
    """Conv1d, ConvTranspose1d, Conv3d and Linear in one small net."""
    return nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.ConvTranspose1d(4, 4, 3, padding=1),
        Reshape(4, 2, 2, 2),
        nn.Conv3d(4, 4, 3, padding=1),
        *_head(4 * 8),
    )


MIXED_MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mixed_2d": (mixed_2d, (3, 4, 4)),
    "mixed_1d_3d": (mixed_1d_3d, (2, 8)),
}


class ConvBnNet(nn.Module):
    """conv-bn-relu twice, then a classifier: the BatchNorm folding case.

    ``conv2`` has no bias (the usual form before a BN) so folding must create one.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.drop(torch.flatten(self.pool(x), 1)))


CONV_BN_INPUT = (3, 6, 6)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def set_dst_type(config_file: Path, dst_type: str) -> None:
    """Switch every layer of a written config (activations and weights) to ``dst_type``."""
    config = read_json(config_file)
    for entry in config.values():
        if isinstance(entry, dict):
            entry["retrain_data_config"]["dst_type"] = dst_type
            entry["retrain_weight_config"]["dst_type"] = dst_type
    write_json(config_file, config)


def train_steps(
    model: nn.Module, input_shape: tuple[int, ...], *, steps: int = 3, batch: int = 8, lr: float = 1e-2
) -> None:
    """Calibrate (first forward) and take a few SGD steps on random labelled data."""
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        x = torch.randn(batch, *input_shape)
        y = torch.randint(0, NUM_CLASSES, (batch,))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
