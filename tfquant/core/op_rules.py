"""TFLite's per-op int8 rules, as data that both QAT (`tfquant.keras`) and PTQ (`tfquant.graph`,
`tfquant.ptq`) read instead of restating them.

    >>> apply_fused_activation("relu6", y)          # what the converter fuses into CONV_2D / ADD
    >>> ACTIVATION_BOUNDS["relu6"]                  # (0.0, 6.0): the clamp of the fused activation
    >>> FIXED_OUTPUT_RANGES["softmax"]              # (0.0, 255 / 256): scale 1/256, zero point -128

- Fused activations: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED and ADD fold a following
  ReLU / ReLU6 into their output range (`FUSED_ACTIVATIONS`).
- Fixed output grids (quantization_spec.md): SOFTMAX and LOGISTIC (1/256, -128), TANH (1/128, 0).
- Shared grids: ops whose int8 output must keep their input's scale and zero point
  (`SAME_SCALE_TF_OPS`, by TensorFlow op name).
- Lookup-table ops (`LOOKUP_TABLE_OPS`): int8 kernels that tabulate a float function over the
  256 input values (EXP, GELU). One entry is all an op of this family needs: QAT quantizes its
  Keras activation, PTQ its TF op, and `core.quantized_lookup_table` is its exact kernel.
- Merged readers (`merged_readers`): several ReLU / ReLU6 of one tensor are one op on the
  device (the converter's common-subexpression elimination), on one grid; where they are all the
  tensor's readers, that op fuses into the producer. Both front ends merge them before fusing.
- Grid-setting readers (`GRID_SETTING_READERS`, `needs_own_fake_quant`): a same-scale op's
  output read by an average pool, or by a concat on another grid, and by other ops gets a
  FakeQuant of its own, or the converter gives the other readers another tensor.
- Per-channel affines (`AFFINE_TFLITE_OPS`): y = x * scale + offset that no linear op before it
  absorbs (a batch norm after an add, a concat or the input; Rescaling; Normalization; the scaled
  residual of InceptionResNetV2) is MUL by an int8 constant onto a grid of its own, then ADD of an
  int8 constant onto the output grid (with the fused ReLU / ReLU6), as the converter emits it. A
  constant operand is int8 per tensor, asymmetric, over its values and zero
  (`constant_operand_range`); an all-zero offset leaves the ADD out, a scale of one the MUL.
- Element-wise ops with grids of their own (`ELEMENTWISE_TF_TO_TFLITE`: SQUARED_DIFFERENCE,
  RSQRT), ops both tools keep float (`FLOAT_TF_TO_TFLITE`: NEG), and LayerNormalization's
  decomposition into them (`LAYER_NORM_STEPS`), which QAT builds and PTQ imports.
- Hard-swish x * relu6(x + 3) / 6 (`hard_swish`, what Keras' hard_silu traces to) has two
  int8 lowerings (`HARD_SWISH_LOWERINGS`, chosen by PTQConfig / QATConfig `hard_swish`):
  "HARD_SWISH", the one op the converter fuses the float pattern into (its output on a grid of
  its own; the reference kernel is int16 fixed point, `core.integer_kernels.hard_swish`), and
  "decomposed" (the default): ADD of 3 with the fused RELU6, MUL by 1/6, MUL by x, each onto a
  grid of its own. XNNPACK delegates the three int8 ops but not an int8 HARD_SWISH: on
  MobileNetV3Large (96x96, one thread) the decomposed flatbuffer runs in 1.13 ms against 2.06 ms
  (the converter's own PTQ: 2.07 ms), equally exact. Hard-sigmoid relu6(x + 3) / 6 has no TFLite op of its own:
  it is ADD of 3 with the fused RELU6 (into a linear op's bias when that op's output has no other
  reader) then MUL by the constant 1/6, both int8 (the affine rule above).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfquant.core.spec import QuantSpec

# name -> the float function the simulation applies before the output FakeQuant.
FUSED_ACTIVATIONS: dict[Optional[str], Callable] = {None: tf.identity, "relu": tf.nn.relu,
                                                    "relu6": tf.nn.relu6}
# name -> (low, high) clamp of the fused activation, in real values.
ACTIVATION_BOUNDS: dict[Optional[str], tuple[float, float]] = {
    None: (-np.inf, np.inf), "relu": (0.0, np.inf), "relu6": (0.0, 6.0)}

SOFTMAX_RANGE = (0.0, 255.0 / 256.0)    # SOFTMAX: scale 1/256, zero point -128
LOGISTIC_RANGE = (0.0, 255.0 / 256.0)   # LOGISTIC: scale 1/256, zero point -128
TANH_RANGE = (-1.0, 127.0 / 128.0)      # TANH: scale 1/128, zero point 0
FIXED_OUTPUT_RANGES: dict[str, tuple[float, float]] = {
    "softmax": SOFTMAX_RANGE, "sigmoid": LOGISTIC_RANGE, "tanh": TANH_RANGE}
# TensorFlow op -> the fixed grid of the TFLite op it becomes.
FIXED_RANGE_TF_OPS: dict[str, tuple[float, float]] = {
    "Softmax": SOFTMAX_RANGE, "Sigmoid": LOGISTIC_RANGE, "Tanh": TANH_RANGE}

def merged_readers(readers: Sequence[Optional[str]]) -> dict[int, int]:
    """The readers of one tensor that the converter merges, each reader given as the activation
    TFLite fuses that it is ("relu", "relu6"; None for any other op): reader index -> the index of
    the first reader of its kind, which it merges into. The converter's common-subexpression
    elimination makes identical ops on one tensor one op (and identical FakeQuant ranges one
    FakeQuant): NASNet's stem output, read by five ReLUs, is one RELU, fused into its conv. The
    simulation must have one op too, or it rounds the conv's output onto its own grid first."""
    first: dict[str, int] = {}
    merged: dict[int, int] = {}
    for i, act in enumerate(readers):
        if act is None or act not in FUSED_ACTIVATIONS:
            continue
        if act in first:
            merged[i] = first[act]
        else:
            first[act] = i
    return merged


