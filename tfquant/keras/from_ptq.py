"""QAT that starts from a PTQ result (white paper, section 4: initialise QAT from a good PTQ model).

    >>> result = tfquant.ptq(model, x_cal)                 # BN folded, CLE, bias correction, AdaRound
    >>> qmodel = tfquant.quantize_model(model)
    >>> tfquant.keras.init_from_ptq(qmodel, result, calibration=x_cal)
    >>> qmodel.compile(...); qmodel.fit(...)                # QAT from PTQ's weights and ranges

For every conv / depthwise / dense layer of `qmodel` whose kernel is a kernel of the model PTQ
imported, the layer takes PTQ's transformed weights (folded, equalized, bias corrected,
AdaRound-rounded) and PTQ's fused activation (CLE may have turned a ReLU6 into a ReLU); a folded
BN is set to the identity, carrying the bias, so QAT folds back exactly those weights (to float32
rounding). Output ranges PTQ has for the same tensors (those layers' outputs and the model input)
are copied; the other ranges come from `calibration` (run after the weights are in place) or keep
what the model had.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import keras
import numpy as np

from tfquant.errors import SpecError
from tfquant.keras.calibration import calibrate
from tfquant.keras.layers import QuantConv, QuantizeInput, QuantLayer
from tfquant.keras.quantizers import ActivationQuantizer

_KINDS = {"conv2d": "conv2d", "depthwise": "depthwise", "dense": "matmul"}   # QuantConv kind -> IR type


@dataclasses.dataclass
class InitReport:
    """What `init_from_ptq` carried over."""

    weights: list[str] = dataclasses.field(default_factory=list)       # layers given PTQ's weights
    ranges: list[str] = dataclasses.field(default_factory=list)        # quantizers given PTQ's range
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # layer -> why not

    def summary(self) -> str:
        text = f"PTQ -> QAT: weights of {len(self.weights)} layers, {len(self.ranges)} ranges"
        return text + "".join(f"\n  {k}: {v}" for k, v in self.skipped.items())


def _match(layer: QuantConv, nodes) -> Optional[str]:
    """The IR node (of the graph as PTQ imported it) that holds this layer's kernel."""
    kernel = np.asarray(layer.layer.kernel)
    hits = [n.name for n in nodes if n.type == _KINDS[layer.kind] and n.kernel.shape == kernel.shape
            and np.array_equal(n.kernel, kernel)]
    return hits[0] if len(hits) == 1 else None


def _set_weights(layer: QuantConv, kernel: np.ndarray, bias: Optional[np.ndarray]) -> Optional[str]:
    """Put PTQ's folded (kernel, bias) in the layer; returns why not, or None."""
    inner = layer.layer
    has_bias = bias is not None and bool(np.any(bias != 0))
    if has_bias and not inner.use_bias and layer.bn is None:
        return "PTQ gave it a bias (bias correction) and the layer has none to hold it"
    if has_bias and layer.bn is not None and layer.bn.beta is None and not inner.use_bias:
        return "its batch norm has no beta to carry PTQ's bias"
    inner.kernel.assign(kernel.astype(np.float32))
    if layer.bn is not None:       # the identity, carrying the bias: QAT's fold gives (kernel, bias)
        bn = layer.bn
        c = kernel.shape[-1] if layer.kind != "depthwise" else kernel.shape[-2] * kernel.shape[-1]
        b = np.zeros(c, np.float32) if bias is None else bias.astype(np.float32)
        if bn.gamma is not None:
            bn.gamma.assign(np.ones(c, np.float32))
        if bn.beta is not None:
            bn.beta.assign(b)
            if inner.use_bias:
                inner.bias.assign(np.zeros_like(b))
        elif inner.use_bias:       # no beta: the conv's own bias carries it
            inner.bias.assign(b)
        bn.moving_mean.assign(np.zeros(c, np.float32))
        bn.moving_variance.assign(np.full(c, 1.0 - bn.epsilon, np.float32))
    elif inner.use_bias:
        inner.bias.assign(np.zeros(kernel.shape[-1], np.float32) if bias is None else bias.astype(np.float32))
    return None


def init_from_ptq(qmodel: keras.Model, result, calibration=None, *, batch_size: int = 32) -> InitReport:
    """Give a QAT model (from `tfquant.quantize_model` of the Keras model `result` quantized) the
    PTQ result's weights, fused activations and ranges. Returns an `InitReport`."""
    if not hasattr(result, "plan") or not hasattr(result, "original_graph"):
        raise SpecError(f"init_from_ptq needs a tfquant.ptq result, got {type(result).__name__}.")
    layers = [la for la in qmodel._flatten_layers(include_self=False) if isinstance(la, QuantLayer)]
    if not layers:
        raise SpecError(f"Model {qmodel.name!r} has no tfquant layers: quantize it with tfquant.quantize_model first.")
    graph, plan = result.graph, result.plan
    original = list(result.original_graph.linear_nodes())
    report = InitReport()
    matched: dict[str, str] = {}
    for layer in layers:
        if not isinstance(layer, QuantConv):
            continue
        if layer.kind not in _KINDS:
            report.skipped[layer.name] = f"{layer.kind} layers are not carried over (not one IR node)"
            continue
        name = _match(layer, original)
        if name is None:
            report.skipped[layer.name] = "no kernel of the PTQ model equals its kernel (another model?)"
            continue
        node = graph[name]
        why = _set_weights(layer, node.kernel, node.bias)
        if why:
            report.skipped[layer.name] = why
            continue
        layer.activation = node.activation
        report.weights.append(layer.name)
        matched[layer.name] = node.output()
    if not report.weights:
        raise SpecError("init_from_ptq matched no layer of the QAT model to the PTQ result: quantize the "
                        "same Keras model with tfquant.ptq and tfquant.quantize_model.")
    if calibration is not None:
        calibrate(qmodel, calibration, batch_size=batch_size)
    input_ref = graph.inputs[0].ref if len(graph.inputs) == 1 else None
    for layer in layers:
        tensor = matched.get(layer.name, input_ref if isinstance(layer, QuantizeInput) else None)
        q = layer.quantizer
        if tensor is None or not isinstance(q, ActivationQuantizer) or layer.shared_output:
            continue
        if plan.is_owner(tensor) and plan.qid[tensor] not in plan.fixed and plan.qid[tensor] in plan.ranges:
            q.set_range(*plan.range_of(tensor))
            report.ranges.append(q.name)
    return report
