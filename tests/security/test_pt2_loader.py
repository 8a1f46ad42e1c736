"""The ``.pt2`` loader: nothing in an archive is unpickled or run, and every ordinary program still loads.

The controls load the same files with plain ``torch.export.load`` in a fresh interpreter
and see the payloads run, ``opaque_obj_*`` even with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``;
then the loader, the API's submission check and ``qat quantize`` must refuse each
variant by name (or, for the sample inputs, drop them) with the marker never appearing.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.models import ZOO
from quantlib.examples.digits import DigitsNet
from quantlib.modelfile import ModelError, load_exported_program
from service.api.validation import check_model
from support.hostile_pt2 import WithConstant, hostile, variants, with_hostile_sample_inputs
from support.untrusted_models import Forever, dataset, export

VARIANTS = sorted(variants(Path("unused")))
# refused by the worker's loader, which reads the graph; the API only reads the payload configs
GRAPH_VARIANTS = {"graph-reads-a-file", "graph-calls-python"}


def _torch_load_in_fresh_interpreter(path: Path, *, weights_only_env: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TORCH_FORCE_WEIGHTS_ONLY_LOAD"}
    if weights_only_env:
        env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    code = f"import torch\ntry:\n    torch.export.load({str(path)!r})\nexcept Exception:\n    pass"
    subprocess.run([sys.executable, "-c", code], env=env, timeout=120, check=True, capture_output=True)


def test_the_payloads_are_live_under_plain_torch_export_load(tmp_path: Path) -> None:
    opaque, sample = tmp_path / "opaque", tmp_path / "sample"
    (tmp_path / "opaque.pt2").write_bytes(hostile(export(WithConstant()), "opaque-object", opaque))
    (tmp_path / "sample.pt2").write_bytes(with_hostile_sample_inputs(export(WithConstant()), sample))
    _torch_load_in_fresh_interpreter(tmp_path / "opaque.pt2", weights_only_env=True)
    _torch_load_in_fresh_interpreter(tmp_path / "sample.pt2", weights_only_env=False)
    assert opaque.exists(), "torch unpickles opaque_obj_* constants even with TORCH_FORCE_WEIGHTS_ONLY_LOAD=1"
    assert sample.exists(), "torch falls back to a full unpickle of the sample inputs"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_loader_refuses_each_hostile_entry_by_name(tmp_path: Path, variant: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt2"
    path.write_bytes(hostile(export(WithConstant()), variant, marker))
    with pytest.raises(ModelError) as refused:
        load_exported_program(path)
    assert refused.value.code == "BAD_MODEL" and refused.value.field == "model"
    assert variants(marker)[variant][1] in refused.value.message, refused.value.message
    assert not marker.exists()


@pytest.mark.parametrize("variant", VARIANTS)
def test_submission_refuses_what_the_payload_configs_show(tmp_path: Path, variant: str) -> None:
    marker = tmp_path / "pwned"
    upload = io.BytesIO(hostile(export(WithConstant()), variant, marker))
    if variant in GRAPH_VARIANTS:
        check_model(upload, max_unpacked_bytes=1 << 30)
    else:
        with pytest.raises(ModelError, match=variants(marker)[variant][1]):
            check_model(upload, max_unpacked_bytes=1 << 30)
    assert not marker.exists()


def test_hostile_sample_inputs_are_dropped_and_the_program_still_loads(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt2"
    model = WithConstant().eval()
    path.write_bytes(with_hostile_sample_inputs(export(model), marker))
    x = torch.randn(3, 4)
    torch.testing.assert_close(load_exported_program(path).module()(x), model(x))
    assert not marker.exists()


class _Tied(torch.nn.Module):
    """One weight under two names: its payload is stored once and named twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4, bias=False)
        self.b = torch.nn.Linear(4, 4, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _ordinary() -> list[tuple[str, torch.nn.Module, tuple[int, ...]]]:
    zoo = [(entry.name, entry.build(), (2, *entry.input_shape[1:])) for entry in ZOO]
    return [
        *zoo,
        ("digits", DigitsNet(), (2, 1, 8, 8)),
        ("constants", WithConstant(), (2, 4)),
        ("tied", _Tied(), (2, 4)),
    ]


@pytest.mark.parametrize("name, model, shape", _ordinary(), ids=lambda value: value if isinstance(value, str) else "")
def test_ordinary_programs_load_and_compute_what_they_saved(
    tmp_path: Path, name: str, model: torch.nn.Module, shape: tuple[int, ...]
) -> None:
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    example = torch.randn(shape)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "model.pt2")
    loaded = load_exported_program(tmp_path / "model.pt2")
    x = torch.randn(3, *shape[1:])
    torch.testing.assert_close(loaded.module()(x), model(x))


def test_control_flow_subgraphs_load(tmp_path: Path) -> None:
    """``while_loop`` keeps its body in a subgraph; the operator check walks into it."""
    (tmp_path / "model.pt2").write_bytes(export(Forever()))
    graph = load_exported_program(tmp_path / "model.pt2").graph
    assert any("while_loop" in str(node.target) for node in graph.nodes)


@pytest.mark.parametrize("variant", ["opaque-object", "graph-reads-a-file"])
def test_qat_quantize_refuses_it_in_one_line(tmp_path: Path, variant: str) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "model.pt2").write_bytes(hostile(export(WithConstant()), variant, marker))
    (tmp_path / "data.npz").write_bytes(dataset())
    qat = Path(sys.executable).parent / "qat"
    run = subprocess.run(
        [str(qat), "quantize", "model.pt2", "--data", "data.npz", "--out", "out", "--epochs", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.startswith("error [BAD_MODEL] model:") and "Traceback" not in run.stderr
    assert not marker.exists()
