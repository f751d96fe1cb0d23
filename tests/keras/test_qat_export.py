"""QAT end to end on small models covering every layer tfquant quantizes: quantize_model -> a few
fit steps -> to_tflite -> inspect (the int8 contract) -> verify (the simulation predicts the
interpreter's integers) -> the flatbuffer's weights are the simulation's."""
import keras
import numpy as np
import pytest
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

import tfquant
from qat_models import (
    MODELS,
    back_to_back_fake_quants,
    fidelity_line,
    requantize_ops,
    sample_data,
    train_and_export,
)
from tfquant.core import simulation_mode
from tfquant.export.converter import concrete_function_of
from tfquant.keras import QATConfig, QuantConv, quantizer_state

_CACHE = {}


def exported(name, config=None):
    key = (name, repr(config))
    if key not in _CACHE:
        _CACHE[key] = train_and_export(MODELS[name], config)
    return _CACHE[key]


# Ops the quantized graph may hold besides the quantized layers' own: shape plumbing (int32) and
# the model's edges.
_SHAPE_OPS = {"SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE", "EXPAND_DIMS", "SQUEEZE", "GATHER", "REDUCE_PROD",
              "CONCATENATION"}
# MUL / ADD / SUB each model should hold (anything more would be an unfolded batch norm).
_ARITHMETIC = {
    "convnet": {"ADD": 1},
    "sequence_net": {},
    "decoder_net": {},
    "gating_net": {"MUL": 2, "SUB": 1},
    "nested_net": {"ADD": 1},
}