# TFLite ops whose int8 output must keep its input's scale and zero point (TFLite's quantization
# spec: "inputs and outputs must all have the same scale / zero point"). QAT (Keras layers) and
# PTQ (TF ops, IR types) name the TFLite op each of theirs becomes; `keeps_input_grid` decides.
SAME_SCALE_OPS = frozenset({
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "STRIDED_SLICE", "SLICE", "SPACE_TO_DEPTH",
    "DEPTH_TO_SPACE", "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "MAX_POOL_2D", "AVERAGE_POOL_2D",
    "PAD", "PADV2", "GATHER", "TILE", "SPLIT", "SPLIT_V", "UNPACK", "PACK", "CONCATENATION",
    "REDUCE_MAX", "MAX_POOL_3D",
})
NO_OP = None    # a layer or TF op that leaves no op on the device (identity, dropout)


def keeps_input_grid(tflite_op: Optional[str]) -> bool:
    """Whether a tensor made by `tflite_op` (or by no op at all) stays on its input's grid."""
    return tflite_op is NO_OP or tflite_op in SAME_SCALE_OPS


# TF op -> the TFLite op the converter makes of it, for the ops that keep their input's grid.
SAME_SCALE_TF_TO_TFLITE: dict[str, Optional[str]] = {
    "Squeeze": "SQUEEZE", "ExpandDims": "EXPAND_DIMS", "Transpose": "TRANSPOSE", "StridedSlice": "STRIDED_SLICE",
    "Slice": "SLICE", "SpaceToDepth": "SPACE_TO_DEPTH", "DepthToSpace": "DEPTH_TO_SPACE",
    "SpaceToBatchND": "SPACE_TO_BATCH_ND", "BatchToSpaceND": "BATCH_TO_SPACE_ND", "Reshape": "RESHAPE",
    "Identity": NO_OP, "MaxPool": "MAX_POOL_2D", "Pad": "PAD", "PadV2": "PADV2", "GatherV2": "GATHER",
    "Tile": "TILE", "Split": "SPLIT", "SplitV": "SPLIT_V", "Unpack": "UNPACK", "Pack": "PACK",
}
# TF ops that only move values around: their output stays on the input's integer grid.
SAME_SCALE_TF_OPS = frozenset(tf_op for tf_op, op in SAME_SCALE_TF_TO_TFLITE.items() if keeps_input_grid(op))

