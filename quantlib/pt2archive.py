"""Which entries of a ``.pt2`` archive may reach torch: raw tensor bytes, JSON and the graph.

``torch.export.load`` unpickles whatever an archive tells it to: weights and constants
marked ``use_pickle``, ``custom_obj_*`` constants (TorchScript objects), ``opaque_obj_*``
constants (plain ``pickle.loads``, which ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` does not cover),
legacy ``.pt`` state dicts, and the sample inputs, a ``torch.save`` pickle in every file;
AOTInductor entries are compiled native code. So a user's file never reaches torch
itself: :func:`write_inert_copy` checks every entry against what ``torch.export.save``
writes for a program of plain tensors and copies only those into a new archive, with
empty sample inputs (nothing here needs them). Anything else is refused, naming the
entry. The graph's operators are checked too: aten, prims and higher-order ops and
Python's ``operator``/``math`` functions only, so no node reads a file
(``aten.from_file``) or calls into a custom op library.

Torch-free: the API checks submissions with :func:`check_archive`.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from typing import IO, Any

from quantlib.errors import QuantlibError
from quantlib.inputs import InputSpec
from quantlib.pt2outputs import plain_outputs


class ModelError(QuantlibError):
    """A model file that cannot be used; ``field`` is ``model``."""

    code = "BAD_MODEL"
    default_field = "model"


SAVE_A_MODEL = "save the model with torch.export.save(torch.export.export(model, args), 'model.pt2')"
# the program torch.export.load returns, and its files (relative to the archive's root folder)
MODEL_NAME = "model"
_GRAPH = f"models/{MODEL_NAME}.json"
_WEIGHTS_CONFIG = f"data/weights/{MODEL_NAME}_weights_config.json"
_CONSTANTS_CONFIG = f"data/constants/{MODEL_NAME}_constants_config.json"
_SAMPLE_INPUTS = f"data/sample_inputs/{MODEL_NAME}.pt"
# small text records torch writes and reads as strings
_RECORDS = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}
# payload files: raw tensor bytes named by a config (the prefix is the payload's kind)
_PAYLOAD_DIRS = {"data/weights/": "weight_", "data/constants/": "tensor_"}
# the most bytes of JSON read from one entry: graphs of large models are tens of MB
MAX_JSON_BYTES = 256 << 20
# call targets a graph may name; anything else is a custom op, an extension or a Python callable
_ALLOWED_TARGET = re.compile(
    r"^(torch\.ops\.(aten|prims|higher_order)\.\w+(\.\w+)?|_operator\.\w+|math\.\w+|torch\.sym_\w+|torch\._sym_\w+)$"
)
_DENIED_OPS = {"from_file"}


def check_archive(archive: zipfile.ZipFile, *, check_graph: bool = True) -> str:
    """Refuse ``archive`` unless torch could load it without unpickling or running anything; its root folder.

    ``check_graph`` also parses the graph and checks its operators (the worker does; the
    API, which only needs a quick answer, may skip the largest entry).
    """
    names = [info.filename for info in archive.infolist() if not info.is_dir()]
    root = _root_folder(names)
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ModelError(f"model archive entry {duplicate!r} appears twice; {SAVE_A_MODEL}")
    members = {name.removeprefix(f"{root}/"): name for name in names}
    if _GRAPH not in members:
        raise ModelError(f"model archive has no {root}/{_GRAPH} (the program named {MODEL_NAME!r}); {SAVE_A_MODEL}")
    payloads = {
        **_payload_names(archive, members, _WEIGHTS_CONFIG),
        **_payload_names(archive, members, _CONSTANTS_CONFIG),
    }
    for relative, name in members.items():
        if relative in _RECORDS or relative in {_GRAPH, _WEIGHTS_CONFIG, _CONSTANTS_CONFIG, _SAMPLE_INPUTS}:
            continue
        if relative not in payloads:
            raise ModelError(_unknown_entry(name, relative))
    if check_graph:
        _check_operators(_read_json(archive, members[_GRAPH]), members[_GRAPH])
    return root


# torch.export's serialized ScalarType codes (torch/_export/serde/schema.py) -> numpy's names
_DTYPES = {
    1: "uint8",
    2: "int8",
    3: "int16",
    4: "int32",
    5: "int64",
    6: "float16",
    7: "float32",
    8: "float64",
    12: "bool",
    13: "bfloat16",
}


def program_inputs(archive: zipfile.ZipFile, max_bytes: int = MAX_JSON_BYTES) -> list[InputSpec] | None:
    """The program's tensor inputs (name, dtype, shape) from its serialized graph, torch-free; None when
    the graph is larger than ``max_bytes`` or not laid out as this torch writes it: the worker, which
    loads the program, checks the inputs (and refuses what is not a program) then."""
    members = {info.filename: info for info in archive.infolist()}
    name = f"{_root_folder(list(members))}/{_GRAPH}"
    if name not in members:
        raise ModelError(f"model archive has no {name}; {SAVE_A_MODEL}")
    if members[name].file_size > max_bytes:
        return None
    try:
        module = _read_json(archive, name)["graph_module"]
        values = module["graph"]["tensor_values"]
        specs = []
        for entry in module["signature"]["input_specs"]:
            tensor = entry.get("user_input", {}).get("arg", {}).get("as_tensor")
            if tensor is not None:
                specs.append(_input_spec(tensor["name"], values[tensor["name"]]))
    except (KeyError, TypeError, AttributeError):
        return None
    return specs


def _input_spec(name: str, meta: dict[str, Any]) -> InputSpec:
    sizes = meta["sizes"]
    shape = tuple(size["as_int"] if "as_int" in size else None for size in sizes)
    if not isinstance(name, str) or not all(dim is None or isinstance(dim, int) for dim in shape):
        raise TypeError("tensor_values")
    return InputSpec(name, _DTYPES.get(meta["dtype"]), shape)


def write_inert_copy(source: IO[bytes], target: IO[bytes]) -> None:
    """Check the archive in ``source`` and write the entries torch may read into ``target``.

    The sample inputs become empty: they are a pickle, and loading needs none. An output
    spec naming a library's class is made plain (:mod:`quantlib.pt2outputs`).
    """
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelError(f"the model is not a .pt2 archive (not a zip file: {exc}); {SAVE_A_MODEL}") from exc
    with archive, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        root = check_archive(archive, check_graph=False)
        graph_name = f"{root}/{_GRAPH}"
        graph = _read_json(archive, graph_name)  # read once: checked, then copied plain if it must be
        _check_operators(graph, graph_name)
        for info in archive.infolist():
            if info.is_dir():
                continue
            if info.filename == graph_name and plain_outputs(graph):
                copy.writestr(info.filename, json.dumps(graph))
                continue
            inert = info.filename == f"{root}/{_SAMPLE_INPUTS}"
            with archive.open(info) as member, copy.open(info.filename, "w", force_zip64=True) as out:
                while not inert and (chunk := member.read(1 << 20)):
                    out.write(chunk)


def _root_folder(names: list[str]) -> str:
    """The one top-level folder torch.export.save puts everything under (``archive`` by default)."""
    roots = {name.partition("/")[0] for name in names if "/" in name}
    loose = [name for name in names if "/" not in name]
    if loose:
        raise ModelError(f"model archive entry {loose[0]!r} is outside the archive's folder; {SAVE_A_MODEL}")
    if len(roots) != 1:
        raise ModelError(f"a .pt2 archive has one top-level folder, this one has {len(roots)}; {SAVE_A_MODEL}")
    return roots.pop()


def _payload_names(archive: zipfile.ZipFile, members: dict[str, str], config: str) -> dict[str, str]:
    """The payload files ``config`` names (relative name -> the config's key), each a raw tensor."""
    if config not in members:
        return {}
    raw = _read_json(archive, members[config])
    entries = raw.get("config") if isinstance(raw, dict) else None
    if not isinstance(entries, dict):
        raise ModelError(f"model archive entry {members[config]!r} is not a torch.export payload config")
    folder = config.rpartition("/")[0] + "/"
    prefix = _PAYLOAD_DIRS[folder]
    payloads = {}
    for key, meta in entries.items():
        path_name = meta.get("path_name") if isinstance(meta, dict) else None
        where = f"{key!r} in {members[config]!r}"
        if not isinstance(path_name, str) or not path_name.startswith(prefix) or "/" in path_name:
            kind = (
                path_name.split("_obj_")[0] + " object"
                if isinstance(path_name, str) and "_obj_" in path_name
                else "entry"
            )
            raise ModelError(
                f"model constant {where} is a {kind} ({path_name!r}) that torch would unpickle; only tensors are "
                f"accepted: make it a registered buffer or parameter, then {SAVE_A_MODEL}"
            )
        if meta.get("use_pickle") is not False or not isinstance(meta.get("tensor_meta"), dict):
            raise ModelError(
                f"model tensor {where} is stored as a pickle (use_pickle), which is never loaded here; "
                f"store plain dense tensors and {SAVE_A_MODEL}"
            )
        if folder + path_name not in members:
            raise ModelError(f"model tensor {where} names {path_name!r}, which the archive lacks; {SAVE_A_MODEL}")
        payloads[folder + path_name] = key
    return payloads


def _unknown_entry(name: str, relative: str) -> str:
    if relative.startswith("data/aotinductor/"):
        why = "compiled AOTInductor code, which is never run here"
    elif relative.endswith((".pt", ".pkl")):
        why = "a pickle, which is never loaded here"
    elif relative.startswith(("data/weights/", "data/constants/")):
        why = "a payload no config names (it would be read as a legacy pickle)"
    else:
        why = "not part of a torch.export program of plain tensors"
    return f"model archive entry {name!r} is {why}; {SAVE_A_MODEL}"


def _read_json(archive: zipfile.ZipFile, name: str) -> Any:
    info = archive.getinfo(name)
    if info.file_size > MAX_JSON_BYTES:
        raise ModelError(f"model archive entry {name!r} is {info.file_size} bytes; at most {MAX_JSON_BYTES} are read")
    try:
        return json.loads(archive.read(info))
    except (ValueError, zipfile.BadZipFile, OSError, RecursionError) as exc:
        raise ModelError(f"model archive entry {name!r} is not readable JSON ({exc}); {SAVE_A_MODEL}") from exc


def _check_operators(graph: Any, name: str) -> None:
    for target in _call_targets(graph):
        op = target.split(".")[3] if target.startswith("torch.ops.") and target.count(".") >= 3 else ""
        if not _ALLOWED_TARGET.match(target) or op in _DENIED_OPS:
            raise ModelError(
                f"the graph in {name!r} calls {target!r}; only aten, prims and higher-order operators are run "
                "here (no custom ops, file access or Python callables): export the model without them"
            )


def _call_targets(value: Any) -> Iterator[str]:
    """Every node's ``target`` in a serialized graph, subgraphs of control flow included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            target = item.get("target")
            if isinstance(target, str) and "inputs" in item:
                yield target
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
