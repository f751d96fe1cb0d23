"""A hand-built FakeQuant model exercising the export contract, independent of QAT and PTQ.

conv 3x3 with BN folded + ReLU6 -> depthwise 3x3 + ReLU -> 1x1 conv -> residual add ->
concat with a 1x1 branch (one shared quantizer) -> average pool -> mean -> dense -> softmax,
every activation range calibrated with `MinMaxRange` on random data, every op from
`tfquant.core`'s quantized ops.

    python -m testdata.handbuilt_model --output out/handbuilt.tflite

builds it, exports it, prints `inspect` and `verify`. `model.__call__` is the fake-quant graph
(what the converter reads); `model.exact` the bit-exact simulation (what `verify` compares).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfquant.core.bn_folding import bn_affine, fold_affine
from tfquant.core import (
    MinMaxRange,
    QuantSpec,
    quantized_add,
    quantized_avg_pool,
    quantized_input,
    quantized_linear,
    quantized_mean,
    quantized_softmax,
    simulation_mode,
)

ACT = QuantSpec.activation()
INPUT_SHAPE = (16, 16, 3)
SIGNATURE = [tf.TensorSpec([None, *INPUT_SHAPE], tf.float32)]


def conv(x, w):
    return tf.nn.conv2d(x, w, 1, "SAME")


def depthwise(x, w):
    return tf.nn.depthwise_conv2d(x, w, [1, 1, 1, 1], "SAME")


def _fold_bn(kernel, gamma, beta, mean, var, eps=1e-3):
    kernel, bias = fold_affine(kernel, None, *bn_affine(gamma, beta, mean, var, eps))
    return kernel.astype(np.float32), bias.astype(np.float32)


class HandBuiltModel(tf.Module):
    """The model; `calibrate(x)` sets every activation range, then the simulations run."""

    def __init__(self, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)

        def w(*shape, s=0.3):
            return (rng.standard_normal(shape) * s).astype(np.float32)

        conv_w, conv_b = _fold_bn(w(3, 3, 3, 8), rng.uniform(0.5, 2.0, 8), w(8, s=0.2),
                                  w(8, s=0.1), rng.uniform(0.5, 1.5, 8))
        self.conv_w, self.conv_b = tf.constant(conv_w), tf.constant(conv_b)
        self.dw_w, self.dw_b = tf.constant(w(3, 3, 8, 1, s=0.5)), tf.constant(w(8, s=0.1))
        self.pw_w, self.pw_b = tf.constant(w(1, 1, 8, 8, s=0.4)), tf.constant(w(8, s=0.1))
        self.br_w, self.br_b = tf.constant(w(1, 1, 8, 4, s=0.4)), tf.constant(w(4, s=0.1))
        self.fc_w, self.fc_b = tf.constant(w(12, 10, s=0.5)), tf.constant(w(10, s=0.1))
        self.ranges: dict[str, tuple[float, float]] = {}
        self.__call__ = tf.function(self._fake_quant, input_signature=SIGNATURE)
        self.exact = tf.function(self._exact, input_signature=SIGNATURE)

    def _fake_quant(self, x):
        with simulation_mode("fake_quant"):
            return self.forward(x)

    def _exact(self, x):
        with simulation_mode("exact"):
            return self.forward(x)

    def forward(self, x):
        r = self.ranges
        x = quantized_input(x, input_range=r["input"])
        y = quantized_linear(conv, x, self.conv_w, self.conv_b, input_range=r["input"],
                             output_range=r["conv"], activation="relu6")
        d = quantized_linear(depthwise, y, self.dw_w, self.dw_b, input_range=r["conv"],
                             output_range=r["dw"], activation="relu", depthwise=True)
        p = quantized_linear(conv, d, self.pw_w, self.pw_b, input_range=r["dw"], output_range=r["pw"])
        # The residual add and the 1x1 branch write straight onto the concat's grid (one
        # quantizer for the concat's inputs and output, as TFLite requires).
        s = quantized_add(p, y, a_range=r["pw"], b_range=r["conv"], output_range=r["concat"])
        b = quantized_linear(conv, s, self.br_w, self.br_b, input_range=r["concat"], output_range=r["concat"])
        c = tf.concat([s, b], axis=-1)
        g = quantized_avg_pool(c, (2, 2), (2, 2), "VALID", input_range=r["concat"])
        g = quantized_mean(g, [1, 2], input_range=r["concat"], output_range=r["mean"])
        logits = quantized_linear(tf.matmul, g, self.fc_w, self.fc_b, input_range=r["mean"],
                                  output_range=r["logits"], kernel_spec=QuantSpec.weight(per_channel=False),
                                  fully_connected=True)
        return quantized_softmax(logits, input_range=r["logits"])

    def calibrate(self, x: np.ndarray) -> None:
        """Min-max ranges of every activation, from a float pass."""
        est: dict[str, MinMaxRange] = {}

        def see(name, v):
            est.setdefault(name, MinMaxRange(ACT)).update(v.numpy())
            return v

        x = see("input", tf.constant(x, tf.float32))
        y = see("conv", tf.nn.relu6(conv(x, self.conv_w) + self.conv_b))
        d = see("dw", tf.nn.relu(depthwise(y, self.dw_w) + self.dw_b))
        p = see("pw", conv(d, self.pw_w) + self.pw_b)
        s = see("concat", p + y)
        b = see("concat", conv(s, self.br_w) + self.br_b)
        g = tf.reduce_mean(tf.nn.avg_pool2d(tf.concat([s, b], -1), 2, 2, "VALID"), [1, 2])
        g = see("mean", g)
        see("logits", tf.matmul(g, self.fc_w) + self.fc_b)
        self.ranges = {k: tuple(float(v) for v in e.range()) for k, e in est.items()}


def sample_inputs(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (n, *INPUT_SHAPE)).astype(np.float32)


def build(seed: int = 0, calibration_samples: int = 64) -> HandBuiltModel:
    model = HandBuiltModel(seed)
    model.calibrate(sample_inputs(calibration_samples, seed=seed + 100))
    return model


def main(argv=None):
    import argparse

    import tfquant

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="out/handbuilt.tflite")
    args = parser.parse_args(argv)
    model = build()
    tfquant.to_tflite(model.__call__, args.output)
    print(tfquant.inspect(args.output).table())
    tfquant.verify(args.output, model.exact, sample_inputs(256), print_table=True)


if __name__ == "__main__":
    main()
