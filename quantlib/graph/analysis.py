"""What the graph tells about each layer: is its input provably non-negative, and is
it directly followed by a BatchNorm that export can fold?

Works on a ``torch.export`` graph whose parameters are named by their module paths, so
results are keyed by layer name whether the user gave an nn.Module or a ``.pt2``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import fx, nn

log = logging.getLogger(__name__)

LAYER_OPS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "linear", "convolution", "addmm"}
# where a layer op takes its data and its weight, when not (0, 1): addmm(bias, x, weight)
DATA_WEIGHT_ARGS = {"addmm": (1, 2)}
BATCH_NORM_OPS = {"batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "native_batch_norm"}

# Ops whose output is never negative.
NONNEG_SOURCES = {"relu", "relu_", "relu6", "sigmoid", "softmax", "_softmax", "exp", "abs", "hardsigmoid"}
# Dropout as torch.export writes it (``dropout_``: an in-place ``F.dropout(..., inplace=True)``, as in
# Hugging Face's MobileNetV2): the identity in the deployed model, where QAT also keeps it off.
DROPOUTS = {"dropout", "dropout_"}
# Ops that only move values: the same values come out, in another shape or order.
RESHAPES = {
    "flatten",
    "reshape",
    "view",
    "_unsafe_view",
    "permute",
    "transpose",
    "t",
    "contiguous",
    "clone",
    "squeeze",
    "unsqueeze",
}
# Ops that keep non-negativity of their first input.
NONNEG_KEEPERS = RESHAPES | {
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool2d",
    *DROPOUTS,
    "slice",
    "select",
    "expand",
    "upsample_nearest2d",
    "upsample_bilinear2d",
    "mean",
    "sum",
    "amax",
    "pad",
    "constant_pad_nd",
    "getitem",
    "alias",
    "detach",
    "_to_copy",
    "to",
}
# Ops that are non-negative when all tensor inputs are.
NONNEG_COMBINERS = {"cat", "concat", "stack", "add", "add_", "mul", "maximum"}


@dataclass
class GraphFacts:
    """Per layer name: whether its input is provably >= 0, and the BatchNorm it feeds."""

    nonneg_input: dict[str, bool] = field(default_factory=dict)
    bn_after: dict[str, str] = field(default_factory=dict)


def op_name(node: fx.Node) -> str:
    target = node.target
    if node.op != "call_function":
        return ""
    packet = getattr(target, "_overloadpacket", None)
    if packet is not None:
        return packet.__name__
    return getattr(target, "__name__", str(target))


def _is_nonneg(node: fx.Node, known: dict[fx.Node, bool]) -> bool:
    name = op_name(node)
    tensors = [a for a in node.args if isinstance(a, fx.Node)]
    if name in NONNEG_SOURCES:
        return True
    if name == "hardtanh":
        low = node.args[1] if len(node.args) > 1 else -1.0
        return isinstance(low, (int, float)) and low >= 0
    if name == "clamp":
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
        return (isinstance(low, (int, float)) and low >= 0) or (bool(tensors) and known.get(tensors[0], False))
    if name in NONNEG_KEEPERS:
        return bool(tensors) and known.get(tensors[0], False)
    if name in NONNEG_COMBINERS:
        flat = [a for a in node.args if isinstance(a, fx.Node)]
        flat += [a for arg in node.args if isinstance(arg, (list, tuple)) for a in arg if isinstance(a, fx.Node)]
        scalars_ok = all(not isinstance(a, (int, float)) or a >= 0 for a in node.args)
        return bool(flat) and scalars_ok and all(known.get(a, False) for a in flat)
    return False


def _param_owner(node: object, names: dict[str, str]) -> str | None:
    """The module path owning a weight/buffer input node (``features.0.weight`` -> ``features.0``)."""
    if not isinstance(node, fx.Node):
        return None
    fqn: object
    if node.op == "placeholder":
        fqn = names.get(node.name)
    elif node.op == "get_attr":
        fqn = node.target
    else:
        return None
    return fqn.rpartition(".")[0] if isinstance(fqn, str) else None


def analyze_exported(ep: torch.export.ExportedProgram) -> GraphFacts:
    """Facts from an ExportedProgram (parameters appear as placeholders named in its signature)."""
    sig = ep.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    return analyze_graph(ep.graph, names)


def nonneg_nodes(graph: fx.Graph) -> dict[fx.Node, bool]:
    """Per node: is its output provably >= 0 (unknown ops and modules count as signed)."""
    known: dict[fx.Node, bool] = {}
    for node in graph.nodes:
        known[node] = _is_nonneg(node, known)
    return known


def analyze_graph(graph: fx.Graph, names: dict[str, str]) -> GraphFacts:
    facts = GraphFacts()
    known = nonneg_nodes(graph)
    for node in graph.nodes:
        name = op_name(node)
        data, weight = DATA_WEIGHT_ARGS.get(name, (0, 1))
        if name in LAYER_OPS and len(node.args) > weight:
            layer = _param_owner(node.args[weight], names)
            if layer is None:
                continue
            source = node.args[data]
            facts.nonneg_input[layer] = isinstance(source, fx.Node) and known.get(source, False)
            users = list(node.users)
            if len(users) == 1 and op_name(users[0]) in BATCH_NORM_OPS:
                bn = users[0]
                owner = _param_owner(bn.args[1], names) if bn.args[1] is not None else _param_owner(bn.args[3], names)
                if owner is not None and name not in {"linear", "addmm"}:
                    facts.bn_after[layer] = owner
    return facts


def analyze_module(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> GraphFacts:
    """Facts for a plain nn.Module, by exporting it once; a model export cannot trace
    gets no facts (inputs treated as signed, BatchNorm left unfolded) rather than an error."""
    was_training = model.training
    try:
        ep = torch.export.export(model.eval(), tuple(example_inputs), strict=False)
    except Exception as exc:  # noqa: BLE001 - any tracing failure only costs the optimisation
        log.warning("graph analysis skipped (torch.export failed: %s); fixed_min defaults to false", exc)
        return GraphFacts()
    finally:
        model.train(was_training)
    return analyze_exported(ep)
