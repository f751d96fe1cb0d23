"""`QuantConcatenate`: CONCATENATION with one grid for its inputs and output, as TFLite requires.

The concat owns the range. Inputs whose producer feeds only this concat (through pass-through
layers) are `shared`: their producer (built with `shared_output=True`) skips its own quantizer,
and the concat fake-quantizes the concatenation — so the moving-average range sees the float
values of every input, and on device each producer writes straight onto the concat's grid (no
requantize op). Other inputs keep their own grid; the converter inserts a requantizing QUANTIZE
(int8 to int8) for them, which the exact simulation emulates (`core.quantized_concat`).
"""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from tfquant.core.quantized_ops import quantized_concat
from tfquant.keras.errors import WiringError
from tfquant.keras.layers.base import QuantLayer, _Ref, producer_of
from tfquant.keras.quantizers import ActivationQuantizer, deserialize, serialize


@keras.saving.register_keras_serializable(package="tfquant")
class QuantConcatenate(QuantLayer):
    adoptable = True

    def __init__(self, axis: int = -1, shared_inputs: Sequence[bool] = (), activation_quantizer=None,
                 shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        self.axis = int(axis)
        self.shared_inputs = [bool(s) for s in shared_inputs]
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()

    def _on_wire(self, flat_inputs) -> None:
        for i, tensor in enumerate(flat_inputs):
            if i < len(self.shared_inputs) and self.shared_inputs[i]:
                src = producer_of(tensor)
                if src is None or not src.layer.shared_output:
                    raise WiringError(
                        f"{self.name}: input {i} is marked shared but its producer "
                        f"{getattr(src, 'layer', None)!r} is not a tfquant layer built with shared_output=True.")
                src.layer._owner = _Ref(self)

    def build(self, input_shape):
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def compute_output_shape(self, input_shape):
        shapes = [list(s) for s in input_shape]
        out = shapes[0]
        axis = self.axis % len(out)
        sizes = [s[axis] for s in shapes]
        out[axis] = None if any(v is None for v in sizes) else sum(sizes)
        return tuple(out)

    def call(self, inputs, training=None):
        inputs = list(inputs)

        def exact(output_range):
            ranges = [None if self.input_quantizer(i) is None else self.input_range(i) for i in range(len(inputs))]
            return quantized_concat(inputs, self.axis, input_ranges=ranges, output_range=output_range)

        return self._quantize_output(tf.concat(inputs, axis=self.axis), training, exact=exact)

    def get_config(self):
        config = super().get_config()
        config.update({"axis": self.axis, "shared_inputs": self.shared_inputs,
                       "activation_quantizer": serialize(self.activation_quantizer)})
        return config
