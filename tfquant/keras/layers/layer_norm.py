"""`QuantLayerNorm`: Keras' LayerNormalization (last axis) as the int8 TFLite ops the converter
makes of it (`core.op_rules.LAYER_NORM_STEPS`: MEAN, SQUARED_DIFFERENCE, MEAN, ADD epsilon, RSQRT,
MUL gamma, NEG (float in both tools), MUL, ADD beta, MUL, ADD), every step's output on a grid of
its own, as PTQ quantizes the same ops. Exact mode: `core.quantized_layer_norm`'s reference kernels.

    y = QuantLayerNorm(layer=keras.layers.LayerNormalization(epsilon=1e-6))(x)
"""
from __future__ import annotations

from typing import Optional

import keras

from tfquant.core import LAYER_NORM_STEPS, quantized_layer_norm
from tfquant.errors import SpecError
from tfquant.keras.layers.base import QuantLayer, is_exact
from tfquant.keras.quantizers import ActivationQuantizer, deserialize, serialize

L = keras.layers
STEPS = tuple(name for name, _, _ in LAYER_NORM_STEPS if name != "output")   # the layer's own grid: "output"


def layer_norm_problem(layer) -> Optional[str]:
    """Why a LayerNormalization cannot be `QuantLayerNorm`, or None."""
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    if axis is None or axis not in (-1, len(layer.input.shape) - 1):
        return "LayerNormalization over axes other than the last alone."
    if getattr(layer, "rms_scaling", False):
        return "LayerNormalization with rms_scaling."
    return None


@keras.saving.register_keras_serializable(package="tfquant")
class QuantLayerNorm(QuantLayer):
    def __init__(self, layer, activation_quantizer=None, **kwargs):
        kwargs.pop("shared_output", None)
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.layers.deserialize(layer)
        if not isinstance(layer, L.LayerNormalization):
            raise SpecError(f"QuantLayerNorm wraps a LayerNormalization, got {type(layer).__name__}.")
        self.layer = layer
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()
        self.step_quantizers: dict = {}

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        for name in STEPS:
            q = ActivationQuantizer.from_config(self.activation_quantizer.get_config())
            q.build(self, name)
            self.step_quantizers[name] = q
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def quantizers(self) -> dict:
        return {**super().quantizers(), **self.step_quantizers}

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, training=None):
        la = self.layer
        gamma = la.gamma if la.scale else None
        beta = la.beta if la.center else None
        quantizers = {**self.step_quantizers, "output": self.quantizer}
        if is_exact(bool(training)):
            return quantized_layer_norm(x, gamma, beta, float(la.epsilon), input_range=self.input_range(0),
                                        ranges={n: q.range() for n, q in quantizers.items()})
        return quantized_layer_norm(x, gamma, beta, float(la.epsilon), input_range=None, ranges={},
                                    quantize=lambda name, v: quantizers[name](v, training=bool(training)))

    def get_config(self):
        config = super().get_config()
        config.pop("shared_output", None)
        config.update({"layer": keras.layers.serialize(self.layer),
                       "activation_quantizer": serialize(self.activation_quantizer)})
        return config
