"""`QuantMultiply`: MUL of two quantized tensors onto its own output grid (TFLite's MUL chooses its
output scale). Exact mode: `tfquant.core.quantized_mul` (MUL's int32 product and requantization)
when both inputs are on known grids."""
from __future__ import annotations

import keras
from keras.src.ops.operation_utils import broadcast_shapes

from tfquant.core import quantized_mul
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
        a, b = inputs

        def exact(output_range):
            return quantized_mul(a, b, a_range=self.input_range(0), b_range=self.input_range(1),
                                 output_range=output_range)
        on_grids = all(self.input_quantizer(i) is not None for i in (0, 1))
        return self._quantize_output(a * b, training, exact=exact if on_grids else None)

    def get_config(self):
        config = super().get_config()
        config["activation_quantizer"] = serialize(self.activation_quantizer)
        return config