# 16-bit activations (TFLite int16x8, int8 weights). LiteRT's int16 kernels need zero point 0: a
# narrow-range symmetric grid on [-m, m]. Every int16 kernel reads and writes int16, so an int16
# part of a graph is an island, requantized (QUANTIZE) at its edges. The TFLite ops allowed inside
# one, as measured with TF 2.21 / ai_edge_litert from FakeQuant graphs (tools/probe_int16.py part
# d: int8 -> the op in int16 -> int8, within 1 int8 LSB). Left out: CONCATENATION (refused by the
# converter), SUB (scales LiteRT will not prepare), ADD, LOGISTIC, TANH, SOFTMAX (the converter
# leaves them int8), MEAN, RELU6 and every op not measured. NO_OP (identity) leaves no op.
INT16_ACTIVATION = QuantSpec(bits=16, signed=True, symmetric=True, narrow_range=True)
INT16_TFLITE_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MUL", "AVERAGE_POOL_2D",
                              "MAX_POOL_2D", "RESIZE_BILINEAR", "PAD", NO_OP})
# Activations an int16 op may fuse (its output clamp), measured on CONV_2D / DEPTHWISE_CONV_2D
# (tests/test_int16_plan.py).
INT16_FUSED_ACTIVATIONS = frozenset({None, "relu", "relu6"})


# Readers that set the grid of a same-scale op's output in the converter. Such an output (max
# pool, pad, concat, ...) holds no FakeQuant of its own in the simulation graph, and its grid is
# whatever the converter's propagation carries onto it. Read by several ops, one of them one of
# these, it goes wrong for the others: AVERAGE_POOL_2D carries its output FakeQuant back onto its
# own input only (the other readers got the float tensor, and ran in float); a CONCATENATION on
# another grid carries its grid back onto the tensor, behind a requantizing QUANTIZE that every
# reader then reads. A FakeQuant on the tensor's own grid right at it keeps every reader on it.
# TFLite op -> whether the rule holds also when the reader shares the tensor's grid.
GRID_SETTING_READERS: dict[str, bool] = {"AVERAGE_POOL_2D": True, "CONCATENATION": False}


def needs_own_fake_quant(readers: list[tuple[Optional[str], bool]]) -> bool:
    """Whether a same-scale op's output read by `readers` — (TFLite op, reads it on its own grid)
    per reader — needs a FakeQuant on its grid right at it (`GRID_SETTING_READERS`)."""
    return len(readers) > 1 and any(op in GRID_SETTING_READERS and (GRID_SETTING_READERS[op] or not same)
                                    for op, same in readers)

# The TFLite ops of a per-channel affine y = x * scale + offset that does not fold into a linear
# op before it: MUL by the int8 constant `scale` (own calibrated grid), then ADD of the int8
# constant `offset` (own grid, the fused activation in it). Both front ends and the exact
# simulation (`core.quantized_affine`) read this one rule.
AFFINE_TFLITE_OPS = ("MUL", "ADD")


