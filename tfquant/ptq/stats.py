"""Data-free statistics: per-channel mean and standard deviation of every tensor, propagated
from batch-norm statistics (Nagel et al. 2019) and the model's input range.

A folded batch norm says its layer's pre-activation output is ~ N(beta, gamma^2) per channel;
ReLU / ReLU6 turn it into a clipped normal, whose mean and variance have closed forms; a layer
without a batch norm gets mean W.E[x] + b and variance sum W^2 Var[x] (independent inputs).
These feed BN-based range setting, analytic bias correction and data-free bias absorption.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from tfquant.core.op_rules import ACTIVATION_BOUNDS
from tfquant.graph import Graph, Node, Stats, ref


_erf = np.vectorize(math.erf, otypes=[np.float64])


def normal_cdf(x):
    return 0.5 * (1.0 + _erf(np.asarray(x, np.float64) / math.sqrt(2.0)))


def normal_pdf(x):
    x = np.asarray(x, np.float64)
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def clipped_normal_moments(mean, std, low: float = 0.0, high: float = np.inf):
    """Mean and standard deviation of clip(X, low, high) for X ~ N(mean, std^2), per element.

    E[ReLU(X)] = std * pdf(-mean/std) + mean * (1 - cdf(-mean/std)) (white paper eq. for
    analytic bias correction); ReLU6 adds the upper bound 6."""
    mu = np.asarray(mean, np.float64)
    s = np.maximum(np.asarray(std, np.float64), 1e-12)
    a = (low - mu) / s if np.isfinite(low) else np.full_like(mu, -np.inf)
    b = (high - mu) / s if np.isfinite(high) else np.full_like(mu, np.inf)
    cdf_a, cdf_b = normal_cdf(a), normal_cdf(b)
    pdf_a, pdf_b = normal_pdf(a), normal_pdf(b)
    lo_term = low * cdf_a if np.isfinite(low) else 0.0
    hi_term = high * (1.0 - cdf_b) if np.isfinite(high) else 0.0
    mid = cdf_b - cdf_a
    e1 = lo_term + hi_term + mu * mid + s * (pdf_a - pdf_b)
    a_pdf = np.where(np.isfinite(a), a, 0.0) * pdf_a
    b_pdf = np.where(np.isfinite(b), b, 0.0) * pdf_b
    e2 = ((low ** 2) * cdf_a if np.isfinite(low) else 0.0) + ((high ** 2) * (1 - cdf_b) if np.isfinite(high) else 0.0) \
        + (mu ** 2 + s ** 2) * mid + 2 * mu * s * (pdf_a - pdf_b) + s ** 2 * (a_pdf - b_pdf)
    var = np.maximum(e2 - e1 ** 2, 0.0)
    return e1, np.sqrt(var)


def activation_stats(pre: Stats, activation: Optional[str]) -> Stats:
    if activation is None:
        return pre
    low, high = ACTIVATION_BOUNDS[activation]
    m, s = clipped_normal_moments(pre.mean, pre.std, low, high)
    return Stats(m, s)


def linear_output_stats(node: Node, x: Stats) -> Stats:
    """Pre-activation statistics of a linear node from its input's (independence assumed)."""
    k = node.kernel.astype(np.float64)
    b = np.zeros(node.out_channels) if node.bias is None else node.bias.astype(np.float64)
    if node.type == "conv2d":
        mean = np.einsum("hwio,i->o", k, x.mean) + b
        var = np.einsum("hwio,i->o", k ** 2, x.std ** 2)
    elif node.type == "depthwise":
        mean = np.einsum("hwcm,c->cm", k, x.mean).reshape(-1) + b
        var = np.einsum("hwcm,c->cm", k ** 2, x.std ** 2).reshape(-1)
    else:
        mean = x.mean @ k + b
        var = (x.std ** 2) @ (k ** 2)
    return Stats(mean, np.sqrt(var))


def propagate_stats(graph: Graph, input_stats: dict[str, Stats]) -> tuple[dict[str, Stats], dict[str, Stats]]:
    """(post: tensor ref -> Stats, pre: linear node name -> pre-activation Stats)."""
    post: dict[str, Stats] = dict(input_stats)
    pre: dict[str, Stats] = {}
    for node in graph:
        ins = [post.get(r) for r in node.inputs]
        out: Optional[Stats] = None
        if node.is_linear:
            if node.out_stats is not None:
                p = node.out_stats
            elif ins and ins[0] is not None and _channels_ok(node, ins[0]):
                p = linear_output_stats(node, ins[0])
            else:
                p = None
            if p is not None:
                pre[node.name] = p
                out = activation_stats(p, node.activation)
        elif node.type == "add" and all(s is not None for s in ins) and ins[0].mean.shape == ins[1].mean.shape:
            out = activation_stats(Stats(ins[0].mean + ins[1].mean, np.sqrt(ins[0].std ** 2 + ins[1].std ** 2)),
                                   node.activation)
        elif node.type in ("pad", "max_pool", "avg_pool", "mean", "identity") and ins and ins[0] is not None:
            out = ins[0]
        elif node.type in ("relu", "relu6") and ins[0] is not None:
            out = activation_stats(ins[0], node.type)
        elif node.type == "affine" and ins[0] is not None:
            sc, off = node.weights["scale"].astype(np.float64), node.weights["offset"].astype(np.float64)
            out = activation_stats(Stats(ins[0].mean * sc + off, ins[0].std * np.abs(sc)), node.activation)
        elif node.type == "bias_add" and ins[0] is not None:
            out = activation_stats(ins[0].shifted(node.weights["bias"].astype(np.float64)), node.activation)
        elif node.type == "concat" and all(s is not None for s in ins) and node.attrs["axis"] in (-1, 3):
            out = Stats(np.concatenate([s.mean for s in ins]), np.concatenate([s.std for s in ins]))
        elif node.type == "reshape" and ins[0] is not None:
            shape = node.out_shapes[0] if node.out_shapes else None
            if shape is not None and shape.rank and shape[-1] == ins[0].mean.shape[0]:
                out = ins[0]
        if out is not None:
            post[ref(node.name)] = out
    return post, pre


def _channels_ok(node: Node, x: Stats) -> bool:
    k = node.kernel
    want = k.shape[2] if node.type in ("conv2d", "depthwise") else k.shape[0]
    return x.mean.shape[0] == want


def input_stats_from_range(graph: Graph, input_range) -> dict[str, Stats]:
    """A uniform distribution over the input range, per input channel."""
    lo, hi = input_range
    out = {}
    for spec in graph.inputs:
        channels = spec.shape[-1] if spec.shape else None
        if channels is None:
            continue
        out[spec.ref] = Stats(np.full(channels, (lo + hi) / 2.0), np.full(channels, (hi - lo) / math.sqrt(12.0)))
    return out
