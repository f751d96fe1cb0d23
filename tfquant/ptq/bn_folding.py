"""Batch-norm folding: conv / depthwise / matmul -> batch norm becomes one linear op.

    W' = W * gamma / sqrt(var + eps)            (per output channel)
    b' = (b - mean) * gamma / sqrt(var + eps) + beta   (a bias is created where there was none)

The affine form (scale, offset) covers FusedBatchNorm and the Mul/Add(Sub) Keras 3 writes alike.
The folded layer keeps the batch norm's output statistics (mean beta, standard deviation
|gamma|) as `out_stats`, for the data-free steps.
"""
from __future__ import annotations

import numpy as np

from tfquant.graph import Graph, Node, Stats, bn_folds


def scale_output_channels(node: Node, factor: np.ndarray) -> None:
    """Multiply a linear node's output channel c (kernel and bias) by factor[c]."""
    k = node.kernel.astype(np.float64)
    f = np.asarray(factor, np.float64)
    if node.type == "depthwise":
        k = k * f.reshape(k.shape[2], k.shape[3])[None, None]
    else:
        k = k * f.reshape([1] * (k.ndim - 1) + [-1])
    node.weights["kernel"] = k.astype(np.float32)
    if node.bias is not None:
        node.weights["bias"] = (node.bias.astype(np.float64) * f).astype(np.float32)


def fold_batch_norms(graph: Graph) -> list[str]:
    """Fold every batch norm (affine) that directly follows a linear op into it.
    Returns the names of the folded linear nodes."""
    folded = []
    for linear, affine in bn_folds(graph):
        scale = affine.weights["scale"].astype(np.float64)
        offset = affine.weights["offset"].astype(np.float64)
        bias = np.zeros(linear.out_channels) if linear.bias is None else linear.bias.astype(np.float64)
        scale_output_channels(linear, scale)
        linear.weights["bias"] = (bias * scale + offset).astype(np.float32)
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
