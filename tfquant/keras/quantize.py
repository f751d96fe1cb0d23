"""`quantize_model`: a Keras 3 model -> a trainable Keras 3 model that simulates TFLite int8.

    qmodel = tfquant.quantize_model(model)                     # W8A8, BN folded, ReLU fused
    qmodel.compile(...); qmodel.fit(...)                       # unchanged training
    tfquant.to_tflite(qmodel, "model.tflite")

How: the Functional graph (Sequential models through their Functional form; nested models — a
model used as a layer — are flattened into it) is walked in topological order and rebuilt:

- Conv1D / Conv2D / DepthwiseConv2D / SeparableConv2D / Conv2DTranspose / Dense, with a
  following BatchNormalization (folded) and ReLU / ReLU6 (fused), become one `QuantConv` when each
  tensor of the chain has that single consumer. Other fused `activation=`s are split off into a
  `QuantActivation`.
- Conv2D with groups is one grouped CONV_2D (ConvNeXt's 7x7 "depthwise" conv), as the converter
  emits it.
- Add (+ ReLU), Subtract, Multiply (the layers, or Keras' `a + b`, `a - b`, `a * b` of two
  tensors), Concatenate, AveragePooling1D/2D, GlobalAveragePooling1D/2D,
  bilinear UpSampling2D, standalone activations and Softmax get their tfquant layer; reshape,
  flatten, max pooling, padding, nearest upsampling, dropout stay as they are (pass-through:
  their values stay on the input's grid).
- Each model input, and each output of a layer left in float that feeds a quantized one, gets a
  `QuantizeInput`.
- Concatenations: see `layers.concat` (inputs whose producer feeds only the concat share its grid).
- Layers it cannot quantize stay float and are listed in the report, with how to quantize them;
  `tfquant.keras.register_quantize_config` teaches it a layer.

Every tensor that will be int8 on device passes through exactly one FakeQuant. Weights of the
original model are copied; the original model is not modified.
"""
from __future__ import annotations

import warnings

import keras

from tfquant.keras.builder import Builder
from tfquant.keras.config import QATConfig
from tfquant.keras.errors import AlreadyQuantizedError, ModelTypeError
from tfquant.keras.layer_graph import LayerGraph, is_graph_model
from tfquant.keras.layers import QuantLayer
from tfquant.keras.planner import HOW_TO_REGISTER, Planner
from tfquant.keras.registry import is_passthrough
from tfquant.keras.report import LayerReport, QuantizationReport

L = keras.layers


def _check_model(model) -> None:
    module = type(model).__module__
    if module.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras")):
        raise ModelTypeError(
            f"{type(model).__name__} {getattr(model, 'name', '')!r} is a Keras 2 (tf_keras) model; "
            "tfquant.quantize_model takes Keras 3 models. Rebuild it with `import keras` (Keras 3).")
    if not isinstance(model, keras.Model):
        if isinstance(model, keras.layers.Layer):
            raise ModelTypeError(
                f"quantize_model takes a Keras Model, got the layer {model.name!r} "
                f"({type(model).__name__}): wrap it in a Functional model "
                "(keras.Model(inputs, layer(inputs))).")
        raise ModelTypeError(
            f"quantize_model takes a Keras 3 Functional or Sequential model, got {type(model).__name__}. "
            "(A SavedModel or tf.function goes through tfquant's PTQ instead.)")
    if not is_graph_model(model):
        raise ModelTypeError(
            f"Model {model.name!r} ({type(model).__name__}) is a subclassed model: it defines `call` in "
            "Python, so there is no layer graph to rewrite. Build it with the Functional API "
            "(keras.Model(inputs, outputs)) or as a keras.Sequential, then quantize that; you can "
            "copy the weights over with set_weights.")


def quantize_model(model, config=None) -> keras.Model:
    """A trainable Keras 3 model simulating `model`'s TFLite int8 form (see the module docstring).

    Args:
      model: a Keras 3 Functional or Sequential model (nested graph models are flattened).
      config: a `QATConfig` (or a dict of its fields): bits, BN folding, learned ranges, ...

    Returns a new Functional model; `tfquant.keras.quantization_report(qmodel)` says what became of
    each layer. Activation ranges start uninitialized: train it (the first batch initializes
    them) or run `tfquant.keras.calibrate(qmodel, data)` first.

    Raises `ModelTypeError` (subclassed / unbuilt / non-Keras-3 models), `AlreadyQuantizedError`
    and `tfquant.errors.SpecError` (bits outside what TFLite runs, e.g. 0 or 17).
    """
    config = QATConfig.coerce(config)
    _check_model(model)
    graph = LayerGraph(model)
    quantized = [op.path for op in graph.ops if isinstance(op.layer, QuantLayer)]
    if quantized:
        raise AlreadyQuantizedError(
            f"Model {model.name!r} is already quantized (it holds tfquant layers: {', '.join(quantized[:5])}"
            f"{', ...' if len(quantized) > 5 else ''}). Quantize the float model, or keep training this one.")
    planner = Planner(graph, config)
    planner.plan()
    qmodel = Builder(graph, planner, config).build(model.name)
    report = QuantizationReport([planner.reports[k] for k in sorted(planner.reports)])
    qmodel._tfquant_report = report
    if report.float_layers:
        warnings.warn("tfquant.quantize_model left these layers in float (see "
                      "tfquant.keras.quantization_report(qmodel)):\n" +
                      "\n".join(f"  {r.name} ({r.class_name}): {r.reason} To quantize it: {r.how_to}"
                                for r in report.float_layers), stacklevel=2)
    return qmodel


def quantization_report(qmodel: keras.Model) -> QuantizationReport:
    """What `quantize_model` did to each layer. For a model loaded from a file (the report is not
    saved), a report is rebuilt from the model's layers: tfquant layers are "quantized", the
    others "pass-through" or "float"."""
    report = getattr(qmodel, "_tfquant_report", None)
    if report is not None:
        return report
    rows = []
    for layer in qmodel.layers:
        if isinstance(layer, L.InputLayer):
            continue
        if isinstance(layer, QuantLayer):
            rows.append(LayerReport(layer.name, type(layer).__name__, "quantized", layer.name))
        elif is_passthrough(layer):
            rows.append(LayerReport(layer.name, type(layer).__name__, "pass-through"))
        else:
            rows.append(LayerReport(layer.name, type(layer).__name__, "float", reason="Not a tfquant layer.",
                                    how_to=HOW_TO_REGISTER))
    return QuantizationReport(rows)
