"""`QuantConv`: Conv1D / Conv2D / DepthwiseConv2D / SeparableConv2D / Conv2DTranspose / Dense, each
optionally followed by a folded BatchNormalization and a fused ReLU / ReLU6, as one quantized op.

    y = Q_out( act( op(x, Q_w(w_fold)) + Q_b(b_fold) ) )

- BN is folded *before* the weights are fake-quantized (see `bn_folding`), so training sees the
  weights the device runs and the flatbuffer has no MUL / ADD left for BN.
- Weights: last-value symmetric range, per output channel (conv: the converter writes axis 0;
  depthwise: `fake_quant_depthwise_kernel`, axis 3); Dense and Conv2DTranspose per tensor (the
  converter cannot carry a per-channel FakeQuant through the transposes it inserts for them).
  Under 8 bits, depthwise and transposed-conv weights stay 8-bit (see EIGHT_BIT_KINDS).
- The bias is rounded to TFLite's int32 grid, scale = input scale * weight scale, with the input
  scale of the quantizer that produced this layer's input (`QuantLayer.input_range`).
- ReLU / ReLU6 are fused into the output range (the converter fuses them into the op).
- A Conv2D with groups (ConvNeXt's 7x7 per-channel conv) is one grouped CONV_2D, its kernel
  [H, W, C / groups, M] per output channel like any conv's.
- SeparableConv2D is two int8 ops on device (depthwise, then 1x1 conv): its intermediate tensor
  has its own quantizer (`mid`); BN folds into the pointwise conv.
- Conv1D is computed as a 2-D conv on [N, 1, L, C] with its kernel expanded to [1, K, Cin, Cout]
  before the per-channel FakeQuant (the converter cannot move a per-channel axis through the
  reshape it would otherwise insert).

In the "exact" simulation mode (evaluation), the layer calls `tfquant.core.quantized_linear`,
which reproduces TFLite's integer requantization bit for bit.
"""
from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from tfquant.core import (
    QuantSpec,
    fake_quant_bias,
    fake_quant_depthwise_kernel,
    fake_quant_kernel,
    kernel_range,
    quant_params,
    quant_scale,
    quantized_linear,
)
from tfquant.core.op_rules import FUSED_ACTIVATIONS, linear_forward, linear_pre_activation
from tfquant.errors import SpecError
from tfquant.keras.distribute import global_moments
from tfquant.keras.layers import bn_folding
from tfquant.keras.layers.base import QuantLayer, is_exact
from tfquant.keras.quantizers import (
    ActivationQuantizer,
    WeightQuantizer,
    bypassed,
    calibrating,
    deserialize,
    serialize,
)

L = keras.layers
ACT = QuantSpec.activation()

KINDS = {
    L.Conv1D: "conv1d",
    L.Conv2D: "conv2d",
    L.DepthwiseConv2D: "depthwise",
    L.SeparableConv2D: "separable",
    L.Conv2DTranspose: "transpose",
    L.Dense: "dense",
}
# Weight layouts the converter can only carry per tensor.
PER_TENSOR_KINDS = ("dense", "transpose")
# Kernels that keep 8-bit weights when fewer bits are asked for: LiteRT has no int4
# DEPTHWISE_CONV_2D kernel (the interpreter refuses the model). Their weights are few; CONV_2D and
# FULLY_CONNECTED take 4..8 bits. (A model with low-bit weights cannot hold a TRANSPOSE_CONV at all:
# the converter's low-bit QAT mode rejects it, even in float; quantize_model warns.)
EIGHT_BIT_KINDS = ("depthwise", "transpose")


def _layer(obj):
    if obj is None or isinstance(obj, keras.layers.Layer):
        return obj
    return keras.layers.deserialize(obj)


def _t(v):
    return None if v is None else tf.convert_to_tensor(v)


