"""Deploy-shaped models for the latency table: the layer patterns that integer kernels must cover.

Random-initialised (latency and agreement do not need trained weights), at the sizes the
deploy issue measured: images 3x64x64, sequences of 64 tokens; ResNet-18-, MobileNetV2-,
EfficientNet-B0-, ViT- and BERT-shaped, and an MLP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import EncoderBlock, TinyTransformer, conv_bn_relu


class _Basic(nn.Module):
    """ResNet's basic block: two 3x3 convs and a residual add (a 1x1 conv where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(cin, cout, stride=stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.skip(x))


class ResNet18ish(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(3, 64, k=7, stride=2), nn.MaxPool2d(3, 2, 1)]
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_Basic(cin, cout, stride), _Basic(cout, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class _Inverted(nn.Module):
    """MobileNetV2's inverted residual: expand 1x1, depthwise 3x3, project 1x1 (linear), add when it can."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.block = nn.Sequential(
            conv_bn_relu(cin, hidden, k=1),
            conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2ish(nn.Module):
    # (expansion, channels, repeats, first stride), as in the paper
    SETTINGS = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(3, 32, stride=2)]
        cin = 32
        for expand, cout, repeats, stride in self.SETTINGS:
            for i in range(repeats):
                layers.append(_Inverted(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers.append(conv_bn_relu(cin, 1280, k=1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _conv_bn_silu(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return conv_bn_relu(cin, cout, k, stride, groups, activation=nn.SiLU)


class _MBConv(nn.Module):
    """EfficientNet's MBConv: expand 1x1, depthwise, squeeze-and-excite, project 1x1, add when it can."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, k: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_bn_silu(cin, hidden, 1) if expand != 1 else nn.Identity()
        self.depthwise = _conv_bn_silu(hidden, hidden, k, stride, groups=hidden)
        self.squeeze, self.excite = nn.Conv2d(hidden, max(1, cin // 4), 1), nn.Conv2d(max(1, cin // 4), hidden, 1)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(self.expand(x))
        h = h * torch.sigmoid(self.excite(F.silu(self.squeeze(F.adaptive_avg_pool2d(h, 1)))))
        h = self.project(h)
        return x + h if self.residual else h


class EfficientNetB0ish(nn.Module):
    # (expansion, channels, repeats, first stride, kernel), as in EfficientNet-B0
    SETTINGS = (
        (1, 16, 1, 1, 3),
        (6, 24, 2, 2, 3),
        (6, 40, 2, 2, 5),
        (6, 80, 3, 2, 3),
        (6, 112, 3, 1, 5),
        (6, 192, 4, 2, 5),
        (6, 320, 1, 1, 3),
    )

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_silu(3, 32, stride=2)]
        cin = 32
        for expand, cout, repeats, stride, k in self.SETTINGS:
            for i in range(repeats):
                layers.append(_MBConv(cin, cout, stride if i == 0 else 1, expand, k))
                cin = cout
        layers.append(_conv_bn_silu(cin, 1280, k=1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class ViTish(nn.Module):
    """A small ViT: 8x8 patches of a 64x64 image (64 tokens), 4 encoder blocks of width 192."""

    def __init__(self, classes: int = 10, dim: int = 192, depth: int = 4, heads: int = 3, patch: int = 8) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.position = nn.Parameter(torch.randn(1, (64 // patch) ** 2, dim) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(dim=1))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class DeployModel:
    name: str
    build: Callable[[], nn.Module]
    sample_shape: tuple[int, ...]


DEPLOY_ZOO: tuple[DeployModel, ...] = (
    DeployModel("ResNet-18-shaped", ResNet18ish, (3, 64, 64)),
    DeployModel("MobileNetV2-shaped", MobileNetV2ish, (3, 64, 64)),
    DeployModel("EfficientNet-B0-shaped", EfficientNetB0ish, (3, 64, 64)),
    DeployModel("ViT-shaped (4 blocks)", ViTish, (3, 64, 64)),
    DeployModel("BERT-shaped 4-layer encoder", lambda: TinyTransformer(features=64, dim=128, depth=4), (64, 64)),
    DeployModel("MLP 784-1024-1024-10", MLP, (784,)),
)
