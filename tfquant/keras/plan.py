"""The `QuantPlan` of a QAT model: its live quantizers read as one plan, and a plan written back.

    >>> plan = tfquant.keras.plan_of(qmodel)     # snapshot of every range and weight grid
    >>> print(plan.table())
    >>> plan.save("plan.json")
    >>> tfquant.keras.apply_plan(qmodel, tfquant.QuantPlan.load("plan.json"))   # ranges back
    >>> tfquant.to_tflite(qmodel, "m.tflite", plan=plan)   # export with the plan, model unchanged

Activation quantizers are named "<layer>/<quantizer>" (e.g. "conv1/output"); their tensors are
the layers' outputs ("conv1:0"; a pooling layer's output maps to its input's quantizer, a layer
that writes onto a concatenation's grid to the concatenation's); fixed grids (softmax, sigmoid,
tanh) are entries too. Weight entries ("<layer>/kernel") are `derived`: QAT recomputes
their last-value range from the weights at every step.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import numpy as np
import tensorflow as tf

from tfquant.core import QuantPlan, kernel_range
from tfquant.errors import SpecError
from tfquant.keras.errors import WiringError
from tfquant.keras.layers import QuantConv, QuantLayer
from tfquant.keras.quantizers import ActivationQuantizer, FixedQuantizer


def _quant_layers(qmodel) -> list[QuantLayer]:
    if not isinstance(qmodel, keras.Model):
        raise SpecError(f"plan_of needs a Keras model from tfquant.quantize_model, got {type(qmodel).__name__}.")
    layers = [la for la in qmodel._flatten_layers(include_self=False) if isinstance(la, QuantLayer)]
    if not layers:
        raise SpecError(f"Model {qmodel.name!r} has no tfquant layers: quantize it with tfquant.quantize_model first.")
    return layers


def _weight_entries(layer: QuantConv):
    """(name, spec, (lo, hi)) of each kernel of a QuantConv, as its forward pass computes them."""
    kernel, _ = layer.folded_weights()
    spec = layer.weight_spec
    yield f"{layer.name}/kernel", spec, kernel_range(kernel, layer.kind == "depthwise", spec.per_channel)
    if layer.kind == "separable":
        dspec = layer._depthwise_spec()
        yield (f"{layer.name}/depthwise_kernel", dspec,
               kernel_range(tf.convert_to_tensor(layer.layer.depthwise_kernel), True, dspec.per_channel))


def _add_quantizer(plan: QuantPlan, qid: str, q, tensor: str) -> None:
    plan.owners[qid] = [tensor]
    plan.qid[tensor] = qid
    if isinstance(q, FixedQuantizer):
        plan.fixed[qid] = q.range()
    elif isinstance(q, ActivationQuantizer) and q.is_initialized():
        lo, hi = q.range()
        plan.ranges[qid] = (float(lo.numpy()), float(hi.numpy()))


def plan_of(qmodel: keras.Model) -> QuantPlan:
    """The QuantPlan of a model `tfquant.quantize_model` built: ranges as they are now."""
    plan = QuantPlan(qid={}, owners={}, fixed={})
    layers = _quant_layers(qmodel)
    ids = {}
    for layer in layers:
        for name, q in layer.quantizers().items():
            ids[id(q)] = q.name               # "<layer>/<quantizer>", given when the layer built it
            _add_quantizer(plan, q.name, q, f"{layer.name}:0" if name == "output" else f"{q.name}:0")
    for layer in layers:
        try:
            out = layer.output_quantizer()
        except WiringError:          # a concat's producer not wired to one: no grid of its own
            out = None
        if isinstance(out, FixedQuantizer) and id(out) not in ids:      # softmax, sigmoid, tanh
            ids[id(out)] = out.name
            _add_quantizer(plan, out.name, out, f"{layer.name}:0")
        elif out is not None and id(out) in ids:
            plan.qid[f"{layer.name}:0"] = ids[id(out)]
        if isinstance(layer, QuantConv):
            for wname, spec, (lo, hi) in _weight_entries(layer):
                plan.weight_specs[wname] = spec
                plan.weight_ranges[wname] = (np.asarray(lo), np.asarray(hi))
                plan.derived.add(wname)
    return plan


def apply_plan(qmodel: keras.Model, plan: QuantPlan) -> None:
    """Write the plan's activation ranges into the model's quantizers (weights are untouched:
    their grids follow the weights)."""
    plan.check_matches(plan_of(qmodel))
    if plan.non_int8():
        named = ", ".join(f"{e!r} ({plan.precision[e]})" for e in plan.non_int8()[:3])
        raise SpecError(f"This plan keeps {named} out of int8: a QAT model exports int8 tensors only (float "
                        "and int16 tensors are a tfquant.ptq plan feature); set them back to int8.")
    for layer in _quant_layers(qmodel):
        for q in layer.quantizers().values():
            if isinstance(q, ActivationQuantizer) and q.name in plan.ranges:
                q.set_range(*plan.ranges[q.name])


@contextlib.contextmanager
def plan_applied(qmodel: keras.Model, plan: QuantPlan) -> Iterator[keras.Model]:
    """Apply `plan` for the duration of the block, then put the model's own ranges back."""
    saved = {}
    for layer in _quant_layers(qmodel):
        for q in layer.quantizers().values():
            if isinstance(q, ActivationQuantizer):
                saved[id(q)] = (q, [v.numpy() for v in (q.min, q.max, q.initialized)])
    apply_plan(qmodel, plan)
    try:
        yield qmodel
    finally:
        for q, (lo, hi, init) in saved.values():
            q.min.assign(lo)
            q.max.assign(hi)
            q.initialized.assign(init)
