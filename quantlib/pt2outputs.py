"""Programs that return a library's own output class, made loadable without that library.

A Hugging Face model exported directly returns ``ImageClassifierOutputWithNoAttention``;
its ``.pt2`` names that class in the program's output spec, and ``torch.export.load``
can rebuild it only where ``transformers`` is imported and has registered it, which a
job's sandbox never is. The output spec is a small JSON tree (torch's serialized pytree
``TreeSpec``: ``type``, ``context``, ``children_spec``), so the inert copy of the archive
gets a plainer one: a single tensor where the output holds one (a classifier's logits),
else every unknown class becomes a dict of its fields in their order (its tensors keep
their names). Torch-free, and defensive: the JSON is the uploader's; anything unexpected
leaves the spec as it was, and torch's own error then says what failed.
"""

from __future__ import annotations

import json
from typing import Any

# containers torch rebuilds without any library's help
_KNOWN = {
    "builtins.tuple",
    "builtins.list",
    "builtins.dict",
    "collections.OrderedDict",
    "collections.defaultdict",
    "collections.namedtuple",
    "torch.fx.immutable_collections.immutable_list",
    "torch.fx.immutable_collections.immutable_dict",
}
_LEAF: dict[str, Any] = {"type": None, "context": None, "children_spec": []}


def plain_outputs(graph: Any) -> bool:
    """Rewrite the root output spec of a serialized program (``models/model.json``, parsed) in place;
    whether anything changed."""
    try:
        entry = next(e for e in graph["graph_module"]["module_call_graph"] if e["fqn"] == "")
        version, tree = json.loads(entry["signature"]["out_spec"])
        plain = _plain(tree)
    except (KeyError, TypeError, ValueError, StopIteration, AttributeError, RecursionError):
        return False
    if plain == tree:
        return False
    entry["signature"]["out_spec"] = json.dumps([version, plain])
    return True


def _plain(tree: dict[str, Any]) -> dict[str, Any]:
    if tree["type"] is not None and _leaves(tree) == 1:
        return dict(_LEAF)
    return _known(tree)


def _leaves(tree: dict[str, Any]) -> int:
    return 1 if tree["type"] is None else sum(_leaves(child) for child in tree["children_spec"])


def _known(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with each unknown class a dict of its fields (a tuple where the fields are not named)."""
    if tree["type"] is None:
        return tree
    children = [_known(child) for child in tree["children_spec"]]
    if tree["type"] in _KNOWN:
        return {**tree, "children_spec": children}
    keys = json.loads(tree["context"]) if isinstance(tree["context"], str) else None
    named = isinstance(keys, list) and len(keys) == len(children) and all(isinstance(k, str) for k in keys)
    if named:
        return {"type": "builtins.dict", "context": json.dumps(keys), "children_spec": children}
    return {"type": "builtins.tuple", "context": "null", "children_spec": children}
