"""The quantization record: AMCT's text format, and the same facts as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from quantlib.export.fold import DeployedLayer


def layer_record(deployed: DeployedLayer) -> dict[str, Any]:
    scale_w = [float(s) for s in deployed.weight_scale.flatten()]
    return {
        "scale_d": float(deployed.act_scale),
        "offset_d": int(deployed.act_offset),
        "scale_w": scale_w,
        "offset_w": [0] * len(scale_w),
        "data_bits": deployed.act_bits,
        "weight_bits": deployed.weight_bits,
    }


def to_text(records: dict[str, dict[str, Any]]) -> str:
    """AMCT's protobuf-text layout: one ``record`` block per layer, repeated fields repeated."""
    lines: list[str] = []
    for name, rec in records.items():
        lines += ["record {", f'  key: "{name}"', "  value {"]
        lines.append(f"    scale_d: {rec['scale_d']!r}")
        lines.append(f"    offset_d: {rec['offset_d']}")
        lines += [f"    scale_w: {s!r}" for s in rec["scale_w"]]
        lines += [f"    offset_w: {o}" for o in rec["offset_w"]]
        lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def json_path(record_file: str | Path) -> Path:
    """``record.txt`` -> ``record.json`` beside it (``x.json`` -> ``x.json.json``)."""
    path = Path(record_file)
    return path.with_suffix(".json") if path.suffix != ".json" else path.with_name(path.name + ".json")


def write_record(record_file: str | os.PathLike[str], deployed: dict[str, DeployedLayer]) -> dict[str, dict[str, Any]]:
    records = {name: layer_record(d) for name, d in deployed.items()}
    path = Path(record_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_text(records), encoding="utf-8")
    json_path(path).write_text(json.dumps(records, indent=2), encoding="utf-8")
    return records