def check_int8_contract(report, model_name):
    assert report.float_ops == [], report.table()
    counts = report.op_counts()
    assert counts.get("QUANTIZE", 0) - len(requantize_ops(report)) == 1 and counts["DEQUANTIZE"] == 1
    for op in report.ops:
        if op.op in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for i in op.inputs + op.outputs:
            if i < 0:
                continue
            t = report.tensors[i]
            if t.is_constant:
                continue
            assert t.dtype in ("INT8", "INT32"), (op.op, t.name, t.dtype)
            if t.dtype == "INT32":
                assert op.op in _SHAPE_OPS or i in op.inputs, (op.op, t.name)
    # No separate batch-norm arithmetic: only the model's own Add / Multiply / Subtract.
    for kind in ("MUL", "ADD", "SUB"):
        assert counts.get(kind, 0) == _ARITHMETIC[model_name].get(kind, 0), (kind, counts)
    for op in report.ops:
        if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
            if op.op == "TRANSPOSE_CONV":
                _, w, x, b = (report.tensors[i] if i >= 0 else None for i in op.inputs)
            else:
                x, w, b = (report.tensors[i] if i >= 0 else None for i in op.inputs)
            assert x.dtype == "INT8" and w.dtype in ("INT8", "INT4") and set(w.zero_points) == {0}
            if op.op == "CONV_2D":
                assert w.quantized_dimension == 0 and len(w.scales) == w.shape[0], w
            elif op.op == "DEPTHWISE_CONV_2D":
                assert w.quantized_dimension == 3 and len(w.scales) == w.shape[3], w
            else:       # FULLY_CONNECTED and TRANSPOSE_CONV: per tensor
                assert len(w.scales) == 1, w
            if b is not None:
                assert b.dtype == "INT32" and set(b.zero_points) == {0}
                expected = np.float32(x.scales[0]) * np.asarray(w.scales, np.float32)
                np.testing.assert_allclose(np.broadcast_to(expected, np.shape(b.scales)), b.scales, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_contract(name):
    e = exported(name)
    check_int8_contract(e.report, name)
    assert back_to_back_fake_quants(e.qmodel) == []


def test_batch_norms_are_folded_and_relus_fused():
    report = tfquant.keras.quantization_report(exported("convnet").qmodel)
    assert report.status_of("stem_bn") == "folded" and report.status_of("dw_bn") == "folded"
    assert report.status_of("stem_relu6") == "fused" and report.status_of("residual_relu") == "fused"
    assert report.float_layers == []
    counts = exported("convnet").report.op_counts()
    assert counts["CONV_2D"] == 4 and counts["DEPTHWISE_CONV_2D"] == 1 and "RELU" not in counts


def test_concat_inputs_share_its_grid():
    """Both producers feed only the concat: they write on its grid, no requantize op appears."""
    e = exported("convnet")
    report = e.report
    (concat,) = report.ops_of_type("CONCATENATION")
    grids = {(tuple(report.tensors[i].scales), tuple(report.tensors[i].zero_points))
             for i in concat.inputs + concat.outputs}
    assert len(grids) == 1
    assert requantize_ops(report) == []
    (pool,) = report.ops_of_type("AVERAGE_POOL_2D")
    assert report.tensors[pool.inputs[0]].scales == report.tensors[pool.outputs[0]].scales
    layer = e.qmodel.get_layer("concat")
    assert layer.shared_inputs == [True, True]
    assert e.qmodel.get_layer("branch_a").shared_output and e.qmodel.get_layer("branch_b").shared_output


def test_concat_input_with_other_consumers_is_requantized_once():
    e = exported("gating_net")
    (concat,) = e.report.ops_of_type("CONCATENATION")
    grids = {tuple(e.report.tensors[i].scales) for i in concat.inputs + concat.outputs}
    assert len(grids) == 1
    assert len(requantize_ops(e.report)) == 1


def test_fixed_output_grids():
    report = exported("gating_net").report
    for op in report.ops_of_type("LOGISTIC") + report.ops_of_type("SOFTMAX"):
        out = report.tensors[op.outputs[0]]
        assert out.scales == [1 / 256] and out.zero_points == [-128]
    (tanh,) = report.ops_of_type("TANH")
    out = report.tensors[tanh.outputs[0]]
    assert out.scales == [1 / 128] and out.zero_points == [0]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_verify_exact_under_reference_kernels(name):
    e = exported(name)
    result = tfquant.verify(e.tflite, e.qmodel, e.x_test, float_model=e.model, kernels=("reference", "default"),
                            intermediate_samples=0)
    print(fidelity_line(name, result))
    assert result.exact_fraction >= 0.995, result.table()
    assert result.within_one_fraction >= 0.999, result.table()
    default = result.for_kernels("default")[0].fidelity
    # XNNPACK (the default kernels) rounds differently from the reference kernels; the contract is
    # the reference kernels, the default ones are reported (and must stay close).
    assert default.within_one >= 0.95, result.table()


def _dequantized(t):
    data = np.asarray(t.data, np.float64)
    scales = np.asarray(t.scales, np.float64)
    if len(scales) > 1:
        shape = [1] * data.ndim
        shape[t.quantized_dimension] = -1
        scales = scales.reshape(shape)
    return data * scales


def _flatbuffer_layouts(layer: QuantConv, q: dict) -> list:
    """(op type, kernel in the flatbuffer's layout, scales) the layer must appear as."""
    kernel = q["kernel"]
    if layer.kind in ("conv2d", "conv1d", "separable"):
        out = [("CONV_2D", np.transpose(kernel, (3, 0, 1, 2)), q["kernel_scale"])]
    elif layer.kind == "depthwise":
        h, w, c, m = kernel.shape
        out = [("DEPTHWISE_CONV_2D", kernel.reshape(1, h, w, c * m), q["kernel_scale"])]
    elif layer.kind == "transpose":
        out = [("TRANSPOSE_CONV", np.transpose(kernel, (2, 0, 1, 3)), q["kernel_scale"])]
    else:
        out = [("FULLY_CONNECTED", kernel.T, q["kernel_scale"])]
    if layer.kind == "separable":
        dk = q["depthwise_kernel"]
        h, w, c, m = dk.shape
        out.append(("DEPTHWISE_CONV_2D", dk.reshape(1, h, w, c * m), q["depthwise_scale"]))
    return out


def check_weights_match(qmodel, report):
    """Every QuantConv's fake-quantized folded kernel equals a flatbuffer kernel's integers times
    its scales, with the same scales."""
    matched = 0
    for layer in qmodel.layers:
        if not isinstance(layer, QuantConv):
            continue
        for op_type, kernel, scales in _flatbuffer_layouts(layer, layer.quantized_weights()):
            weight_index = 1
            found = []
            for op in report.ops_of_type(op_type):
                t = report.tensors[op.inputs[weight_index]]
                if list(t.shape) != list(kernel.shape):
                    continue
                stored = _dequantized(t)
                if np.allclose(stored, kernel, rtol=1e-6, atol=1e-9):
                    found.append(t)
            assert found, f"{layer.name}: no {op_type} holds the simulation's weights"
            np.testing.assert_allclose(found[0].scales, np.atleast_1d(scales), rtol=1e-6)
            matched += 1
    return matched


@pytest.mark.parametrize("name", sorted(MODELS))
def test_flatbuffer_weights_equal_simulation_weights(name):
    e = exported(name)
    assert check_weights_match(e.qmodel, e.report) >= 2


def test_w4a8_end_to_end():
    e = exported("convnet", QATConfig(weight_bits=4))
    check_int8_contract(e.report, "convnet")
    kernels = [e.report.tensors[op.inputs[1]] for op in e.report.ops if op.op in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(kernels) == 5 and all(t.dtype == "INT4" for t in kernels), [t.dtype for t in kernels]
    assert all(t.data.min() >= -7 and t.data.max() <= 7 for t in kernels)
    # LiteRT has no int4 DEPTHWISE_CONV_2D kernel: depthwise weights stay 8-bit.
    (dw,) = e.report.ops_of_type("DEPTHWISE_CONV_2D")
    assert e.report.tensors[dw.inputs[1]].dtype == "INT8"
    assert check_weights_match(e.qmodel, e.report) == 6
    result = tfquant.verify(e.tflite, e.qmodel, e.x_test, kernels=("reference", "default"), intermediate_samples=0)
    print(fidelity_line("convnet W4A8", result))
    assert result.exact_fraction >= 0.995, result.table()


# ---- ops without an exact integer emulation in tfquant.core yet ---------------------------------
def _single_op_model(op):
    L = keras.layers
    inp = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 1)(inp)
    if op == "leaky_relu":
        y = L.LeakyReLU(0.2)(x)
    elif op == "hard_silu":
        y = L.Activation("hard_silu")(x)
    else:
        y = L.UpSampling2D(2, interpolation="bilinear")(x)
    return keras.Model(inp, y)


# These ops run the fake-quant path in the exact simulation (tfquant.core has no integer emulation
# of them yet) and TFLite's integer kernels round differently: RESIZE_BILINEAR integer
# interpolation weights. Floors just under the measured exact fractions (reference kernels, 128
# samples, inputs uniform in [-scale, scale]); every output is within 1 LSB. bilinear 95.3%.
_NOT_EXACT_YET = {("bilinear", 1.0): 0.93}
_BELOW_CONTRACT = [("bilinear", 1.0)]


def test_leaky_relu_is_exact():
    """LEAKY_RELU has its integer emulation (two multipliers, float Prepare): bit-exact."""
    result = _single_op_result("leaky_relu", 1.0)
    print(fidelity_line("leaky_relu", result))
    assert result.outputs[0].fidelity.exact == 1.0, result.table()


def test_hard_silu_is_exact():
    """hard_silu (decomposed by default: ADD + RELU6, MUL, MUL) has its integer emulation: bit-exact.
    (Its HARD_SWISH lowering: tests/test_integer_kernels.py, tests/test_keras_applications_exact.py.)"""
    result = _single_op_result("hard_silu", 4.0)
    print(fidelity_line("hard_silu", result))
    assert result.outputs[0].fidelity.exact == 1.0, result.table()


def _single_op_result(op, scale):
    key = ("single", op, scale)
    if key not in _CACHE:
        e = train_and_export(lambda: _single_op_model(op), scale=scale)
        assert e.report.float_ops == []
        _CACHE[key] = tfquant.verify(e.tflite, e.qmodel, e.x_test, kernels=("reference", "default"),
                                     intermediate_samples=0)
    return _CACHE[key]


@pytest.mark.parametrize("op,scale", sorted(_NOT_EXACT_YET))
def test_ops_without_exact_emulation_are_within_one_lsb(op, scale):
    result = _single_op_result(op, scale)
    print(fidelity_line(f"{op} (inputs x{scale})", result))
    assert result.within_one_fraction == 1.0, result.table()
    assert result.exact_fraction >= _NOT_EXACT_YET[op, scale], result.table()


@pytest.mark.xfail(strict=True, reason="no exact emulation of RESIZE_BILINEAR in "
                                       "tfquant.core.integer_kernels yet (measured figures in the test above)")
@pytest.mark.parametrize("op,scale", _BELOW_CONTRACT)
def test_ops_without_exact_emulation_meet_the_995_contract(op, scale):
    assert _single_op_result(op, scale).exact_fraction >= 0.995


def _learned():
    key = ("learned",)
    if key not in _CACHE:
        keras.utils.set_random_seed(0)
        model = MODELS["convnet"]()
        qmodel = tfquant.quantize_model(model, QATConfig(learned_ranges=True))
        x, y = sample_data(model, 64)
        qmodel.compile(keras.optimizers.Adam(1e-3), "mse")
        qmodel.fit(x, y, batch_size=16, shuffle=False, verbose=0)
        _CACHE[key] = (model, qmodel, sample_data(model, 128, 1)[0])
    return _CACHE[key]


def test_learned_ranges_end_to_end_through_a_frozen_graph():
    """Trainable (LSQ+-style) ranges train, export and verify bit-exactly."""
    _, qmodel, x_test = _learned()
    tflite = tfquant.to_tflite(convert_variables_to_constants_v2(concrete_function_of(qmodel)))
    check_int8_contract(tfquant.inspect(tflite), "convnet")
    result = tfquant.verify(tflite, qmodel, x_test, kernels=("reference", "default"), intermediate_samples=0)
    print(fidelity_line("convnet learned ranges", result))
    assert result.exact_fraction >= 0.995, result.table()


def test_learned_ranges_export_directly():
    """to_tflite freezes the trained model itself: the flatbuffer equals the one from a frozen graph."""
    _, qmodel, x_test = _learned()
    direct = tfquant.to_tflite(qmodel)
    frozen = tfquant.to_tflite(convert_variables_to_constants_v2(concrete_function_of(qmodel)))
    a, b = tfquant.inspect(direct), tfquant.inspect(frozen)
    assert a.op_counts() == b.op_counts()
    assert [(t.dtype, t.scales) for t in a.tensors] == [(t.dtype, t.scales) for t in b.tensors]
    assert tfquant.verify(direct, qmodel, x_test, kernels=("reference",),
                          intermediate_samples=0).exact_fraction >= 0.995


@pytest.mark.parametrize("name", sorted(MODELS))
def test_keras_file_round_trip_of_every_layer(name, tmp_path):
    e = exported(name)
    path = tmp_path / f"{name}.keras"
    e.qmodel.save(path)
    loaded = keras.models.load_model(path)
    assert quantizer_state(loaded) == quantizer_state(e.qmodel)
    x = e.x_test[:16]
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), e.qmodel.predict(x, verbose=0))
    with simulation_mode("exact"):
        np.testing.assert_array_equal(loaded(x, training=False).numpy(), e.qmodel(x, training=False).numpy())
