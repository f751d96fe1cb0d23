"""An op added to both routes by one entry of the rules table (`core.op_rules.LOOKUP_TABLE_OPS`).

EXP is taken out of the table, shown to be unsupported (QAT leaves the layer float), put back as a
fresh entry, and then quantized by QAT and by PTQ to int8 flatbuffers that the interpreter's
reference kernels match bit for bit. GELU (a table entry too) goes through QAT the same way.
"""
import numpy as np
import pytest
import tensorflow as tf

import keras
import tfquant
from tfquant.core import LookupTableOp, integer_kernels, op_rules

INPUT = (8, 8, 3)


def model_with(activation: str, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    L = keras.layers
    inp = keras.Input(INPUT)
    x = L.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = L.Activation(activation, name="act")(x)
    x = L.Conv2D(6, 1, name="pw")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4, name="head")(x))


def data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, *INPUT)).astype(np.float32)


def ops_of(tflite: bytes) -> dict[str, bool]:
    """op name -> runs in float, for the ops that are not QUANTIZE / DEQUANTIZE."""
    return {o.op: o.is_float for o in tfquant.inspect(tflite).ops if o.op not in ("QUANTIZE", "DEQUANTIZE")}


def qat_flatbuffer(activation: str):
    model = model_with(activation)
    qmodel = tfquant.quantize_model(model)
    tfquant.keras.calibrate(qmodel, data(64, 1))
    return qmodel, tfquant.to_tflite(qmodel)


def exact_fraction(tflite, simulation, x) -> float:
    return tfquant.verify(tflite, simulation, x, kernels=("reference",), intermediate_samples=0).exact_fraction


def test_lookup_table_matches_the_interpreter_on_all_256_inputs():
    """The exact kernel's table against TFLite's own, for EXP and GELU over several grids."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    for name, (lo, hi, olo, ohi) in [("exp", (-4, 4, -1, 4)), ("exp", (-6, 2, -0.3, 6)), ("gelu", (-8, 3, -0.5, 3)),
                                      ("gelu", (-2, 2, 0, 8))]:
        op = op_rules.LOOKUP_TABLE_OPS[name]

        @tf.function(input_signature=[tf.TensorSpec([1, 256], tf.float32)])
        def f(x):
            x = tf.quantization.fake_quant_with_min_max_vars(x, float(lo), float(hi))
            return tf.quantization.fake_quant_with_min_max_vars(op.tf_fn(x), float(olo), float(ohi))

        interpreter = Interpreter(model_content=tfquant.to_tflite(f, int8_io=True),
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
        interpreter.allocate_tensors()
        i, o = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.set_tensor(i["index"], np.arange(-128, 128, dtype=np.int8)[None])
        interpreter.invoke()
        got = interpreter.get_tensor(o["index"])[0]
        (s_in, z_in), (s_out, z_out) = i["quantization"], o["quantization"]
        table = integer_kernels.lookup_table(op.table_fn, input_scale=s_in, input_zero_point=z_in,
                                             output_scale=s_out, output_zero_point=z_out)
        np.testing.assert_array_equal(table, got.astype(np.int64), err_msg=f"{name} {(lo, hi, olo, ohi)}")
        assert len(set(got.tolist())) > 32          # a real function of the input, not a constant


def test_an_op_added_by_one_table_entry(monkeypatch):
    monkeypatch.delitem(op_rules.LOOKUP_TABLE_OPS, "exp")
    qmodel = tfquant.quantize_model(model_with("exponential"))
    assert tfquant.keras.quantization_report(qmodel).status_of("act") == "float"   # not an op QAT knows
    with pytest.raises(tfquant.SpecError, match="supports"):
        tfquant.keras.QuantActivation("exponential")

    monkeypatch.setitem(op_rules.LOOKUP_TABLE_OPS, "exp", LookupTableOp(
        "EXP", tf.exp, np.exp, tf_ops=("Exp",), keras_activations=("exponential",)))
    x = data(32, 2)
    # QAT
    qmodel, tflite = qat_flatbuffer("exponential")
    assert tfquant.keras.quantization_report(qmodel).status_of("act") == "quantized"
    assert ops_of(tflite)["EXP"] is False                     # int8 EXP
    assert exact_fraction(tflite, qmodel, x) == 1.0
    # PTQ
    result = tfquant.ptq(model_with("exponential"), data(64, 1), progress=False,
                         steps=("cle", "bias_absorption", "bias_correction"))
    tflite = result.to_tflite()
    assert ops_of(tflite)["EXP"] is False
    assert all(not is_float for is_float in ops_of(tflite).values())
    assert exact_fraction(tflite, result, x) == 1.0
    # the exact simulation reads the entry's table: a wrong table must show up
    monkeypatch.setitem(op_rules.LOOKUP_TABLE_OPS, "exp", LookupTableOp(
        "EXP", tf.exp, lambda v: np.exp(v) * np.float32(1.25), tf_ops=("Exp",), keras_activations=("exponential",)))
    assert exact_fraction(tflite, result.with_plan(result.plan), x) < 0.9


def test_gelu_quantized_aware_training_is_int8_and_exact():
    qmodel, tflite = qat_flatbuffer("gelu")
    assert ops_of(tflite)["GELU"] is False
    assert all(not is_float for is_float in ops_of(tflite).values())
    assert exact_fraction(tflite, qmodel, data(32, 2)) == 1.0
