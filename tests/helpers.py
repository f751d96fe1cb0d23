"""Small graph builders shared by the tests."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

import tfquant
from tfquant.core import QuantSpec, fake_quant


def one_fake_quant_activation(rmin: float, rmax: float, spec: QuantSpec, width: int = 4) -> bytes:
    """Flatbuffer of x -> FakeQuant(spec, [rmin, rmax]) -> *2 -> FakeQuant: the first
    FakeQuant's parameters become those of the QUANTIZE op's output."""

    @tf.function(input_signature=[tf.TensorSpec([1, width], tf.float32)])
    def f(x):
        y = fake_quant(x, rmin, rmax, spec)
        return fake_quant(y * 2.0, 2 * min(rmin, 0.0) - 1.0, 2 * max(rmax, 0.0) + 1.0,
                          QuantSpec.activation())

    return tfquant.to_tflite(f)


def one_conv(kernel: np.ndarray, rmin, rmax, spec: QuantSpec) -> bytes:
    """Flatbuffer of a 1x1 conv whose kernel [1, 1, Cin, Cout] is fake-quantized per channel."""
    cin = kernel.shape[2]

    @tf.function(input_signature=[tf.TensorSpec([1, 2, 2, cin], tf.float32)])
    def f(x):
        x = fake_quant(x, -1.0, 1.0, QuantSpec.activation())
        y = tf.nn.conv2d(x, fake_quant(tf.constant(kernel), rmin, rmax, spec), 1, "SAME")
        return fake_quant(y, -10.0, 10.0, QuantSpec.activation())

    return tfquant.to_tflite(f)