def _conv2d(x, k, strides, padding, dilations):
    """One Conv2D op (what the converter turns into one CONV_2D, dilated or not). TF's CPU kernels
    have no gradient of a dilated Conv2D, so a dilated one takes its gradient from the
    space-to-batch form of `tf.nn.convolution` (the same function, differentiable on CPU)."""
    if all(d == 1 for d in dilations):
        return tf.nn.conv2d(x, k, strides, padding)

    @tf.custom_gradient
    def dilated(x, k):
        def grad(dy):
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                y = tf.nn.convolution(x, k, strides, padding, dilations=dilations)
            return tape.gradient(y, [x, k], output_gradients=dy)
        return tf.nn.conv2d(x, k, strides, padding, dilations=dilations), grad

    return dilated(x, k)


@keras.saving.register_keras_serializable(package="tfquant")
class QuantConv(QuantLayer):
    """A conv / dense layer with folded BN and fused activation, quantized for TFLite int8.

    Args:
      layer: the Keras Conv1D / Conv2D / DepthwiseConv2D / SeparableConv2D / Conv2DTranspose /
        Dense (its own `activation` is ignored: pass the fused one as `activation`).
      bn: a BatchNormalization over the layer's output channels, folded in; or None.
      activation: None, "relu" or "relu6" (fused into the output range).
      weight_quantizer, activation_quantizer: templates (each layer gets its own state).
      bn_folding: "static" (frozen BN statistics) or "batch_stats" (batch statistics with the
        sigma / sigma_B correction while training, see `bn_folding`).
      bn_freeze_steps: with "batch_stats", switch to the frozen statistics after this many
        training steps (None: never).
      shared_output: write the output on a downstream concatenation's grid (see QuantLayer).
    """

    adoptable = True

    def __init__(self, layer, bn=None, activation: Optional[str] = None,
                 weight_quantizer=None, activation_quantizer=None, bn_folding: str = "static",
                 bn_freeze_steps: Optional[int] = None, shared_output: bool = False, **kwargs):
        super().__init__(shared_output=shared_output, **kwargs)
        self.layer = _layer(layer)
        self.bn = _layer(bn)
        if type(self.layer) not in KINDS:
            raise SpecError(f"QuantConv cannot quantize a {type(self.layer).__name__}; it takes "
                            f"{', '.join(k.__name__ for k in KINDS)}.")
        self.kind = KINDS[type(self.layer)]
        if activation not in FUSED_ACTIVATIONS:
            raise SpecError(f"QuantConv fuses only {tuple(FUSED_ACTIVATIONS)} activations, got {activation!r}.")
        self.activation = activation
        self.weight_quantizer = deserialize(weight_quantizer) or WeightQuantizer()
        self.activation_quantizer = deserialize(activation_quantizer) or ActivationQuantizer()
        if bn_folding not in bn_folding_modes():
            raise SpecError(f"bn_folding must be one of {bn_folding_modes()}, got {bn_folding!r}.")
        self.bn_folding = bn_folding
        self.bn_freeze_steps = None if bn_freeze_steps is None else int(bn_freeze_steps)
        self.mid_quantizer = None
        self.bn_step = None

    # ---- structure ----------------------------------------------------------------------
    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        out_shape = self.layer.compute_output_shape(input_shape)
        if self.bn is not None and not self.bn.built:
            self.bn.build(out_shape)
        self._build_output_quantizer(ActivationQuantizer.from_config(self.activation_quantizer.get_config()))
        if self.kind == "separable":
            self.mid_quantizer = ActivationQuantizer.from_config(self.activation_quantizer.get_config())
            self.mid_quantizer.build(self, "mid")
        if self.bn is not None and self.bn_folding == "batch_stats":
            self.bn_step = self.add_weight(name="bn_step", shape=(), initializer="zeros", trainable=False,
                                           aggregation="only_first_replica")

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def quantizers(self) -> dict:
        q = super().quantizers()
        if self.mid_quantizer is not None:
            q["mid"] = self.mid_quantizer
        return q

    @property
    def weight_spec(self) -> QuantSpec:
        spec = self.weight_quantizer.spec(per_channel=self.kind not in PER_TENSOR_KINDS)
        return spec.replace(bits=8) if self.kind in EIGHT_BIT_KINDS else spec

    def _depthwise_spec(self) -> QuantSpec:
        """SeparableConv2D's depthwise stage: a DEPTHWISE_CONV_2D, hence 8-bit weights."""
        return self.weight_quantizer.spec().replace(bits=8)

    # ---- the float ops (x: the op's input; k: the prepared kernel) --------------------------
    def _op(self):
        layer, kind = self.layer, self.kind
        if kind == "conv2d":
            strides, dil, pad = list(layer.strides), list(layer.dilation_rate), layer.padding.upper()
            return lambda x, k: _conv2d(x, k, strides, pad, dil)
        if kind == "conv1d":
            size, stride, dil, pad = layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0], layer.padding

            def conv1d(x, k):
                padding = pad.upper()
                if pad == "causal":
                    x = tf.pad(x, [[0, 0], [dil * (size - 1), 0], [0, 0]])
                    padding = "VALID"
                y = _conv2d(tf.expand_dims(x, 1), k, [1, stride], padding, [1, dil])
                return tf.squeeze(y, 1)
            return conv1d
        if kind == "depthwise":
            return self._depthwise_op()
        if kind == "separable":
            return lambda x, k: tf.nn.conv2d(x, k, 1, "VALID")          # the pointwise stage
        if kind == "transpose":
            return lambda x, k: keras.ops.conv_transpose(
                x, k, strides=layer.strides, padding=layer.padding, output_padding=layer.output_padding,
                data_format="channels_last", dilation_rate=layer.dilation_rate)
        # dense
        return tf.matmul                # any rank: one FULLY_CONNECTED (keep_num_dims)

    def _depthwise_op(self):
        layer = self.layer
        strides, dil, pad = [1, *layer.strides, 1], list(layer.dilation_rate), layer.padding.upper()
        return lambda x, k: tf.nn.depthwise_conv2d(x, k, strides, pad, dilations=dil)

    def _raw_weights(self):
        """(kernel, bias) of the op BN folds into, before folding, in TF layout."""
        layer = self.layer
        kernel = layer.pointwise_kernel if self.kind == "separable" else layer.kernel
        bias = layer.bias if layer.use_bias else None
        return _t(kernel), _t(bias)

    def _prepare(self, kernel):
        return tf.expand_dims(kernel, 0) if self.kind == "conv1d" else kernel

    def folded_weights(self):
        """(kernel, bias) after static BN folding, kernel in the layout the op takes."""
        kernel, bias = self._raw_weights()
        if self.bn is not None:
            kernel, bias = bn_folding.static_fold(kernel, bias, self.bn, self.kind)
        return self._prepare(kernel), bias

    # ---- forward ----------------------------------------------------------------------------
    def call(self, x, training=None):
        training = bool(training)
        if calibrating() or bypassed(f"{self.name}/kernel"):     # weights in float (the debugger)
            return self._quantize_output(self._float_forward(x), training)
        in_range = self.input_range(0)
        if self.kind == "separable":
            x, in_range = self._depthwise_stage(x, in_range, training)
        op, spec = self._op(), self.weight_spec
        depthwise = self.kind == "depthwise"
        if self.bn is not None and self.bn_folding == "batch_stats" and training:
            y = self._batch_stats_forward(op, x, in_range, spec, depthwise)
            self.bn_step.assign_add(1.0)
            return self._quantize_output(y, training)
        kernel, bias = self.folded_weights()
        if is_exact(training):
            return quantized_linear(op, x, kernel, bias, input_range=in_range,
                                    output_range=self.output_quantizer().range(), kernel_spec=spec,
                                    activation=self.activation, depthwise=depthwise,
                                    fully_connected=self.kind == "dense")
        y = self._fake_forward(op, x, kernel, bias, in_range, spec, depthwise)
        return self._quantize_output(y, training)

    def _fake_forward(self, op, x, kernel, bias, in_range, spec, depthwise, correction=None):
        lo, hi = kernel_range(kernel, depthwise, spec.per_channel)
        bias_q = None if bias is None else fake_quant_bias(bias, quant_scale(*in_range, ACT), quant_scale(lo, hi, spec))
        return linear_forward(op, x, fake_quant_kernel(kernel, lo, hi, spec, depthwise), bias_q, self.activation,
                              correction)

    def _depthwise_stage(self, x, in_range, training):
        """SeparableConv2D's depthwise op onto its own (mid) grid."""
        op, spec = self._depthwise_op(), self._depthwise_spec()
        kernel = _t(self.layer.depthwise_kernel)
        if is_exact(training):
            mid = quantized_linear(op, x, kernel, None, input_range=in_range,
                                   output_range=self.mid_quantizer.range(), kernel_spec=spec, depthwise=True)
        else:
            lo, hi = kernel_range(kernel, True, spec.per_channel)
            mid = self.mid_quantizer(op(x, fake_quant_depthwise_kernel(kernel, lo, hi, spec)), training=training)
        return mid, self.mid_quantizer.range()

    def _float_forward(self, x):
        """The float computation (BN folded with its frozen statistics): used to calibrate."""
        if self.kind == "separable":
            x = self.mid_quantizer(self._depthwise_op()(x, _t(self.layer.depthwise_kernel)))
        kernel, bias = self.folded_weights()
        return linear_forward(self._op(), x, kernel, bias, self.activation)

    def _batch_stats_forward(self, op, x, in_range, spec, depthwise):
        kernel, bias = self._raw_weights()

        def batch_branch():
            raw = linear_pre_activation(op, x, self._prepare(kernel), bias)
            axes = list(range(raw.shape.rank - 1))
            mean_b, var_b = global_moments(raw, axes)
            k_fold, correction, b_fold = bn_folding.batch_fold(kernel, bias, self.bn, self.kind, mean_b, var_b)
            y = self._fake_forward(op, x, self._prepare(k_fold), b_fold, in_range, spec, depthwise,
                                   correction=correction)
            bn_folding.update_moving_stats(self.bn, tf.stop_gradient(mean_b), tf.stop_gradient(var_b))
            return y

        def static_branch():
            k_fold, b_fold = self.folded_weights()
            return self._fake_forward(op, x, k_fold, b_fold, in_range, spec, depthwise)

        if self.bn_freeze_steps is None:
            return batch_branch()
        return tf.cond(tf.convert_to_tensor(self.bn_step) < float(self.bn_freeze_steps), batch_branch, static_branch)

    # ---- what the device will hold ------------------------------------------------------------
    def quantized_weights(self) -> dict:
        """The simulation's weights as the flatbuffer should hold them (call eagerly).

        Returns {"kernel": fake-quantized folded kernel (TF layout, output channel last;
        depthwise [H, W, C, M]), "kernel_scale", "bias": folded float bias or None} and, for
        SeparableConv2D, "depthwise_kernel" / "depthwise_scale".
        """
        kernel, bias = self.folded_weights()
        spec, depthwise = self.weight_spec, self.kind == "depthwise"
        lo, hi = kernel_range(kernel, depthwise, spec.per_channel)
        q = fake_quant_kernel(kernel, lo, hi, spec, depthwise)
        out = {"kernel": q.numpy(), "kernel_scale": quant_params(lo, hi, spec).scale,
               "bias": None if bias is None else bias.numpy()}
        if self.kind == "separable":
            dk = _t(self.layer.depthwise_kernel)
            dspec = self._depthwise_spec()
            dlo, dhi = kernel_range(dk, True, dspec.per_channel)
            out["depthwise_kernel"] = fake_quant_depthwise_kernel(dk, dlo, dhi, dspec).numpy()
            out["depthwise_scale"] = quant_params(dlo, dhi, dspec).scale
        return out

    def get_config(self):
        config = super().get_config()
        config.update({
            "layer": keras.layers.serialize(self.layer),
            "bn": None if self.bn is None else keras.layers.serialize(self.bn),
            "activation": self.activation,
            "weight_quantizer": serialize(self.weight_quantizer),
            "activation_quantizer": serialize(self.activation_quantizer),
            "bn_folding": self.bn_folding,
            "bn_freeze_steps": self.bn_freeze_steps,
        })
        return config


def bn_folding_modes():
    return bn_folding.FOLDINGS
