"""`QuantActivation`: a standalone activation quantized as its own TFLite op.

ReLU / ReLU6 right after a Conv / Dense / Add are fused into that layer instead (the converter
fuses them); this layer is for the others. Softmax and logistic outputs use TFLite's fixed grid
(scale 1/256, zero point -128), tanh (1/128, 0); the rest get a moving-average range.
SiLU (swish) is LOGISTIC then MUL on device: its sigmoid is put on the logistic grid first.
Hard SiLU (hard-swish) is, by `params["lowering"]` (`core.op_rules.HARD_SWISH_LOWERINGS`), either
ADD of 3 with RELU6, MUL by 1/6 and MUL by x, the first two onto grids of their own ("gate",
"gate_scaled"), or the converter's one HARD_SWISH op.

Lookup-table ops (`tfquant.core.op_rules.LOOKUP_TABLE_OPS`: GELU, exponential, ...) are
quantized from their entry alone: its TF function, its own output grid, its exact kernel.

Exact mode: softmax uses `tfquant.core.quantized_softmax` (TFLite's gemmlowp arithmetic),
LeakyReLU `quantized_leaky_relu` (two requantization multipliers), sigmoid `quantized_logistic`
(LOGISTIC's table), SiLU `quantized_logistic` then `quantized_mul`, hard SiLU `quantized_add`
and two `quantized_mul` (decomposed) or `quantized_hard_swish` (HARD_SWISH's int16 fixed point),
and the lookup-table ops
`quantized_lookup_table`; the other activations have no integer emulation yet and run the
fake-quant path (TFLite evaluates them with fixed-point polynomials, which can differ from the
rounded float by one LSB).
"""
from __future__ import annotations

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from tfquant.core import (
    DEFAULT_HARD_SWISH_LOWERING,
    FIXED_OUTPUT_RANGES,
    HARD_SWISH_LOWERINGS,
    HARD_SWISH_OFFSET,
    HARD_SWISH_SCALE,
    HARD_SWISH_TFLITE_OP,
    LOGISTIC_RANGE,
    LOOKUP_TABLE_OPS,
    QuantSpec,
    fake_quant,
    hard_swish,
    lookup_table_op,
    quantized_add,
    quantized_constant,
    quantized_hard_swish,
    quantized_leaky_relu,
    quantized_logistic,
    quantized_lookup_table,
    quantized_mul,
    quantized_softmax,
)
from tfquant.errors import SpecError
from tfquant.keras.layers.base import QuantLayer, is_exact
from tfquant.keras.quantizers import (
    ActivationQuantizer,
    FixedQuantizer,
    bypassed,
    calibrating,
    deserialize,
    serialize,
)

ACT = QuantSpec.activation()
FIXED_RANGE = FIXED_OUTPUT_RANGES   # activation -> TFLite's fixed output grid (core.op_rules)
BUILTIN = ("relu", "relu6", "leaky_relu", "sigmoid", "tanh", "softmax", "silu", "hard_silu")


def supported_activations() -> tuple[str, ...]:
    """The activations QuantActivation quantizes: its own, and the Keras names of every
    lookup-table op in `tfquant.core.op_rules.LOOKUP_TABLE_OPS`."""
    return BUILTIN + tuple(n for op in LOOKUP_TABLE_OPS.values() for n in op.keras_activations)


_FN = {
    "relu": tf.nn.relu,
    "relu6": lambda x: tf.nn.relu6(x),
    "leaky_relu": lambda x, negative_slope=0.3: tf.nn.leaky_relu(x, alpha=negative_slope),
    "sigmoid": tf.sigmoid,
    "tanh": tf.tanh,
}


