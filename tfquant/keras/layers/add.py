"""`QuantAdd`: ADD (optionally with a fused ReLU / ReLU6) and SUB of two quantized tensors, each
input on its own grid, the output on its own (TFLite's ADD / SUB choose their output scale).

In the "exact" mode ADD uses `tfquant.core.quantized_add` (TFLite's fixed-point rescaling); SUB has
no exact emulation yet and runs the fake-quant path."""
from __future__ import annotations

from typing import Optional

import keras
from keras.src.ops.operation_utils import broadcast_shapes

from tfquant.core import quantized_add
from tfquant.core.op_rules import FUSED_ACTIVATIONS, apply_fused_activation
from tfquant.errors import SpecError
from tfquant.keras.layers.base import QuantLayer
from tfquant.keras.quantizers import ActivationQuantizer, deserialize, serialize

OPS = ("add", "subtract")


@keras.saving.register_keras_serializable(package="tfquant")
class QuantAdd(QuantLayer):
    adoptable = True

    def __init__(self, op: str = "add", activation: Optional[str] = None, activation_quantizer=None,
                 shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        if op not in OPS:
            raise SpecError(f"QuantAdd op must be one of {OPS}, got {op!r}.")
        if activation not in FUSED_ACTIVATIONS:
            raise SpecError(f"QuantAdd fuses only ReLU / ReLU6, got {activation!r}.")
        self.op = op
        self.activation = activation
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()

    def build(self, input_shape):
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def compute_output_shape(self, input_shape):
        return tuple(broadcast_shapes(input_shape[0], input_shape[1]))

    def call(self, inputs, training=None):
        if len(inputs) != 2:
            raise SpecError(f"{self.name}: QuantAdd takes exactly two inputs, got {len(inputs)}.")
        a, b = inputs
        y = apply_fused_activation(self.activation, a + b if self.op == "add" else a - b)

        def exact(output_range):
            return quantized_add(a, b, a_range=self.input_range(0), b_range=self.input_range(1),
                                 output_range=output_range, activation=self.activation)
        return self._quantize_output(y, training, exact=exact if self.op == "add" else None)

    def get_config(self):
        config = super().get_config()
        config.update({"op": self.op, "activation": self.activation,
                       "activation_quantizer": serialize(self.activation_quantizer)})
        return config
