"""``.pt2`` archives that smuggle code into each kind of entry torch.export.load reads.

``export`` (re-exported from :mod:`untrusted_models`) gives the genuine archive to start from.

Each variant starts from a genuine ``torch.export.save`` archive and changes one thing, so
everything else about it is an ordinary program. The payloads only create a marker file:
a test then proves the payload is live (plain ``torch.export.load`` runs it) and that our
loader never lets it run.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class Touch:
    """Unpickling this creates ``path``: what a hostile entry carries."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.path, "w")


class WithConstant(torch.nn.Module):
    """A model with a parameter, a buffer and a plain tensor constant: every payload kind."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        self.register_buffer("shift", torch.ones(2))
        self.scale = torch.tensor([2.0, 3.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale + self.shift


def _rewrite(pt2: bytes, change: Callable[[dict[str, bytes]], None]) -> bytes:
    """``pt2`` with its entries (name -> bytes) passed through ``change``."""
    with zipfile.ZipFile(io.BytesIO(pt2)) as source:
        entries = {info.filename: source.read(info) for info in source.infolist()}
    change(entries)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name, data in entries.items():
            target.writestr(name, data)
    return out.getvalue()


def _config(entries: dict[str, bytes], kind: str) -> tuple[str, dict[str, Any]]:
    name = f"archive/data/{kind}/model_{kind}_config.json"
    return name, json.loads(entries[name])


def _pickled_payload(kind: str, marker: Path) -> Callable[[dict[str, bytes]], None]:
    """The first weight or constant marked ``use_pickle`` and replaced by the payload."""

    def change(entries: dict[str, bytes]) -> None:
        name, config = _config(entries, kind)
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        entries[name] = json.dumps(config).encode()
        entries[f"archive/data/{kind}/{first['path_name']}"] = pickle.dumps(Touch(marker))

    return change


def _object_constant(prefix: str, marker: Path) -> Callable[[dict[str, bytes]], None]:
    """A constant stored as a ``custom_obj_*`` / ``opaque_obj_*`` entry that torch unpickles."""

    def change(entries: dict[str, bytes]) -> None:
        name, config = _config(entries, "constants")
        config["config"]["evil"] = {
            "path_name": f"{prefix}0",
            "is_param": False,
            "use_pickle": True,
            "tensor_meta": None,
        }
        entries[name] = json.dumps(config).encode()
        entries[f"archive/data/constants/{prefix}0"] = pickle.dumps(Touch(marker))

    return change


def _sample_inputs(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """The sample inputs (always a torch.save pickle) replaced by one that runs the payload."""

    def change(entries: dict[str, bytes]) -> None:
        buffer = io.BytesIO()
        torch.save(Touch(marker), buffer)
        entries["archive/data/sample_inputs/model.pt"] = buffer.getvalue()

    return change


def _legacy_weights(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """The pre-2.6 layout's whole state dict as one pickle, which torch still reads first."""

    def change(entries: dict[str, bytes]) -> None:
        entries["archive/data/weights/model.pt"] = pickle.dumps(Touch(marker))

    return change


def _extra_entry(name: str) -> Callable[[dict[str, bytes]], None]:
    def change(entries: dict[str, bytes]) -> None:
        entries[name] = b"\x7fELF not really"

    return change


def _graph_calling(target: str) -> Callable[[dict[str, bytes]], None]:
    """The graph's first call made a call of ``target`` instead."""

    def change(entries: dict[str, bytes]) -> None:
        graph = json.loads(entries["archive/models/model.json"])
        graph["graph_module"]["graph"]["nodes"][0]["target"] = target
        entries["archive/models/model.json"] = json.dumps(graph).encode()

    return change


def variants(marker: Path) -> dict[str, tuple[Callable[[dict[str, bytes]], None], str]]:
    """Each hostile variant: how it changes the archive, and what the refusal must name."""
    return {
        "pickled-weight": (_pickled_payload("weights", marker), "use_pickle"),
        "pickled-constant": (_pickled_payload("constants", marker), "use_pickle"),
        "opaque-object": (_object_constant("opaque_obj_", marker), "opaque_obj_0"),
        "custom-object": (_object_constant("custom_obj_", marker), "custom_obj_0"),
        "legacy-weights": (_legacy_weights(marker), "data/weights/model.pt"),
        "aotinductor": (_extra_entry("archive/data/aotinductor/model/model.so"), "aotinductor"),
        "unknown-entry": (_extra_entry("archive/data/mystery.bin"), "data/mystery.bin"),
        "graph-reads-a-file": (_graph_calling("torch.ops.aten.from_file.default"), "from_file"),
        "graph-calls-python": (_graph_calling("torch.os.system"), "torch.os.system"),
    }


def hostile(pt2: bytes, variant: str, marker: Path) -> bytes:
    change, _ = variants(marker)[variant]
    return _rewrite(pt2, change)


def with_hostile_sample_inputs(pt2: bytes, marker: Path) -> bytes:
    """Sample inputs that run the payload: refused by torch's weights-only load, dropped by ours."""
    return _rewrite(pt2, _sample_inputs(marker))
