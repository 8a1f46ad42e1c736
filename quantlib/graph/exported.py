"""Turn an ExportedProgram (a ``.pt2`` upload) into an nn.Module that trains.

``ExportedProgram.module()`` gives a GraphModule that refuses ``.train()`` and calls
convolutions as functions on raw weights. We lift conv, linear, embedding, batch-norm and
dropout calls into real modules named by their parameters' paths (``layer1.0.conv1``), so the
rest of the library swaps layers exactly as it does in a user's own nn.Module, and
``.train()`` / ``.eval()`` switch BatchNorm and dropout as usual.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import fx, nn

from quantlib.graph.analysis import DROPOUTS, op_name

# Deep-copying a GraphModule from torch.export trips a deprecation inside torch itself
# (its own pytree LeafSpec); nothing a user can act on.
warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)


def node_arg(node: fx.Node, index: int, name: str, default: Any) -> Any:
    """Argument ``index`` (or keyword ``name``) of the call ``node``; ``default`` where the call leaves it out."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _input(node: fx.Node, index: int) -> fx.Node:
    """Positional argument ``index`` of ``node``, where the graph holds a node there (a tensor input)."""
    arg = node.args[index]
    if not isinstance(arg, fx.Node):
        raise TypeError(f"{node.name}: argument {index} is {type(arg).__name__}, expected an fx.Node")
    return arg


