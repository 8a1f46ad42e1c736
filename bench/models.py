"""The benchmark's model zoo: one small model per layer family quantlib supports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        activation(),
    )


class MnistCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn_relu(1, 32), nn.MaxPool2d(2), conv_bn_relu(32, 64), nn.MaxPool2d(2))
        self.fc = nn.Linear(64 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class MobileNetish(nn.Module):
    """Depthwise-separable blocks, MobileNet style."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu(3, 16, stride=2)]
        for cin, cout, stride in ((16, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2)):
            layers += [conv_bn_relu(cin, cin, stride=stride, groups=cin), conv_bn_relu(cin, cout, k=1)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class TinyTransformer(nn.Module):
    """Two pre-norm encoder blocks; every projection is an nn.Linear."""

    def __init__(self, features: int = 16, dim: int = 128, heads: int = 4, depth: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(features, dim)
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads) for _ in range(depth))
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h.mean(dim=1))


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder block: attention and an MLP, each with a residual add."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(attn)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Conv1dNet(nn.Module):
    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, 32, 7, padding=3),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(32, 64, 5, padding=2),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1))


class AutoEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(conv_bn_relu(1, 16, stride=2), conv_bn_relu(16, 32, stride=2))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 1, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@dataclass(frozen=True)
class BenchModel:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    classes: int | None  # None: regression (autoencoder), loss is MSE to the input


ZOO: tuple[BenchModel, ...] = (
    BenchModel("mnist-cnn", MnistCNN, (64, 1, 28, 28), 10),
    BenchModel("mobilenet-ish", MobileNetish, (32, 3, 32, 32), 10),
    BenchModel("transformer-ish", TinyTransformer, (32, 32, 16), 10),
    BenchModel("conv1d", Conv1dNet, (64, 1, 256), 10),
    BenchModel("autoencoder", AutoEncoder, (32, 1, 28, 28), None),
)


class MeanPooled(nn.Module):
    """MiniLM's sentence embedding: token states averaged over the attention mask (sentence-transformers)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        keep = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * keep).sum(1) / keep.sum(1).clamp_min(1e-9)


class ImageLogits(nn.Module):
    """A Hugging Face image classifier as a user exports it: pixels in, the logits tensor out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).logits


def hf_resnet(classes: int = 10) -> nn.Module:
    """transformers' ResNet (basic blocks, four stages), for 3x32x32 images."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1], layer_type="basic", num_labels=classes
    )
    return ImageLogits(ResNetForImageClassification(config))


def hf_vit(classes: int = 10) -> nn.Module:
    """transformers' ViT: 4x4 patches of a 3x32x32 image, four blocks of width 96."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=32,
        patch_size=4,
        hidden_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=192,
        num_labels=classes,
    )
    return ImageLogits(ViTForImageClassification(config))


class RowsGPT2(nn.Module):
    """transformers' GPT-2 blocks (Conv1D projections, causal attention) reading an image's rows as a
    sequence of tokens, classified from the last position; no dropout, as the other tools train too."""

    def __init__(self, features: int = 28, classes: int = 10, width: int = 96) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2Model

        config = GPT2Config(
            vocab_size=2,  # no token table is read: rows come in as embeddings
            bos_token_id=0,
            eos_token_id=0,
            n_positions=features,
            n_embd=width,
            n_layer=4,
            n_head=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
        self.embed = nn.Linear(features, width)
        self.gpt2 = GPT2Model(config)
        self.head = nn.Linear(width, classes)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        hidden = self.gpt2(inputs_embeds=self.embed(rows)).last_hidden_state
        return self.head(hidden[:, -1])
