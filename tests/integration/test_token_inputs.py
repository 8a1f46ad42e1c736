"""A model with two named integer inputs (BERT: token ids and an attention mask) through ``qat quantize``,
the way a user runs it: a ``.pt2`` exported with a dynamic batch and an ``.npz`` naming each input.
Inputs that do not fit the program are refused naming the array (tests/unit/test_inputs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from quantlib.modelfile import load_exported_program
from support.qat_cli import qat
from support.zoo import ZOO

BERT = next(entry for entry in ZOO if entry.name == "bert")


@pytest.fixture(scope="module")
def bert_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return BERT.write_job(tmp_path_factory.mktemp("bert"), train=32, evaluation=16)


def test_token_ids_and_a_mask_are_fed_by_name_and_deployed_with_their_dtypes(bert_job, tmp_path: Path) -> None:
    model, data = bert_job
    out = tmp_path / "out"
    simple = tmp_path / "simple.yaml"
    simple.write_text("quantize_activation_matmuls: true\n")  # attention's matmuls too (tests/unit/test_matmuls.py)
    run = qat(
        "quantize",
        model,
        "--data",
        data,
        "--out",
        out,
        "--epochs",
        1,
        "--batch-size",
        8,
        "--config-defination",
        simple,
        "--threads",
        1,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["inputs"] == {
        "input_ids": {"dtype": "int64", "shape": [16]},
        "attention_mask": {"dtype": "int64", "shape": [16]},
    }
    program = load_exported_program(model)
    linear = sum(node.target is torch.ops.aten.linear.default for node in program.graph.nodes)
    tables = sum(node.target is torch.ops.aten.embedding.default for node in program.graph.nodes)
    config = json.loads((out / "config.json").read_text())
    assert len([entry for entry in config.values() if isinstance(entry, dict)]) == linear + tables == 14 + 3
    # the token, position and segment tables are quantized per row and deployed as int8 rows
    assert sorted(report["embeddings"]) == [
        f"model.bert.embeddings.{kind}_embeddings" for kind in ("position", "token_type", "word")
    ]
    assert report["embeddings"]["model.bert.embeddings.word_embeddings"]["rows"] == 500
    assert report["threads"] == 1
    # both inputs of the 2 x 2 attention matmuls, the probabilities one-sided
    matmuls = report["activation_matmuls"]
    assert len(matmuls) == 8 and sum(q["clip_min"] == 0 for q in matmuls.values()) == 2, matmuls
    assert config["quantize_activation_matmuls"] is True
    # the deployed model takes the inputs under the model's names and dtypes, and computes what QAT simulated
    deploy = onnx.load(str(out / "model_int8.onnx"))
    declared = {i.name: i.type.tensor_type.elem_type for i in deploy.graph.input}
    int8_tables = [t for t in deploy.graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims[:1] == [500]]
    assert len(int8_tables) == 1
    assert declared == {"input_ids": onnx.TensorProto.INT64, "attention_mask": onnx.TensorProto.INT64}
    match = report["deploy_vs_simulated"]
    assert match["agreement"] >= 0.999 and match["sqnr_db"] >= 40, match
    assert report["speed"]["int8_ms"] and report["accuracy"]["int8_onnxruntime"]["sqnr_db"] > 10
