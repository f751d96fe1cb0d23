"""Probe what TF's converter and LiteRT allow for 16-bit activations (TFLite int16x8).

    python -m tools.probe_int16            # prints one table per route

a. the converter's own 16x8 PTQ mode (EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8);
b. a FakeQuant graph whose activations are 16-bit (narrow range, symmetric: zero point 0) on
   chosen tensors, as the converter writes it, and with the bias of every int16-input op rewritten
   from INT32 to INT64 in the flatbuffer (c);
d. one op at a time between `requantize_boundary`s (int8 -> QUANTIZE -> int16 op -> QUANTIZE ->
   int8) through `tfquant.to_tflite` (which does the fix-up): does it convert and run, and how far
   the interpreter is from the FakeQuant graph.
Each row: op, input / output / bias dtypes, and the interpreter's error against the float
(a) or FakeQuant (b, c) graph in output LSB.
"""
from __future__ import annotations

import re

import numpy as np
import tensorflow as tf

from tfquant.export.inspector import inspect
from tfquant.export.interpreter import TFLiteRunner

SHAPE = (1, 32, 32, 3)
OPS = ("conv", "depthwise", "add", "concat", "avgpool", "maxpool", "mean", "dense", "mul", "relu6",
       "logistic", "tanh", "softmax", "resize", "pad", "reshape")


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"k1": rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32),
            "b1": rng.normal(0, 0.5, 8).astype(np.float32),
            "dk": rng.normal(0, 0.3, (3, 3, 8, 1)).astype(np.float32),
            "db": rng.normal(0, 0.5, 8).astype(np.float32),
            "k2": rng.normal(0, 0.3, (1, 1, 8, 8)).astype(np.float32),
            "b2": rng.normal(0, 0.5, 8).astype(np.float32),
            "w": rng.normal(0, 0.1, (16 * 16 * 16, 10)).astype(np.float32),
            "bw": rng.normal(0, 0.5, 10).astype(np.float32)}


def build(fq_act=None, fq_w=None):
    """A small graph touching every op in OPS; fq_act(name, x) / fq_w(name, w) insert FakeQuants
    (identity when None)."""
    W = _weights()
    a = fq_act or (lambda n, x: x)
    q = fq_w or (lambda n, w: tf.constant(w))

    def f(x):
        x = a("in", x)
        c1 = a("conv", tf.nn.relu(tf.nn.conv2d(x, q("k1", W["k1"]), 1, "SAME") + W["b1"]))
        dw = a("depthwise", tf.nn.depthwise_conv2d(c1, q("dk", W["dk"]), [1, 1, 1, 1], "SAME") + W["db"])
        c2 = a("conv1x1", tf.nn.conv2d(dw, q("k2", W["k2"]), 1, "SAME") + W["b2"])
        s = a("add", c1 + c2)
        m = a("mul", s * dw)
        r6 = a("relu6", tf.nn.relu6(m))
        cat = a("concat", tf.concat([s, r6], -1))
        ap = a("avgpool", tf.nn.avg_pool2d(cat, 2, 2, "VALID"))
        mp = a("maxpool", tf.nn.max_pool2d(cat, 2, 2, "VALID"))
        lg = a("logistic", tf.sigmoid(ap))
        th = a("tanh", tf.tanh(mp))
        cat2 = a("add2", lg + th)[..., :16]
        pd = a("pad", tf.pad(cat2, [[0, 0], [1, 1], [1, 1], [0, 0]])[:, 1:-1, 1:-1, :])
        rz = a("resize", tf.image.resize(pd, (16, 16), "bilinear"))
        mean = a("mean", tf.reduce_mean(rz, axis=[1, 2], keepdims=True))
        flat = a("reshape", tf.reshape(rz * mean, [1, -1]))
        d = a("dense", tf.matmul(flat, q("w", W["w"])) + W["bw"])
        return a("softmax", tf.nn.softmax(d))
    return tf.function(f, input_signature=[tf.TensorSpec(SHAPE, tf.float32)])


def data(n: int = 16, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n,) + SHAPE[1:]).astype(np.float32)


def ranges(fn, xs: np.ndarray) -> dict[str, float]:
    """|max| of each activation over xs (the float graph, instrumented)."""
    seen: dict[str, float] = {}

    def rec(name, x):
        seen.setdefault(name, []).append(x)
        return x
    g = build(fq_act=rec)
    out = {}
    for x in xs:
        seen.clear()
        g.python_function(tf.constant(x[None]))
        for k, v in seen.items():
            out[k] = max(out.get(k, 0.0), float(tf.reduce_max(tf.abs(v[0]))))
    return out


