"""The small IR tfquant's PTQ works on: the ops of a frozen graph that matter for quantization.

A `Graph` is an ordered (topological) dict of `Node`s. Each node has a canonical `type`:

==============  =============================================================================
input           a model input (Placeholder)
const           a constant still needed by a pass-through op (`weights["value"]`)
conv2d          Conv2D, NHWC; `weights["kernel"]` [H, W, Cin, Cout], optional `weights["bias"]`
depthwise       DepthwiseConv2dNative; kernel [H, W, C, M], bias [C * M]
matmul          MatMul with a constant right operand; kernel [in, out] (transpose_b undone)
bias_add        data + constant per-channel vector (BiasAdd, Add/AddV2 or Sub with a constant)
affine          data * scale + offset per channel: a batch norm (FusedBatchNorm*, or the
                Mul/Add(Sub) that Keras 3 writes), with its statistics in `node.bn` when known,
                or a Mul / RealDiv by a constant (Rescaling, Normalization); one that no linear
                op absorbs is split into MUL by a constant + bias_add (`split_affines`), both int8
relu, relu6     activations (fused into the producing linear op / add by `fuse_activations`)
add             data + data (residual)
hard_swish      x * relu6(x + 3) / 6 (TFLite's HARD_SWISH), matched by `patterns.fuse_hard_swish`
pad             Pad/PadV2 with constant zero padding
avg_pool, max_pool, mean, concat, reshape, softmax, identity
passthrough     any other op: emitted untouched from its NodeDef, and reported
==============  =============================================================================

Linear nodes (conv2d, depthwise, matmul), `add`, `affine` and `bias_add` carry a fused `activation` (None, "relu",
"relu6") once `fuse_activations` has run, and linear nodes carry `out_stats`: the per-channel
mean and standard deviation of their pre-activation output (beta and |gamma| of a folded batch
norm) when known — the statistics that data-free range setting, bias absorption and analytic
bias correction use.

Tensor references are "node_name:index" strings, as in TensorFlow.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterator, Optional

import numpy as np

from tfquant.core.bn_folding import bn_affine
from tfquant.core.op_rules import NO_OP, keeps_input_grid

LINEAR_TYPES = frozenset({"conv2d", "depthwise", "matmul"})
ACTIVATION_TYPES = frozenset({"relu", "relu6"})
# IR type -> the TFLite op it becomes, for the types whose output shares the input's quantizer
# (`core.op_rules.keeps_input_grid`: TFLite requires the same scale in and out).
TFLITE_OP_OF_TYPE = {"pad": "PAD", "max_pool": "MAX_POOL_2D", "reshape": "RESHAPE", "identity": NO_OP,
                     "avg_pool": "AVERAGE_POOL_2D", "concat": "CONCATENATION"}
SAME_SCALE_TYPES = frozenset(t for t, op in TFLITE_OP_OF_TYPE.items() if keeps_input_grid(op))


def ref(name: str, index: int = 0) -> str:
    """Tensor reference "name:index"."""
    return f"{name}:{index}"


def split_ref(tensor_ref: str) -> tuple[str, int]:
    name, _, index = tensor_ref.rpartition(":")
    return name, int(index)


@dataclasses.dataclass
class BNStats:
    """A batch norm's parameters: y = gamma * (x - mean) / sqrt(var + eps) + beta.

    Its output is distributed with per-channel mean `beta` and standard deviation |gamma|
    (Nagel et al. 2019), which is what data-free steps rely on.
    """

    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, offset) as float32, computed in float64 (`tfquant.core.bn_folding`)."""
        f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
        scale, offset = bn_affine(f64(self.gamma), f64(self.beta), f64(self.mean), f64(self.var), self.eps)
        return scale.astype(np.float32), offset.astype(np.float32)


@dataclasses.dataclass
class Stats:
    """Per-channel mean and standard deviation of a tensor (e.g. a BN output)."""

    mean: np.ndarray
    std: np.ndarray

    def scaled(self, factor: np.ndarray) -> "Stats":
        return Stats(self.mean * factor, self.std * np.abs(factor))

    def shifted(self, delta: np.ndarray) -> "Stats":
        return Stats(self.mean + delta, self.std)