@keras.saving.register_keras_serializable(package="tfquant")
class QuantActivation(QuantLayer):
    """A standalone activation on its own output grid.

    Args:
      activation: one of `supported_activations()`.
      params: keyword arguments of the activation (LeakyReLU's negative_slope).
    """

    def __init__(self, activation: str, params: Optional[dict] = None, activation_quantizer=None,
                 shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        if activation not in supported_activations():
            raise SpecError(f"QuantActivation supports {supported_activations()}, got {activation!r}.")
        self.activation = activation
        self.params = dict(params or {})
        if activation == "hard_silu":
            self.params.setdefault("lowering", DEFAULT_HARD_SWISH_LOWERING)
            if self.params["lowering"] not in HARD_SWISH_LOWERINGS:
                raise SpecError(f"hard_silu's lowering must be one of {HARD_SWISH_LOWERINGS}, got "
                                f"{self.params['lowering']!r}.")
        self.gate_quantizers: dict = {}
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()
        if self.shared_output and activation in FIXED_RANGE:
            raise SpecError(f"{activation} has TFLite's fixed output grid: it cannot share a concat's grid.")

    @property
    def adoptable(self) -> bool:
        return self.activation not in FIXED_RANGE

    def build(self, input_shape):
        if self.activation in FIXED_RANGE:
            self._build_output_quantizer(FixedQuantizer(*FIXED_RANGE[self.activation]))
        else:
            self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))
        if self.decomposed_hard_swish:
            for name in ("gate", "gate_scaled"):        # relu6(x + 3), relu6(x + 3) * (1 / 6)
                q = ActivationQuantizer.from_config(self.activation_quantizer.get_config())
                q.build(self, name)
                self.gate_quantizers[name] = q

    @property
    def decomposed_hard_swish(self) -> bool:
        return self.activation == "hard_silu" and self.params["lowering"] != HARD_SWISH_TFLITE_OP

    def compute_output_shape(self, input_shape):
        return input_shape

    def quantizers(self) -> dict:
        return {} if self.activation in FIXED_RANGE else {**super().quantizers(), **self.gate_quantizers}

    def call(self, x, training=None):
        training = bool(training)
        if self.activation == "softmax":
            if calibrating() or bypassed(getattr(self.quantizer, "name", None)):
                return tf.nn.softmax(x)
            return quantized_softmax(x, input_range=self.input_range(0) if is_exact(training) else None)
        table_op = lookup_table_op(keras_activation=self.activation)
        if table_op is not None:
            def exact(output_range):
                return quantized_lookup_table(x, table_op, input_range=self.input_range(0), output_range=output_range)
            return self._quantize_output(table_op.tf_fn(x), training, exact=exact)
        if self.activation == "sigmoid":
            def exact(output_range):
                return quantized_logistic(x, input_range=self.input_range(0))
            return self._quantize_output(tf.sigmoid(x), training, exact=exact)
        if self.activation == "silu":
            s = tf.sigmoid(x)
            if not calibrating() and not bypassed(getattr(self.quantizer, "name", None)):
                s = fake_quant(s, *LOGISTIC_RANGE, ACT)     # LOGISTIC's output grid

            def exact(output_range):
                sig = quantized_logistic(x, input_range=self.input_range(0))
                return quantized_mul(x, sig, a_range=self.input_range(0), b_range=LOGISTIC_RANGE,
                                     output_range=output_range)
            return self._quantize_output(x * s, training, exact=exact)
        if self.activation == "hard_silu":
            return self._hard_swish(x, training)
        y = _FN[self.activation](x, **self.params)
        if self.activation == "leaky_relu":
            alpha = float(self.params.get("negative_slope", 0.3))

            def exact(output_range):
                return quantized_leaky_relu(x, alpha, input_range=self.input_range(0), output_range=output_range)
            return self._quantize_output(y, training, exact=exact)
        return self._quantize_output(y, training)

    def _hard_swish(self, x, training: bool):
        if not self.decomposed_hard_swish:
            def exact(output_range):
                return quantized_hard_swish(x, input_range=self.input_range(0), output_range=output_range)
            return self._quantize_output(hard_swish(x), training, exact=exact)
        three, three_range = quantized_constant(np.float32(HARD_SWISH_OFFSET))
        sixth, sixth_range = quantized_constant(np.float32(HARD_SWISH_SCALE))
        gate_q, scaled_q = self.gate_quantizers["gate"], self.gate_quantizers["gate_scaled"]
        gate = gate_q(tf.nn.relu6(x + three), training=training)              # ADD + RELU6
        scaled = scaled_q(gate * sixth, training=training)                     # MUL by 1 / 6

        def exact(output_range):
            g = quantized_add(x, three, a_range=self.input_range(0), b_range=three_range,
                              output_range=gate_q.range(), activation="relu6")
            g = quantized_mul(g, sixth, a_range=gate_q.range(), b_range=sixth_range, output_range=scaled_q.range())
            return quantized_mul(x, g, a_range=self.input_range(0), b_range=scaled_q.range(), output_range=output_range)
        return self._quantize_output(x * scaled, training, exact=exact)          # MUL by x

    def get_config(self):
        config = super().get_config()
        config.update({"activation": self.activation, "params": self.params,
                       "activation_quantizer": serialize(self.activation_quantizer)})
        return config