def fake_quant_graph(amax: dict[str, float], int16: set[str]):
    """FakeQuants: 8-bit asymmetric-free (symmetric narrow) int8 activations, 16-bit narrow
    symmetric (zero point 0) for the names in int16; 8-bit narrow symmetric weights."""
    def act(name, x):
        m = amax[name] * 1.05
        if name == "softmax" or name == "logistic":
            return tf.quantization.fake_quant_with_min_max_args(x, 0.0, 1.0, num_bits=16 if name in int16 else 8)
        bits = 16 if name in int16 else 8
        return tf.quantization.fake_quant_with_min_max_args(x, -m, m, num_bits=bits, narrow_range=bits == 16)

    def wq(name, w):
        m = float(np.abs(w).max())
        return tf.quantization.fake_quant_with_min_max_args(tf.constant(w), -m, m, num_bits=8, narrow_range=True)
    return build(fq_act=act, fq_w=wq)


def convert_fake_quant(fn) -> bytes:
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    return conv.convert()


def convert_16x8(fn, xs: np.ndarray) -> bytes:
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None]] for x in xs)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return conv.convert()


def bias_to_int64(model: bytes) -> bytes:
    """Rewrite the INT32 bias of every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED whose
    input is INT16 as INT64 (same values and scales), what LiteRT's 16x8 kernels read."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    g = m.subgraphs[0]
    codes = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
             schema.BuiltinOperator.FULLY_CONNECTED}
    for op in g.operators:
        code = flatbuffer_utils.get_builtin_code_from_operator_code(m.operatorCodes[op.opcodeIndex])
        if code not in codes or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        if g.tensors[op.inputs[0]].type != schema.TensorType.INT16:
            continue
        bias = g.tensors[op.inputs[2]]
        if bias.type != schema.TensorType.INT32:
            continue
        buf = m.buffers[bias.buffer]
        buf.data = np.frombuffer(bytes(bytearray(buf.data)), np.int32).astype("<i8").view(np.uint8)
        bias.type = schema.TensorType.INT64
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def per_op(model: bytes) -> list[tuple]:
    """(op, input dtypes, output dtype, bias dtype) for each op."""
    r = inspect(model)
    rows = []
    for op in r.ops:
        ins = [r.tensors[i] for i in op.inputs if i >= 0]
        acts = [t.dtype for t in ins if not t.is_constant]
        consts = [t.dtype for t in ins if t.is_constant]
        rows.append((op.op, "/".join(sorted(set(acts))), r.tensors[op.outputs[0]].dtype, "/".join(consts)))
    return rows


def errors_in_lsb(model: bytes, ref_fn, xs: np.ndarray) -> tuple[float, float]:
    """Max and mean |interpreter - reference| over xs, in the output tensor's LSB (scale)."""
    runner = TFLiteRunner(model, kernels="reference")
    r = inspect(model)
    out = r.tensors[r.outputs[0]]
    scale = out.scales[0] if out.scales else None
    if scale is None:            # float output after a DEQUANTIZE: the scale of its input
        prod = r.producer(out.index)
        scale = r.tensors[prod.inputs[0]].scales[0]
    got = np.concatenate([runner.run(x[None])[0] for x in xs])
    want = np.concatenate([ref_fn(tf.constant(x[None])).numpy() for x in xs])
    err = np.abs(got - want) / scale
    return float(err.max()), float(err.mean())


CHOICES = (["conv"], ["depthwise"], ["conv1x1"], ["add"], ["mul"], ["mul", "relu6"], ["concat"], ["avgpool"],
           ["maxpool"], ["concat", "avgpool", "maxpool"], ["logistic"], ["tanh"], ["add2"], ["pad"], ["resize"],
           ["mean"], ["reshape"], ["dense"], ["softmax"], ["in"], ["in", "conv"])


def main() -> None:
    xs = data()
    float_fn = build()
    print("== a. converter 16x8 PTQ mode (representative dataset) ==")
    m16x8 = convert_16x8(float_fn, xs)
    for row in per_op(m16x8):
        print("  %-20s in %-14s out %-8s const %s" % row)
    print("  output vs float: max %.2f / mean %.3f output LSB" % errors_in_lsb(m16x8, float_fn, xs))

    amax = ranges(float_fn, xs)
    for chosen in CHOICES:
        fq = fake_quant_graph(amax, set(chosen))
        try:
            m = convert_fake_quant(fq)
        except Exception as e:  # noqa: BLE001
            msg = re.findall(r"error: (.*)", str(e))
            print(f"== b. FakeQuant int16 on {chosen}: converter rejects: {msg[:1]}")
            continue
        print(f"== b. FakeQuant int16 on {chosen} ==")
        for row in per_op(m):
            if "INT16" in row[1] or row[2] == "INT16":
                print("  %-20s in %-14s out %-8s const %s" % row)
        for label, mm in (("as converted", m), ("bias -> INT64", bias_to_int64(m))):
            try:
                print(f"  {label}: output vs FakeQuant graph: max %.2f / mean %.3f output LSB"
                      % errors_in_lsb(mm, fq, xs))
            except Exception as e:  # noqa: BLE001
                print(f"  {label}: interpreter fails: {str(e)[:200]}")


