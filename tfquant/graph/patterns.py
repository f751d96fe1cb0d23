"""Pattern matching on the IR: conv -> bn -> act, activation fusion, and the chains of layers
that cross-layer equalization rescales (conv -> act -> conv pairs, conv -> act -> depthwise ->
act -> conv triplets, and longer chains, through Pad).

    >>> for linear, bn in bn_folds(graph): ...           # linear -> affine, the affine only reader
    >>> fuse_hard_swish(graph)                             # x * relu6(x + 3) / 6 -> hard_swish (HARD_SWISH)
    >>> split_affines(graph)                               # unfolded affine -> MUL const, ADD const
    >>> fuse_activations(graph)                            # relu / relu6 into the op before them
    >>> for chain in equalization_chains(graph): chain.layers, chain.pads
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tfquant.core.op_rules import HARD_SWISH_OFFSET, HARD_SWISH_SCALE, affine_parts, merged_readers
from tfquant.graph.ir import ACTIVATION_TYPES, Graph, Node

# the IR types that take a fused ReLU / ReLU6 (TFLite's CONV_2D, ..., ADD, MUL)
FUSING_TYPES = frozenset({"add", "affine", "bias_add"})


def bn_folds(graph: Graph) -> list[tuple[Node, Node]]:
    """(linear, affine) pairs where the affine (a batch norm) is the linear op's only reader.

    The affine's channels must be the linear op's output channels (the last axis)."""
    pairs = []
    for node in graph:
        if not node.is_linear:
            continue
        nxt = graph.sole_consumer(node.output())
        if nxt is not None and nxt.type == "affine" and nxt.weights["scale"].shape[0] == node.out_channels \
                and node.activation is None:
            pairs.append((node, nxt))
    return pairs


def conv_bn_act(graph: Graph) -> list[tuple[Node, Optional[Node], Optional[Node]]]:
    """(linear, batch norm or None, activation or None) for every linear op, before folding."""
    out = []
    for node in graph:
        if not node.is_linear:
            continue
        bn = act = None
        nxt = graph.sole_consumer(node.output())
        if nxt is not None and nxt.type == "affine":
            bn = nxt
            nxt = graph.sole_consumer(nxt.output())
        if nxt is not None and nxt.type in ACTIVATION_TYPES:
            act = nxt
        out.append((node, bn, act))
    return out


def _is_data_mul(graph: Graph, node: Optional[Node]) -> bool:
    return node is not None and node.type == "passthrough" and node.tf_type == "Mul" and len(node.inputs) == 2


def _constant_affine(node: Optional[Node], scale: Optional[float], offset: Optional[float]) -> bool:
    """An affine (x * scale) or bias_add (x + offset) by the same scalar on every channel, no
    fused activation."""
    if node is None or node.activation is not None:
        return False
    if scale is not None:
        return node.type == "affine" and np.all(node.weights["scale"] == np.float32(scale)) and \
            not np.any(node.weights["offset"])
    return node.type == "bias_add" and np.all(node.weights["bias"] == np.float32(offset))


def _relu6_of_x_plus_3(graph: Graph, tensor_ref: str) -> Optional[tuple[str, list[Node]]]:
    """(x, [relu6, bias_add]) if `tensor_ref` is relu6(x + 3), each op read once."""
    relu6 = graph.producer(tensor_ref)
    if relu6.type != "relu6":
        return None
    add = graph.producer(relu6.inputs[0])
    if not _constant_affine(add, None, HARD_SWISH_OFFSET) or graph.sole_consumer(add.output()) is not relu6:
        return None
    return add.inputs[0], [relu6, add]


def _hard_swish_match(graph: Graph, node: Node) -> Optional[tuple[str, list[Node]]]:
    """(x, inner nodes) if `node` computes x * (relu6(x + 3) * (1/6)) (Keras' hard_silu) or
    (x * relu6(x + 3)) * (1/6), every inner tensor read by the pattern alone."""
    def sole(n: Node, reader: Node) -> bool:
        return graph.sole_consumer(n.output()) is reader

    if _is_data_mul(graph, node):                                     # x * (relu6(x + 3) / 6)
        for x_ref, gate_ref in (node.inputs, node.inputs[::-1]):
            scale = graph.producer(gate_ref)
            if not _constant_affine(scale, HARD_SWISH_SCALE, None) or not sole(scale, node):
                continue
            inner = _relu6_of_x_plus_3(graph, scale.inputs[0])
            if inner is not None and inner[0] == x_ref and sole(inner[1][0], scale):
                return x_ref, [scale, *inner[1]]
    if _constant_affine(node, HARD_SWISH_SCALE, None):                 # (x * relu6(x + 3)) / 6
        mul = graph.producer(node.inputs[0])
        if _is_data_mul(graph, mul) and sole(mul, node):
            for x_ref, gate_ref in (mul.inputs, mul.inputs[::-1]):
                inner = _relu6_of_x_plus_3(graph, gate_ref)
                if inner is not None and inner[0] == x_ref and sole(inner[1][0], mul):
                    return x_ref, [mul, *inner[1]]
    return None


def fuse_hard_swish(graph: Graph) -> int:
    """Each x * relu6(x + 3) / 6 (MobileNetV3's hard-swish) becomes one `hard_swish` node, the int8
    HARD_SWISH the converter fuses the pattern into (`core.op_rules.HARD_SWISH_TFLITE_OP`). Run
    before `split_affines` and `fuse_activations`. Returns the number fused."""
    fused = 0
    for node in graph:
        if node.name not in graph.nodes:
            continue
        match = _hard_swish_match(graph, node)
        if match is None:
            continue
        x_ref, inner = match
        node.type, node.inputs, node.weights, node.bn, node.tf_type, node.node_def = \
            "hard_swish", [x_ref], {}, None, "", None
        node.origin = [o for n in reversed(inner) for o in n.origin] + node.origin
        for n in inner:
            graph.remove(n.name)
        fused += 1
    return fused


def split_affines(graph: Graph) -> int:
    """Each affine left after BN folding (x * scale + offset per channel) becomes the two int8 ops
    of `core.op_rules.AFFINE_TFLITE_OPS`: an affine with the scale only (MUL by a constant) and a
    bias_add of the offset (ADD of a constant), each with its own output grid. An all-zero offset
    leaves the affine alone; a scale of ones makes it a bias_add, or no op at all with a zero offset. Returns the number of ADDs made."""
    made = 0
    order = []
    identities = []
    for node in graph:
        order.append(node)
        if node.type != "affine":
            continue
        has_mul, has_add = affine_parts(node.weights["scale"], node.weights["offset"])
        if not has_mul and not has_add and node.activation is None:
            identities.append(node)      # x * 1 (Keras' swish multiplies by beta = 1): no op on the device
            continue
        if not has_add:
            continue
        offset = node.weights["offset"]
        if not has_mul:
            node.type, node.weights, node.bn = "bias_add", {"bias": offset}, None
            continue
        add = Node(name=f"{node.name}/offset", type="bias_add", inputs=[node.output()], weights={"bias": offset},
                   out_dtypes=list(node.out_dtypes), out_shapes=list(node.out_shapes), origin=list(node.origin))
        graph.replace_uses(node.output(), add.output())
        node.weights = {"scale": node.weights["scale"], "offset": np.zeros_like(offset)}
        order.append(add)
        made += 1
    graph.nodes = {n.name: n for n in order}
    for node in identities:
        graph.bypass(node)
    return made


def merge_activations(graph: Graph) -> int:
    """Merge the ReLU / ReLU6 nodes that read one tensor into the first of each kind
    (`core.op_rules.merged_readers`: one op on the device). Returns the number merged away."""
    readers: dict[str, list[Node]] = {}
    for node in graph:
        if node.type in ACTIVATION_TYPES:
            readers.setdefault(node.inputs[0], []).append(node)
    merged = 0
    for nodes in readers.values():
        for dup, kept in merged_readers([n.type for n in nodes]).items():
            graph.replace_uses(nodes[dup].output(), nodes[kept].output())
            nodes[kept].origin += nodes[dup].origin
            graph.remove(nodes[dup].name)
            merged += 1
    return merged


def fuse_activations(graph: Graph) -> int:
    """Fuse every ReLU / ReLU6 into the linear op, add, or constant MUL / ADD (affine, bias_add)
    that is its only input's producer (as TFLite fuses them), after merging the ReLUs that read
    one tensor (`merge_activations`). Returns the number fused."""
    merge_activations(graph)
    fused = 0
    for node in graph:
        if node.name not in graph.nodes or node.type not in ACTIVATION_TYPES:
            continue
        prev = graph.producer(node.inputs[0])
        if (prev.is_linear or prev.type in FUSING_TYPES) and prev.activation is None \
                and graph.sole_consumer(prev.output()) is node:
            prev.activation = node.type
            prev.origin += node.origin
            graph.bypass(node)
            fused += 1
    return fused


@dataclasses.dataclass
class Chain:
    """Linear layers joined one to the next through an activation (fused) and Pad nodes only,
    each intermediate tensor read by the next layer alone: their channels can be rescaled."""

    layers: list[Node]
    pads: list[list[Node]]     # pads[k]: Pad nodes between layers[k] and layers[k + 1]

    @property
    def is_triplet(self) -> bool:
        return len(self.layers) == 3 and self.layers[1].type == "depthwise"

    def padded(self, k: int) -> bool:
        """Whether layer k + 1 sees padded (zero) values of layer k's output."""
        return bool(self.pads[k]) or has_effective_padding(self.layers[k + 1])


def has_effective_padding(node: Node) -> bool:
    """A conv / depthwise whose padding adds border zeros (kernel larger than 1x1, not VALID)."""
    if node.type == "matmul":
        return False
    h, w = node.kernel.shape[:2]
    return (h > 1 or w > 1) and node.attrs.get("padding") != "VALID"


def _next_layer(graph: Graph, node: Node) -> tuple[Optional[Node], list[Node]]:
    pads = []
    cur = graph.sole_consumer(node.output())
    while cur is not None and cur.type == "pad":
        pads.append(cur)
        cur = graph.sole_consumer(cur.output())
    if cur is None or cur.type not in ("conv2d", "depthwise"):
        return None, []
    if cur.type == "depthwise" and cur.kernel.shape[3] != 1 or cur.attrs.get("groups", 1) > 1:
        return None, []
    return cur, pads


def _scalable(node: Node) -> bool:
    if node.type not in ("conv2d", "depthwise"):
        return False
    if node.type == "depthwise" and node.kernel.shape[3] != 1 or node.attrs.get("groups", 1) > 1:
        return False      # a grouped conv's input channels are not its producer's output channels
    return node.activation in (None, "relu", "relu6")


def equalization_chains(graph: Graph) -> list[Chain]:
    """Maximal chains of conv / depthwise layers that cross-layer equalization can rescale."""
    chains: list[Chain] = []
    in_chain: set[str] = set()
    successor: dict[str, tuple[Node, list[Node]]] = {}
    has_pred: set[str] = set()
    for node in graph:
        if not _scalable(node):
            continue
        nxt, pads = _next_layer(graph, node)
        if nxt is not None:
            successor[node.name] = (nxt, pads)
            has_pred.add(nxt.name)
    for node in graph:
        if node.name not in successor or node.name in has_pred or node.name in in_chain:
            continue
        layers, pads = [node], []
        cur = node
        while cur.name in successor and _scalable(cur):
            nxt, p = successor[cur.name]
            layers.append(nxt)
            pads.append(p)
            cur = nxt
        for n in layers:
            in_chain.add(n.name)
        chains.append(Chain(layers, pads))
    return chains
