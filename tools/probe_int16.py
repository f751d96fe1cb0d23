"""Probe what TF's converter and LiteRT allow for 16-bit activations (TFLite int16x8).

    python -m tools.probe_int16            # prints one table per route

a. the converter's own 16x8 PTQ mode (EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8);
b. a FakeQuant graph whose activations are 16-bit (narrow range, symmetric: zero point 0);
c. (b) with the bias of every int16-input op rewritten from INT32 to INT64 in the flatbuffer.
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


def internal_error(model: bytes, ref_fn, xs, name_of_op: str = "CONV_2D") -> dict:
    """Per int16-output op error in its own LSB, via preserve_all_tensors against the float ops
    is not available by name; we report the model output only (see errors_in_lsb)."""
    return {}


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


if __name__ == "__main__":
    main()