@dataclasses.dataclass
class Node:
    name: str
    type: str
    inputs: list[str]                       # data (and, for pass-through ops, constant) refs
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    weights: dict[str, Optional[np.ndarray]] = dataclasses.field(default_factory=dict)
    tf_type: str = ""
    node_def: Any = None                    # the original NodeDef (pass-through, const)
    out_dtypes: list = dataclasses.field(default_factory=list)   # tf.DType per output
    out_shapes: list = dataclasses.field(default_factory=list)   # TensorShape per output
    activation: Optional[str] = None        # fused activation (linear, add)
    bn: Optional[BNStats] = None            # affine: the batch norm it came from
    out_stats: Optional[Stats] = None       # linear: pre-activation output statistics
    origin: list[str] = dataclasses.field(default_factory=list)  # TF nodes merged into this one

    @property
    def is_linear(self) -> bool:
        return self.type in LINEAR_TYPES

    @property
    def kernel(self) -> np.ndarray:
        return self.weights["kernel"]

    @property
    def bias(self) -> Optional[np.ndarray]:
        return self.weights.get("bias")

    @property
    def out_channels(self) -> int:
        """Output channels of a linear node (C * M for a depthwise kernel)."""
        k = self.kernel
        if self.type == "depthwise":
            return k.shape[2] * k.shape[3]
        return k.shape[-1]

    def output(self, index: int = 0) -> str:
        return ref(self.name, index)

    def clone(self) -> "Node":
        node = copy.copy(self)
        node.inputs = list(self.inputs)
        node.attrs = dict(self.attrs)
        node.weights = {k: (None if v is None else np.array(v, copy=True)) for k, v in self.weights.items()}
        node.out_dtypes = list(self.out_dtypes)
        node.out_shapes = list(self.out_shapes)
        node.bn = copy.deepcopy(self.bn)
        node.out_stats = copy.deepcopy(self.out_stats)
        node.origin = list(self.origin)
        return node


@dataclasses.dataclass
class InputSpec:
    key: str          # the signature's argument name
    ref: str          # the input node's output
    shape: list       # with None for unknown dimensions
    dtype: Any        # tf.DType


class Graph:
    """Nodes in topological order, the model's inputs and outputs, and what was not understood."""

    def __init__(self, nodes: list[Node], inputs: list[InputSpec], outputs: list[tuple[str, str]],
                 output_structure: str = "dict", library=None, source: str = ""):
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self.inputs = inputs
        self.outputs = outputs               # [(key, ref)]
        self.output_structure = output_structure   # "dict", "single" or "list"
        self.library = library               # FunctionDefLibrary of the frozen graph
        self.source = source

    # ---- traversal ---------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(list(self.nodes.values()))

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def producer(self, tensor_ref: str) -> Node:
        return self.nodes[split_ref(tensor_ref)[0]]

    def consumers(self, tensor_ref: str) -> list[Node]:
        return [n for n in self.nodes.values() if tensor_ref in n.inputs]

    def output_refs(self) -> list[str]:
        return [r for _, r in self.outputs]

    def is_output(self, tensor_ref: str) -> bool:
        return tensor_ref in self.output_refs()

    def sole_consumer(self, tensor_ref: str) -> Optional[Node]:
        """The one node reading `tensor_ref`, if exactly one does and it is not a model output."""
        users = self.consumers(tensor_ref)
        if len(users) != 1 or self.is_output(tensor_ref) or users[0].inputs.count(tensor_ref) != 1:
            return None
        return users[0]

    def linear_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.is_linear]

    @property
    def unknown_ops(self) -> list[tuple[str, str]]:
        """(node name, TF op) of every op passed through untouched that carries float data."""
        return [(n.name, n.tf_type) for n in self.nodes.values()
                if n.type == "passthrough" and any(d.is_floating for d in n.out_dtypes)]

    # ---- editing -----------------------------------------------------------------------
    def replace_uses(self, old_ref: str, new_ref: str) -> None:
        for n in self.nodes.values():
            n.inputs = [new_ref if r == old_ref else r for r in n.inputs]
        self.outputs = [(k, new_ref if r == old_ref else r) for k, r in self.outputs]

    def remove(self, name: str) -> None:
        """Remove a node whose outputs nobody reads any more."""
        del self.nodes[name]

    def bypass(self, node: Node) -> None:
        """Remove a single-input node, wiring its readers to its input."""
        self.replace_uses(node.output(0), node.inputs[0])
        self.remove(node.name)

    def prune(self) -> None:
        """Drop nodes that no output depends on."""
        live: set[str] = set()
        stack = [split_ref(r)[0] for r in self.output_refs()]
        while stack:
            name = stack.pop()
            if name in live or name not in self.nodes:
                continue
            live.add(name)
            stack.extend(split_ref(r)[0] for r in self.nodes[name].inputs)
        for inp in self.inputs:
            live.add(split_ref(inp.ref)[0])
        for name in [n for n in self.nodes if n not in live]:
            del self.nodes[name]

    def copy(self) -> "Graph":
        g = Graph([n.clone() for n in self.nodes.values()], list(self.inputs), list(self.outputs),
                  self.output_structure, self.library, self.source)
        return g

    # ---- reporting ---------------------------------------------------------------------
    def summary(self) -> str:
        counts: dict[str, int] = {}
        for n in self.nodes.values():
            counts[n.type] = counts.get(n.type, 0) + 1
        lines = [f"graph from {self.source or 'memory'}: {len(self.nodes)} nodes (" +
                 ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"]
        unknown = self.unknown_ops
        if unknown:
            lines.append("passed through untouched: " + ", ".join(f"{n} ({op})" for n, op in unknown))
        return "\n".join(lines)

    def table(self) -> str:
        lines = [f"{'node':<60} {'type':<12} {'act':<6} inputs"]
        for n in self.nodes.values():
            lines.append(f"{n.name[-60:]:<60} {n.type:<12} {n.activation or '':<6} "
                         + ", ".join(i.split('/')[-1] for i in n.inputs))
        return "\n".join(lines)