def constant_operand_range(values):
    """The range of an int8 constant operand of MUL / ADD: per tensor, asymmetric, [min(v, 0),
    max(v, 0)] (what the converter quantizes a constant with). numpy or TF values. A range
    narrower than `quant_params.MIN_RANGE_WIDTH` is left to the converter's own rule
    (`quant_params.converter_constant_params`, see `quantized_ops.quantized_constant`)."""
    if isinstance(values, (tf.Tensor, tf.Variable)):
        v = tf.convert_to_tensor(values)
        return tf.minimum(tf.reduce_min(v), 0.0), tf.maximum(tf.reduce_max(v), 0.0)
    v = np.asarray(values, np.float64)
    return float(min(v.min(), 0.0)), float(max(v.max(), 0.0))


def constant_operand(values):
    """The constant operand of MUL / ADD as the flatbuffer stores it: a scalar when every channel
    holds the same value (what the converter keeps of a float model's scalar constant, and what
    XNNPACK runs fast: ten int8 ADD + MUL pairs by [16] constants over 48x48x16 take 0.39 ms, by
    scalars 0.04 ms), else the per-channel vector. None stays None."""
    if values is None:
        return None
    v = np.asarray(values, np.float32)
    return v.reshape(-1)[0].copy() if v.size > 1 and np.all(v == v.reshape(-1)[0]) else v


def affine_parts(scale, offset) -> tuple[bool, bool]:
    """(has MUL, has ADD) of the affine x * scale + offset (numpy values): a scale of all ones
    needs no MUL, an offset of all zeros no ADD."""
    has_mul = scale is not None and not np.all(np.asarray(scale) == 1.0)
    has_add = offset is not None and bool(np.any(np.asarray(offset) != 0.0))
    return has_mul, has_add


# Element-wise int8 ops with an output grid of their own (calibrated) and an exact kernel in
# `core.integer_kernels`, by TF op: what LayerNormalization's moments and normalizer lower to.
ELEMENTWISE_TF_TO_TFLITE: dict[str, str] = {"SquaredDifference": "SQUARED_DIFFERENCE", "Rsqrt": "RSQRT"}
# TF ops both routes leave float, as the converter does: NEG (LiteRT's int8 NEG negates the raw
# integers and ignores the quantization parameters; the converter gives it no int8 rule). A float
# op between int8 tensors is DEQUANTIZE -> op -> QUANTIZE on the device.
FLOAT_TF_TO_TFLITE: dict[str, str] = {"Neg": "NEG"}

# Keras 3 LayerNormalization (axis -1, not rms_scaling), as the TF backend traces it and the
# converter lowers it: (name, TFLite op, inputs) in order. Every output but NEG's is int8 on a grid
# of its own; "gamma" / "beta" are int8 constants (`constant_operand_range`, the affine's MUL / ADD
# of `AFFINE_TFLITE_OPS`), "epsilon" a scalar one. QAT builds these ops, PTQ imports them.
LAYER_NORM_STEPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mean", "MEAN", ("x",)),
    ("squared_difference", "SQUARED_DIFFERENCE", ("x", "mean")),
    ("variance", "MEAN", ("squared_difference",)),
    ("variance_epsilon", "ADD", ("variance", "epsilon")),
    ("rsqrt", "RSQRT", ("variance_epsilon",)),
    ("inv", "MUL", ("rsqrt", "gamma")),
    ("neg_mean", "NEG", ("mean",)),
    ("neg_mean_inv", "MUL", ("neg_mean", "inv")),
    ("offset", "ADD", ("neg_mean_inv", "beta")),
    ("x_inv", "MUL", ("x", "inv")),
    ("output", "ADD", ("x_inv", "offset")),
)
# Hard-swish: the float pattern and its int8 lowerings (the converter's one op, or three).
HARD_SWISH_TFLITE_OP = "HARD_SWISH"
HARD_SWISH_LOWERINGS = ("decomposed", HARD_SWISH_TFLITE_OP)
DEFAULT_HARD_SWISH_LOWERING = "decomposed"
HARD_SWISH_DECOMPOSED_OPS = ("ADD", "MUL", "MUL")     # relu6(x + 3), * (1 / 6), * x
HARD_SWISH_OFFSET = 3.0                             # relu6(x + 3) ...
HARD_SWISH_SCALE = float(np.float32(1.0) / np.float32(6.0))   # ... * (1 / 6): float32, as the converter matches it