def one_op_island(op: str):
    """x (int8) -> boundary -> int16 -> op (int16) -> boundary -> int8."""
    from tfquant.core import QuantSpec, fake_quant
    from tfquant.export.int16 import INT16_ACTIVATION, requantize_boundary

    a8 = QuantSpec.activation()
    rng = np.random.default_rng(2)
    k = rng.normal(0, 0.3, (3, 3, 8, 8)).astype(np.float32)
    dk = rng.normal(0, 0.3, (3, 3, 8, 1)).astype(np.float32)
    wd = rng.normal(0, 0.1, (8, 8)).astype(np.float32)
    w8 = QuantSpec(bits=8, signed=True, symmetric=True, narrow_range=True)

    def wq(w):
        m = float(np.abs(w).max())
        return fake_quant(tf.constant(w), -m, m, w8)
    body = {
        "CONV_2D": lambda x: tf.nn.conv2d(x, wq(k), 1, "SAME") + 0.5,
        "DEPTHWISE_CONV_2D": lambda x: tf.nn.depthwise_conv2d(x, wq(dk), [1, 1, 1, 1], "SAME") + 0.5,
        "FULLY_CONNECTED": lambda x: tf.reshape(tf.matmul(tf.reshape(x, [-1, 8]), wq(wd)) + 0.5, [1, 8, 8, 8]),
        "ADD": lambda x: x + tf.nn.relu(x) * 0.0 + x[:, ::-1],
        "MUL": lambda x: x * x[:, ::-1],
        "CONCATENATION": lambda x: tf.concat([x, x[:, ::-1]], -1)[..., ::2],
        "AVERAGE_POOL_2D": lambda x: tf.image.resize(tf.nn.avg_pool2d(x, 2, 2, "VALID"), (8, 8), "nearest"),
        "MAX_POOL_2D": lambda x: tf.image.resize(tf.nn.max_pool2d(x, 2, 2, "VALID"), (8, 8), "nearest"),
        "MEAN": lambda x: x - tf.reduce_mean(x, axis=[1, 2], keepdims=True),
        "RELU6": lambda x: tf.nn.relu6(x * 4.0),
        "LOGISTIC": lambda x: tf.sigmoid(x * 4.0),
        "TANH": lambda x: tf.tanh(x * 4.0),
        "SOFTMAX": lambda x: tf.nn.softmax(x * 4.0),
        "RESIZE_BILINEAR": lambda x: tf.image.resize(x[:, ::2, ::2], (8, 8), "bilinear"),
        "PAD": lambda x: tf.pad(x[:, 1:-1, 1:-1], [[0, 0], [1, 1], [1, 1], [0, 0]]),
    }[op]

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 8), tf.float32)])
    def f(x):
        x = fake_quant(x, -1.0, 1.0, a8)
        x = fake_quant(requantize_boundary(x), -1.0, 1.0, INT16_ACTIVATION)
        y = fake_quant(body(x), -4.0, 4.0, INT16_ACTIVATION)
        return fake_quant(requantize_boundary(y), -4.0, 4.0, a8)
    return f


def main_islands() -> None:
    import tfquant

    print("== d. one op in int16 between requantize_boundary (tfquant.to_tflite) ==")
    xs = np.random.default_rng(3).uniform(-1, 1, (16, 8, 8, 8)).astype(np.float32)
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "CONCATENATION",
               "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "RELU6", "LOGISTIC", "TANH", "SOFTMAX",
               "RESIZE_BILINEAR", "PAD"):
        f = one_op_island(op)
        try:
            m = tfquant.to_tflite(f)
        except Exception as e:  # noqa: BLE001
            print(f"  {op:<18} refused: {' '.join(str(e).split())[:230]}")
            continue
        r = inspect(m)
        int16_ops = sorted({o.op for o in r.ops if any(r.tensors[i].dtype == "INT16" for i in o.outputs)
                            and o.op != "QUANTIZE"})
        biases = sorted({r.tensors[o.inputs[2]].dtype for o in r.ops
                         if o.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(o.inputs) > 2})
        try:
            mx, mean = errors_in_lsb(m, f, xs)
            print(f"  {op:<18} int16 ops {int16_ops} bias {biases}: vs FakeQuant max {mx:.2f} mean {mean:.3f} int8 LSB")
        except Exception as e:  # noqa: BLE001
            print(f"  {op:<18} int16 ops {int16_ops}: interpreter fails: {' '.join(str(e).split())[:200]}")


if __name__ == "__main__":
    main()
    main_islands()
    main()
