"""Batch-norm folding: conv / depthwise / matmul -> batch norm becomes one linear op.

    W' = W * scale,  b' = b * scale + offset      (a bias is created where there was none)

with BN as y = scale * x + offset (`tfquant.core.bn_folding`, the formula QAT folds with too).

The affine form (scale, offset) covers FusedBatchNorm and the Mul/Add(Sub) Keras 3 writes alike.
The folded layer keeps the batch norm's output statistics (mean beta, standard deviation
|gamma|) as `out_stats`, for the data-free steps.
"""
from __future__ import annotations

import numpy as np

from tfquant.core.bn_folding import fold_affine, scale_output_channels
from tfquant.graph import Graph, Node, Stats, bn_folds


def kernel_layout(node: Node) -> str:
    """The layout (see tfquant.core.bn_folding) of a linear node's kernel."""
    return "depthwise" if node.type == "depthwise" else "last"


def scale_node_output_channels(node: Node, factor: np.ndarray) -> None:
    """Multiply a linear node's output channel c (kernel and bias) by factor[c], in float64."""
    f = np.asarray(factor, np.float64)
    node.weights["kernel"] = scale_output_channels(node.kernel.astype(np.float64), f,
                                                   kernel_layout(node)).astype(np.float32)
    if node.bias is not None:
        node.weights["bias"] = (node.bias.astype(np.float64) * f).astype(np.float32)


def fold_batch_norms(graph: Graph) -> list[str]:
    """Fold every batch norm (affine) that directly follows a linear op into it.
    Returns the names of the folded linear nodes."""
    folded = []
    for linear, affine in bn_folds(graph):
        bias = np.zeros(linear.out_channels) if linear.bias is None else linear.bias.astype(np.float64)
        kernel, bias = fold_affine(linear.kernel.astype(np.float64), bias,
                                   affine.weights["scale"].astype(np.float64),
                                   affine.weights["offset"].astype(np.float64), kernel_layout(linear))
        linear.weights["kernel"] = kernel.astype(np.float32)
        linear.weights["bias"] = bias.astype(np.float32)
        if affine.bn is not None:
            linear.out_stats = Stats(mean=affine.bn.beta.astype(np.float64),
                                     std=np.abs(affine.bn.gamma.astype(np.float64)))
        linear.origin += affine.origin
        linear.out_shapes = affine.out_shapes
        graph.bypass(affine)
        folded.append(linear.name)
    return folded


def unfolded_batch_norms(graph: Graph) -> list[str]:
    """Affine (batch norm) nodes left after folding: they run as separate MUL/ADD ops."""
    return [n.name for n in graph if n.type == "affine"]