def hard_swish(x):
    """x * relu6(x + 3) / 6, in the TF ops the converter fuses into HARD_SWISH (Keras' hard_silu)."""
    return x * (tf.nn.relu6(x + tf.constant(HARD_SWISH_OFFSET, x.dtype)) / tf.constant(6.0, x.dtype))


def check_hard_swish_lowering(lowering: str) -> str:
    """`lowering` if it is one of `HARD_SWISH_LOWERINGS`, else ValueError."""
    if lowering not in HARD_SWISH_LOWERINGS:
        raise ValueError(f"hard_swish must be one of {list(HARD_SWISH_LOWERINGS)}, got {lowering!r}.")
    return lowering


@dataclasses.dataclass(frozen=True)
class LookupTableOp:
    """An int8 TFLite op whose kernel is a 256-entry table (the kernels' LUTPopulate):
    out[q] = clamp(round_half_away(f(s_in * (q - zp_in)) * (1 / s_out)) + zp_out), in float32.

    tflite: the op in the flatbuffer; tf_fn: the float function in TF (what the model and the
    fake-quant graph compute); table_fn: the float32 numpy function the kernel tabulates;
    tf_ops: TF op types that convert to it one to one (what PTQ matches); keras_activations:
    Keras activation names that trace to it (what QAT quantizes). The output has a grid of its
    own (calibrated), the input keeps its producer's.
    """

    tflite: str
    tf_fn: Callable
    table_fn: Callable
    tf_ops: tuple[str, ...] = ()
    keras_activations: tuple[str, ...] = ()


def _gelu_table(x: np.ndarray) -> np.ndarray:
    """GELU (exact form, TFLite's approximate=False): 0.5 x (1 + erf(x / sqrt 2))."""
    erf = np.vectorize(math.erf, otypes=[np.float64])
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + erf(x64 / math.sqrt(2.0)))).astype(np.float32)


LOOKUP_TABLE_OPS: dict[str, LookupTableOp] = {
    "exp": LookupTableOp("EXP", tf.exp, np.exp, tf_ops=("Exp",), keras_activations=("exponential",)),
    "gelu": LookupTableOp("GELU", lambda x: tf.nn.gelu(x, approximate=False), _gelu_table,
                          tf_ops=("Gelu",), keras_activations=("gelu",)),   # "Gelu": graph.importer's fused node
}


def lookup_table_op(*, tf_op: Optional[str] = None, keras_activation: Optional[str] = None) -> Optional[LookupTableOp]:
    """The `LOOKUP_TABLE_OPS` entry for a TF op type or a Keras activation name, or None."""
    for op in LOOKUP_TABLE_OPS.values():
        if (tf_op is not None and tf_op in op.tf_ops) or \
                (keras_activation is not None and keras_activation in op.keras_activations):
            return op
    return None


def apply_fused_activation(name: Optional[str], x):
    """`x` through the fused activation `name` (None, "relu", "relu6")."""
    try:
        fn = FUSED_ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"{name!r} is not an activation TFLite fuses; choose one of "
                         f"{list(FUSED_ACTIVATIONS)}.") from None
    return fn(x)


def linear_pre_activation(op, x, kernel, bias=None, correction=None):
    """op(x, kernel) [* correction] [+ bias]: every linear op's float computation before its fused
    activation (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, TRANSPOSE_CONV). `correction` is
    batch-statistics BN folding's per-channel sigma / sigma_B."""
    y = op(x, kernel)
    if correction is not None:
        y = y * correction
    return y if bias is None else y + bias


def linear_forward(op, x, kernel, bias=None, activation: Optional[str] = None, correction=None):
    """act(op(x, kernel) + bias), with `act` a fused activation (see `linear_pre_activation`)."""
    return apply_fused_activation(activation, linear_pre_activation(op, x, kernel, bias, correction))
