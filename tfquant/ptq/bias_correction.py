"""Bias correction (Nagel et al. 2019; white paper section 3.3).

Quantizing W to W^ = W + dW shifts a layer's expected output by dW E[x]; subtracting it from the
bias removes the shift:

- empirical: E[W^ x^] - E[W x] measured on calibration data, layer by layer in order
  (`tfquant.ptq.layerwise.run_layerwise`);
- analytic (data-free): E[x] from the batch-norm statistics of the layer feeding this one,
  through its ReLU / ReLU6 as a clipped normal (`tfquant.ptq.stats`); dW from the weight grid
  (core's FakeQuant). Layers whose input has no statistics (the first layer) are skipped.
"""
from __future__ import annotations

import numpy as np

from tfquant.graph import Graph, QuantPlan
from tfquant.ptq.cle import absorbed_bias
from tfquant.ptq.layerwise import quantized_kernel
from tfquant.ptq.stats import input_stats_from_range, propagate_stats


def analytic_bias_correction(graph: Graph, plan: QuantPlan, input_range=None) -> dict[str, float]:
    """Subtract dW E[x] from every linear layer's bias whose input statistics are known.
    Returns {layer: max |correction|}."""
    in_stats = input_stats_from_range(graph, input_range) if input_range is not None else {}
    post, _ = propagate_stats(graph, in_stats)
    corrections: dict[str, np.ndarray] = {}
    for node in graph.linear_nodes():
        x = post.get(node.inputs[0])
        if x is None:
            continue
        dw = quantized_kernel(node, plan).astype(np.float64) - node.kernel.astype(np.float64)
        probe = node.clone()
        probe.weights["kernel"] = dw
        if x.mean.shape[0] != (node.kernel.shape[2] if node.type != "matmul" else node.kernel.shape[0]):
            continue
        corrections[node.name] = absorbed_bias(probe, x.mean)
    done = {}
    for node in graph.linear_nodes():
        if node.name not in corrections:
            continue
        c = corrections[node.name]
        b = np.zeros(node.out_channels) if node.bias is None else node.bias.astype(np.float64)
        node.weights["bias"] = (b - c).astype(np.float32)
        done[node.name] = float(np.max(np.abs(c)))
    return done
