"""16-bit activations (TFLite int16x8) in a FakeQuant graph: the boundary op and the flatbuffer fix-up.

What TF 2.21 and LiteRT allow (measured by `python -m tools.probe_int16`):
- a 16-bit activation FakeQuant must be narrow-range and symmetric (zero point 0): LiteRT's int16
  kernels (and DEQUANTIZE) refuse any other zero point;
- every int16 op reads and writes int16 (CONV_2D, ADD, MUL, RELU6, LOGISTIC, TANH, MEAN, SOFTMAX...
  check input type == output type), so an int16 part of the graph is an island: the converter
  inserts the requantizing QUANTIZE (int8 -> int16 or back) only where a same-scale op separates
  two FakeQuants of different precision; two FakeQuants back to back fold into one.
  `requantize_boundary` is that op (a 1x1 MAX_POOL_2D, removed again from the flatbuffer);
- in QAT mode the converter writes an INT32 bias for a CONV_2D / DEPTHWISE_CONV_2D /
  FULLY_CONNECTED with int16 input, where LiteRT's 16x8 kernels read INT64 (the first half of the
  channels right, the rest garbage). `fix_int16` rewrites those biases as INT64 (same values);
  `_experimental_full_integer_quantization_bias_type` cannot: the converter accepts it only with
  a representative dataset (its own PTQ).

On the PTQ route, `plan.set_precision(names, "int16")` makes the emitter (`tfquant.graph.emit`)
build such islands itself; by hand:

    >>> y = requantize_boundary(fake_quant(x, -4, 4, QuantSpec.activation()))     # int8 x ...
    >>> y = fake_quant(y, -4, 4, INT16_ACTIVATION)                                 # ... int16 y
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

from tfquant.core.op_rules import INT16_ACTIVATION, INT16_TFLITE_OPS  # noqa: F401  (re-exported)
from tfquant.errors import ExportError

INT64_BIAS_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})
_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_BOUNDARY = "tfquant_requantize_boundary"


def requantize_boundary(x: tf.Tensor) -> tf.Tensor:
    """An identity op (a 1x1 max pool) between two FakeQuants of different precision, so that
    the converter writes the QUANTIZE that requantizes int8 <-> int16 (rank 2..4 tensors)."""
    rank = x.shape.rank
    if rank is None or not 2 <= rank <= 4:
        raise ExportError(f"requantize_boundary needs a rank 2..4 tensor, got rank {rank}.")
    if rank == 4:
        return tf.nn.max_pool2d(x, 1, 1, "VALID", name=_BOUNDARY)
    shape = tf.shape(x)
    y = tf.reshape(x, tf.concat([shape[:1], tf.ones([4 - rank], tf.int32), shape[1:]], 0))
    return tf.reshape(tf.nn.max_pool2d(y, 1, 1, "VALID", name=_BOUNDARY), shape)


def _op_name(m, op) -> str:
    return _OP_NAMES.get(flatbuffer_utils.get_builtin_code_from_operator_code(m.operatorCodes[op.opcodeIndex]), "?")


def _name(t) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def _is_const(m, t) -> bool:
    buf = m.buffers[t.buffer] if t.buffer is not None and t.buffer < len(m.buffers) else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def _check(m, g) -> None:
    """Every int16 activation has zero point 0; no op mixes int8 and int16 activations."""
    I8, I16 = schema.TensorType.INT8, schema.TensorType.INT16
    for t in g.tensors:
        q = t.quantization
        if t.type == I16 and q is not None and q.zeroPoint is not None and any(int(z) != 0 for z in q.zeroPoint):
            raise ExportError(
                f"Tensor {_name(t)!r} is int16 with zero point {int(q.zeroPoint[0])}: LiteRT's int16 kernels "
                "need zero point 0. Make 16-bit activation FakeQuants narrow-range and symmetric "
                "(tfquant.export.int16.INT16_ACTIVATION, range [-m, m]).")
    for i, op in enumerate(g.operators):
        name = _op_name(m, op)
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        acts = [g.tensors[x] for x in list(op.inputs) + list(op.outputs)
                if x >= 0 and not _is_const(m, g.tensors[x])]
        types = {t.type for t in acts}
        if I16 in types and I8 in types:
            desc = ", ".join(f"{_name(t)!r} {'INT16' if t.type == I16 else 'INT8'}" for t in acts)
            raise ExportError(
                f"Op {name} (node {i}) cannot mix int8 and int16 activations ({desc}): every LiteRT int16 "
                "kernel reads and writes int16. Put tfquant.export.int16.requantize_boundary between the "
                "8-bit and the 16-bit FakeQuant so the converter writes a QUANTIZE there.")


def _widen_biases(m, g) -> int:
    """INT32 biases of int16-input conv / depthwise / fully connected ops -> INT64; the count."""
    n = 0
    for op in g.operators:
        if _op_name(m, op) not in INT64_BIAS_OPS or len(op.inputs) < 3:
            continue
        data_in = op.inputs[2] if _op_name(m, op) == "TRANSPOSE_CONV" else op.inputs[0]
        bias_index = 3 if _op_name(m, op) == "TRANSPOSE_CONV" else 2
        if len(op.inputs) <= bias_index or op.inputs[bias_index] < 0:
            continue
        bias = g.tensors[op.inputs[bias_index]]
        if g.tensors[data_in].type != schema.TensorType.INT16 or bias.type != schema.TensorType.INT32:
            continue
        values = np.frombuffer(bytes(bytearray(m.buffers[bias.buffer].data)), "<i4").astype("<i8")
        buf = schema.BufferT()      # a buffer of its own: the converter shares equal ones (zero biases)
        buf.data = values.view(np.uint8)
        m.buffers.append(buf)
        bias.buffer = len(m.buffers) - 1
        bias.type = schema.TensorType.INT64
        n += 1
    return n


def _drop_boundaries(m, g) -> int:
    """Remove the 1x1 stride-1 MAX_POOL_2D identities `requantize_boundary` left (same type and
    quantization in and out, not a model output); the count."""
    outputs = set(int(x) for x in g.outputs)
    drop = []
    for i, op in enumerate(g.operators):
        o = op.builtinOptions
        if _op_name(m, op) != "MAX_POOL_2D" or o is None or (o.filterWidth, o.filterHeight, o.strideW, o.strideH) != (1, 1, 1, 1):
            continue
        src, dst = int(op.inputs[0]), int(op.outputs[0])
        a, b = g.tensors[src], g.tensors[dst]
        same_q = (a.quantization is not None and b.quantization is not None
                  and list(a.quantization.scale) == list(b.quantization.scale)
                  and list(a.quantization.zeroPoint) == list(b.quantization.zeroPoint))
        if dst in outputs or a.type != b.type or not same_q or list(a.shape) != list(b.shape) \
                or o.fusedActivationFunction != schema.ActivationFunctionType.NONE:
            continue
        for other in g.operators:
            other.inputs = np.asarray([src if int(x) == dst else int(x) for x in other.inputs], np.int32)
        drop.append(i)
    g.operators = [op for i, op in enumerate(g.operators) if i not in set(drop)]
    if drop:
        _drop_unused_tensors(g)
    return len(drop)


def _drop_unused_tensors(g) -> None:
    """Remove tensors no op and no model input / output refers to, renumbering the rest."""
    used = {int(x) for op in g.operators for x in list(op.inputs) + list(op.outputs) if x >= 0}
    used |= {int(x) for x in list(g.inputs) + list(g.outputs)}
    keep = sorted(used)
    new = {old: i for i, old in enumerate(keep)}
    g.tensors = [g.tensors[i] for i in keep]

    def remap(xs):
        return np.asarray([new[int(x)] if x >= 0 else -1 for x in xs], np.int32)
    for op in g.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None and len(op.intermediates):
            op.intermediates = remap(op.intermediates)
    g.inputs, g.outputs = remap(g.inputs), remap(g.outputs)


def fix_int16(data: bytes) -> bytes:
    """Check and fix a converted flatbuffer with int16 activations (see the module docstring);
    a flatbuffer without int16 activations is returned unchanged (the same bytes)."""
    m = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    g = m.subgraphs[0]
    if not any(t.type == schema.TensorType.INT16 and not _is_const(m, t) for t in g.tensors):
        return data
    _check(m, g)
    _widen_biases(m, g)
    _drop_boundaries(m, g)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))
