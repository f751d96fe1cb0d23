"""Pattern matching on the IR: conv -> bn -> act, activation fusion, and the chains of layers
that cross-layer equalization rescales (conv -> act -> conv pairs, conv -> act -> depthwise ->
act -> conv triplets, and longer chains, through Pad).

    >>> for linear, bn in bn_folds(graph): ...           # linear -> affine, the affine only reader
    >>> split_affines(graph)                               # unfolded affine -> MUL const, ADD const
    >>> fuse_activations(graph)                            # relu / relu6 into the op before them
    >>> for chain in equalization_chains(graph): chain.layers, chain.pads
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tfquant.core.op_rules import affine_parts, merged_readers
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
    if cur.type == "depthwise" and cur.kernel.shape[3] != 1:
        return None, []
    return cur, pads


def _scalable(node: Node) -> bool:
    if node.type not in ("conv2d", "depthwise"):
        return False
    if node.type == "depthwise" and node.kernel.shape[3] != 1:
        return False
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
