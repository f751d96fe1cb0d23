"""`QuantizeInput`: a float tensor onto its int8 grid — the model's inputs (TFLite's QUANTIZE at the
model's edge) and the outputs of layers left in float that feed quantized ones."""
from __future__ import annotations

import keras

from tfquant.core import quantized_input
from tfquant.keras.layers.base import QuantLayer, is_exact
from tfquant.keras.quantizers import ActivationQuantizer, calibrating, deserialize, serialize


@keras.saving.register_keras_serializable(package="tfquant")
class QuantizeInput(QuantLayer):
    """Fake-quantizes a float tensor with a moving-average (or learned) range."""

    adoptable = True

    def __init__(self, activation_quantizer=None, shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()

    def build(self, input_shape):
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x, training=None):
        training = bool(training)
        if is_exact(training) and not calibrating():
            return quantized_input(x, input_range=self.output_quantizer().range())
        return self._quantize_output(x, training)

    def get_config(self):
        config = super().get_config()
        config["activation_quantizer"] = serialize(self.activation_quantizer)
        return config
