"""`QuantMultiply`: MUL of two quantized tensors onto its own output grid (TFLite's MUL chooses its
output scale). No exact emulation of MUL's requantization yet: the fake-quant path is used in
both simulation modes."""
from __future__ import annotations

import keras
from keras.src.ops.operation_utils import broadcast_shapes

from tfquant.errors import SpecError
from tfquant.keras.layers.base import QuantLayer
from tfquant.keras.quantizers import ActivationQuantizer, deserialize, serialize


@keras.saving.register_keras_serializable(package="tfquant")
class QuantMultiply(QuantLayer):
    adoptable = True

    def __init__(self, activation_quantizer=None, shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()

    def build(self, input_shape):
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def compute_output_shape(self, input_shape):
        return tuple(broadcast_shapes(input_shape[0], input_shape[1]))

    def call(self, inputs, training=None):
        if len(inputs) != 2:
            raise SpecError(f"{self.name}: QuantMultiply takes exactly two inputs, got {len(inputs)}.")
        return self._quantize_output(inputs[0] * inputs[1], training)

    def get_config(self):
        config = super().get_config()
        config["activation_quantizer"] = serialize(self.activation_quantizer)
        return config