def _conv(cls: type[nn.Module]) -> Callable[[fx.Node, torch.Tensor, torch.Tensor | None], nn.Module]:
    def make(node: fx.Node, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
        transposed = issubclass(cls, nn.modules.conv._ConvTransposeNd)
        groups = node_arg(node, 7 if transposed else 6, "groups", 1)
        out_ch = weight.shape[1] * groups if transposed else weight.shape[0]
        in_ch = weight.shape[0] if transposed else weight.shape[1] * groups
        kwargs: dict[str, Any] = {
            "stride": node_arg(node, 3, "stride", 1),
            "padding": node_arg(node, 4, "padding", 0),
            "groups": groups,
            "bias": bias is not None,
        }
        if transposed:
            kwargs["output_padding"] = node_arg(node, 5, "output_padding", 0)
            kwargs["dilation"] = node_arg(node, 6, "dilation", 1)
        else:
            kwargs["dilation"] = node_arg(node, 5, "dilation", 1)
        return cls(in_ch, out_ch, tuple(weight.shape[2:]), device="meta", **kwargs)

    return make


def _linear(node: fx.Node, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    return nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")


LIFTABLE: dict[str, Callable[[fx.Node, torch.Tensor, torch.Tensor | None], nn.Module]] = {
    "conv1d": _conv(nn.Conv1d),
    "conv2d": _conv(nn.Conv2d),
    "conv3d": _conv(nn.Conv3d),
    "conv_transpose1d": _conv(nn.ConvTranspose1d),
    "conv_transpose2d": _conv(nn.ConvTranspose2d),
    "linear": _linear,
}
_BATCH_NORMS = {3: nn.BatchNorm1d, 2: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


def _owner(gm: fx.GraphModule, node: object, leaf: str) -> str | None:
    """Module path of a get_attr node that reads ``<path>.<leaf>``."""
    if isinstance(node, fx.Node) and node.op == "get_attr" and isinstance(node.target, str):
        path, _, name = node.target.rpartition(".")
        if name == leaf:
            return path
    return None


def _replaceable(gm: fx.GraphModule, path: str, keep: set[str]) -> bool:
    """Only a container that holds nothing but the lifted tensors may be replaced."""
    if not path:
        return False
    holder = gm.get_submodule(path)
    own = {n for n, _ in holder.named_parameters(recurse=False)} | {n for n, _ in holder.named_buffers(recurse=False)}
    return own <= keep and not list(holder.children())


def _install(gm: fx.GraphModule, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _replace_call(gm: fx.GraphModule, node: fx.Node, path: str, module: nn.Module, data: int = 0) -> None:
    """Install ``module`` at ``path`` and call it on the node's input (argument ``data``) instead of the node."""
    _install(gm, path, module)
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(path, (node.args[data],))
    call.meta = dict(node.meta)
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)


def free_attr(gm: fx.GraphModule, name: str) -> str:
    """``name``, or ``name_1``, ``name_2`` ... where ``gm`` already has that attribute."""
    candidate, n = name, 0
    while hasattr(gm, candidate):
        n += 1
        candidate = f"{name}_{n}"
    return candidate


# matmuls on a module's own weight, lifted as Linear layers (transformers' Conv1D, hand-written projections)
PROJECTIONS = ("addmm", "mm", "matmul")


def _called_elsewhere(node: fx.Node, weight_arg: int = 1) -> bool:
    """Whether the layer call ``node``'s weight also feeds another layer call (a module called twice).
    Another reader is fine: a tied weight (GPT-2's ``lm_head``, whose weight is the token embedding's)
    stays one Parameter, read by the embedding and the lifted layer alike."""
    return any(
        user is not node and (op_name(user) in (*LIFTABLE, *PROJECTIONS) or user.op == "call_module")
        for user in _input(node, weight_arg).users
    )


def _lift_layer(gm: fx.GraphModule, node: fx.Node) -> None:
    path = _owner(gm, node.args[1], "weight")
    bias_node = node_arg(node, 2, "bias", None)
    if path is None or (bias_node is not None and _owner(gm, bias_node, "bias") != path):
        return
    if _called_elsewhere(node) or not _replaceable(gm, path, {"weight", "bias"}):
        return
    holder = gm.get_submodule(path)
    weight = cast(torch.Tensor, holder.weight)  # the get_attr target ``<path>.weight``
    bias = getattr(holder, "bias", None) if bias_node is not None else None
    module = LIFTABLE[op_name(node)](node, weight, bias)
    module.weight = weight
    module.bias = bias  # type: ignore[assignment]  # None for a layer without bias; Module.__setattr__ takes it
    shared = _input(node, 1)
    _replace_call(gm, node, path, module)
    if shared.users:
        # a tied weight's other readers (the embedding) read it from the root: the layer at ``path`` is
        # swapped for a QuantLayer later, which moves the weight to ``<path>.layer.weight``
        name = free_attr(gm, path.replace(".", "_") + "_tied_weight")
        gm.register_parameter(name, cast(nn.Parameter, weight))
        shared.target = name


def _lift_addmm(gm: fx.GraphModule, node: fx.Node) -> None:
    """``addmm(bias, x, weight)`` on a module's own ``[in, out]`` weight and bias (transformers' Conv1D:
    GPT-2's projections) as an nn.Linear holding that weight transposed, quantized per output channel
    like any Linear."""
    if len(node.args) < 3 or node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        return
    path = _owner(gm, node.args[2], "weight")
    if path is None or _owner(gm, node.args[0], "bias") != path:
        return
    if _called_elsewhere(node, weight_arg=2) or not _replaceable(gm, path, {"weight", "bias"}):
        return
    holder = gm.get_submodule(path)
    weight, bias = cast(nn.Parameter, holder.weight), cast(nn.Parameter, holder.bias)
    if weight.dim() != 2 or bias.shape != weight.shape[1:]:
        return
    linear = nn.Linear(weight.shape[0], weight.shape[1], device="meta")
    linear.weight = nn.Parameter(weight.detach().t().contiguous(), requires_grad=weight.requires_grad)
    linear.bias = bias
    _replace_call(gm, node, path, linear, data=1)


def _lift_matmul(gm: fx.GraphModule, node: fx.Node) -> None:
    """``x @ weight`` (``mm``/``matmul``) on a module's own 2-D ``[in, out]`` weight, a projection written
    by hand, as an nn.Linear without bias holding that weight transposed."""
    path = _owner(gm, node.args[1], "weight")
    if path is None or _called_elsewhere(node) or not _replaceable(gm, path, {"weight"}):
        return
    weight = cast(nn.Parameter, gm.get_submodule(path).weight)
    data = _input(node, 0).meta.get("val")
    if weight.dim() != 2 or not isinstance(data, torch.Tensor) or data.dim() < 1:
        return
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=False, device="meta")
    linear.weight = nn.Parameter(weight.detach().t().contiguous(), requires_grad=weight.requires_grad)
    _replace_call(gm, node, path, linear)


def _lift_embedding(gm: fx.GraphModule, node: fx.Node) -> None:
    """``embedding(weight, ids)`` on a module's own table as an nn.Embedding at that module's path. A table
    that other ops read too (GPT-2's token table, tied to ``lm_head``, which is lifted as the Linear) stays a
    plain lookup: the layer owns that weight."""
    path = _owner(gm, node.args[0], "weight")
    table = _input(node, 0)
    if path is None or len(table.users) > 1 or not _replaceable(gm, path, {"weight"}):
        return
    weight = cast(nn.Parameter, gm.get_submodule(path).weight)
    if weight.dim() != 2:
        return
    padding_idx = node_arg(node, 2, "padding_idx", -1)
    module = nn.Embedding(
        weight.shape[0],
        weight.shape[1],
        padding_idx=None if padding_idx < 0 else padding_idx,
        scale_grad_by_freq=bool(node_arg(node, 3, "scale_grad_by_freq", False)),
        sparse=bool(node_arg(node, 4, "sparse", False)),
        device="meta",
    )
    module.weight = weight
    _replace_call(gm, node, path, module, data=1)


def _lift_batch_norm(gm: fx.GraphModule, node: fx.Node) -> None:
    path = _owner(gm, node.args[3], "running_mean")
    if path is None or not _replaceable(
        gm, path, {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    ):
        return
    holder = gm.get_submodule(path)
    source = _input(node, 0)
    ndim = source.meta["val"].dim() if "val" in source.meta else 4
    affine = node.args[1] is not None
    bn = _BATCH_NORMS[ndim](
        cast(torch.Tensor, holder.running_mean).shape[0],
        eps=cast(float, node.args[7]),  # aten.batch_norm(..., float momentum, float eps, ...)
        momentum=cast(float, node.args[6]),
        affine=affine,
        device="meta",
    )
    for name in ("weight", "bias") if affine else ():
        setattr(bn, name, getattr(holder, name))
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        if hasattr(holder, name):
            bn.register_buffer(name, getattr(holder, name))
    bn.train(bool(node.args[5]))
    _replace_call(gm, node, path, bn)


def _lift_dropout(gm: fx.GraphModule, node: fx.Node, index: int) -> None:
    name = f"dropout_{index}"
    gm.add_submodule(name, nn.Dropout(float(cast(float, node.args[1]))))
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(name, (node.args[0],))
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)


def widen_batch(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """torch.export specialises a batch of 1; a batch of 2 keeps the axis symbolic."""
    return tuple(t.expand(2, *t.shape[1:]).contiguous() if t.dim() and t.shape[0] == 1 else t for t in inputs)


def trainable_module(ep: torch.export.ExportedProgram) -> fx.GraphModule:
    """A GraphModule with the program's layers as modules; ``.train()`` works."""
    gm = ep.module()
    for attr in ("train", "eval"):
        gm.__dict__.pop(attr, None)
    for index, node in enumerate(list(gm.graph.nodes)):
        name = op_name(node)
        if node.op == "call_module" and node.target == "_guards_fn":
            gm.graph.erase_node(node)
        elif name in LIFTABLE:
            _lift_layer(gm, node)
        elif name == "addmm":
            _lift_addmm(gm, node)
        elif name in ("mm", "matmul"):
            _lift_matmul(gm, node)
        elif name == "embedding":
            _lift_embedding(gm, node)
        elif name == "batch_norm":
            _lift_batch_norm(gm, node)
        elif name in DROPOUTS:
            _lift_dropout(gm, node, index)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.train(False)
