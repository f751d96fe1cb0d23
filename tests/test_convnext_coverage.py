"""Issue 15, ConvNeXt's ops (COVERAGE.md causes 2 and 7): Dense applied to a 4-D tensor (its
pointwise MLP, a tf.tensordot), exact GELU and LayerNormalization through both routes: int8,
exact under the reference kernels. The QAT cases of the Dense and GELU tests (which passed
before those fixes) run with the slow suites."""
from __future__ import annotations

import keras
import numpy as np
import pytest

import tfquant
from tests.test_keras_applications_exact import _assert_exact, _data, _route


def pointwise_mlp():
    """ConvNeXt's inverted bottleneck without its norm: conv, Dense x4 (relu), Dense back, on 4-D."""
    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(8, 3, padding="same")(x)
    y = keras.layers.Dense(32, activation="relu")(y)
    y = keras.layers.Dense(8)(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(10)(y))


@pytest.mark.parametrize("route", ["ptq", pytest.param("qat", marks=pytest.mark.slow)])
def test_dense_on_a_4d_tensor_is_an_int8_convolution_and_exact(route):
    """Cause 2: PTQ crashed (the tensordot's Reshape to a shape computed for another batch size);
    the Dense layers on 4-D tensors are now 1x1 convolutions with per-channel weights."""
    x_cal, x_test = _data()
    tflite, result = _route(pointwise_mlp(), route, x_cal, x_test)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    assert "RESHAPE" not in report.op_counts(), report.op_counts()
    if route == "ptq":
        convs = report.ops_of_type("CONV_2D")
        assert len(convs) == 3
        assert all(report.tensors[op.inputs[1]].per_channel for op in convs)
    _assert_exact(result, expected_tensors=3)


def gelu_block():
    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(16, 3, padding="same")(x)
    y = keras.layers.Activation("gelu")(y)                 # exact GELU: (x/2) erfc(-x/sqrt 2)
    y = keras.layers.Conv2D(8, 1)(y)
    return keras.Model(x, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(y)))


@pytest.mark.parametrize("route", ["ptq", pytest.param("qat", marks=pytest.mark.slow)])
def test_gelu_is_one_int8_lookup_table_op_and_exact(route):
    """PTQ exported GELU's five TF ops (MUL, NEG, MUL, Erfc, MUL) and the converter refused Erfc;
    the importer fuses them into the table op QAT already had (core.op_rules.LOOKUP_TABLE_OPS)."""
    x_cal, x_test = _data()
    tflite, result = _route(gelu_block(), route, x_cal, x_test)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    assert report.op_counts().get("GELU") == 1 and "NEG" not in report.op_counts()
    gelu, = report.ops_of_type("GELU")
    assert report.tensors[gelu.inputs[0]].dtype == report.tensors[gelu.outputs[0]].dtype == "INT8"
    _assert_exact(result, expected_tensors=4)


def dense_on_steps():
    """Dense layers on a [batch, steps, channels] tensor (a 1-D conv net's or a transformer's MLP)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((12, 8))
    y = keras.layers.Dense(16, activation="relu")(x)
    y = keras.layers.Dense(8)(y)
    return keras.Model(x, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling1D()(y)))


@pytest.mark.parametrize("route", ["ptq", pytest.param("qat", marks=pytest.mark.slow)])
def test_dense_on_a_3d_tensor_is_int8_and_exact(route):
    """PTQ crashed here too (the layer-wise step chunked a Reshape to a shape computed for all
    samples) and the exact MEAN lost its static sizes; each Dense is now a 1x1 CONV_2D on a
    [batch, steps, 1, channels] view, bias and ReLU folded in."""
    x_cal, x_test = _data((12, 8))
    tflite, result = _route(dense_on_steps(), route, x_cal, x_test)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    if route == "ptq":
        assert report.op_counts()["CONV_2D"] == 2 and "RELU" not in report.op_counts(), report.op_counts()
    _assert_exact(result, expected_tensors=3)


def layer_norm_block(epsilon: float = 1e-6):
    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(16, 3, padding="same")(x)
    y = keras.layers.Activation("gelu")(y)
    norm = keras.layers.LayerNormalization(epsilon=epsilon)         # ConvNeXt's, axis -1
    y = norm(y)
    y = keras.layers.Conv2D(8, 1)(y)
    model = keras.Model(x, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(y)))
    rng = np.random.default_rng(1)     # trained-looking gamma / beta (ones / zeros would drop the MUL)
    norm.set_weights([rng.uniform(0.5, 1.5, 16).astype(np.float32), rng.normal(0, 0.3, 16).astype(np.float32)])
    return model


LAYER_NORM_OPS = {"MEAN": 3, "SQUARED_DIFFERENCE": 1, "RSQRT": 1, "NEG": 1, "MUL": 3, "ADD": 3}


@pytest.mark.parametrize("route", ["ptq", "qat"])
def test_layer_norm_is_the_converters_int8_ops_and_exact(route):
    """Cause 7: QAT left LayerNormalization float; PTQ's SQUARED_DIFFERENCE and RSQRT were float
    math + FakeQuant in the simulation (1-3 LSB). Both routes now export the converter's ops
    (core.op_rules.LAYER_NORM_STEPS), int8 but for the NEG the converter keeps float too, and
    predict every integer (core.integer_kernels.squared_difference / rsqrt)."""
    x_cal, x_test = _data()
    model = layer_norm_block()
    tflite, result = _route(model, route, x_cal, x_test)
    report = tfquant.inspect(tflite)
    assert [op.op for op in report.float_ops] == ["NEG"]
    if route == "ptq":                 # the converter's own PTQ keeps the same NEG float
        from benchmarks.peers.converter_ptq import converter_ptq
        assert [op.op for op in tfquant.inspect(converter_ptq(model, x_cal)).float_ops] == ["NEG"]
    counts = report.op_counts()
    assert {op: counts.get(op, 0) for op in LAYER_NORM_OPS} == LAYER_NORM_OPS, counts
    for op in ("SQUARED_DIFFERENCE", "RSQRT"):
        node, = report.ops_of_type(op)
        assert {report.tensors[i].dtype for i in node.inputs + node.outputs} == {"INT8"}
    _assert_exact(result, expected_tensors=12 if route == "ptq" else 7)   # QAT: one per Keras layer


def convnext_miniature():
    """keras.applications' ConvNeXt in miniature, built from its own layers: the preprocessing
    Normalization, the stem (4x4 conv, LayerNormalization), two blocks (grouped 7x7 conv,
    LayerNormalization, Dense x4 on 4-D, exact GELU, Dense back, LayerScale, residual `a + b`),
    a downsampling layer (LayerNormalization, 2x2 conv), one more block and the head. LayerScale
    and LayerNormalization weights are trained-looking (init 1e-6 would make every block vanish)."""
    from keras.src.applications import convnext  # Keras-private: ConvNeXtBlock, PreStem, Head

    keras.utils.set_random_seed(0)
    x = keras.Input((32, 32, 3))
    y = convnext.PreStem(name="mini")(x)
    y = keras.Sequential([keras.layers.Conv2D(8, 4, strides=4, name="stem_conv"),
                          keras.layers.LayerNormalization(epsilon=1e-6, name="stem_layernorm")], name="stem")(y)
    for j in range(2):
        y = convnext.ConvNeXtBlock(8, name=f"stage_0_block_{j}")(y)
    y = keras.Sequential([keras.layers.LayerNormalization(epsilon=1e-6, name="downsampling_layernorm"),
                          keras.layers.Conv2D(16, 2, strides=2, name="downsampling_conv")], name="downsampling")(y)
    y = convnext.ConvNeXtBlock(16, name="stage_1_block_0")(y)
    model = keras.Model(x, convnext.Head(10, name="mini")(y))
    rng = np.random.default_rng(1)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, convnext.LayerScale):
            layer.set_weights([rng.uniform(0.2, 1.0, layer.projection_dim).astype(np.float32)])
        elif isinstance(layer, keras.layers.LayerNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n).astype(np.float32), rng.normal(0, 0.3, n).astype(np.float32)])
    return model


@pytest.mark.slow
def test_convnext_qat_leaves_no_more_float_ops_than_the_converter_and_is_exact():
    """ConvNeXtTiny's QAT export kept 18 ADD and 14 CONV_2D in float (the converter: 23 NEG
    only): the residual `inputs + x` is a Keras op, not an Add layer, so it had no FakeQuant and
    the grouped 7x7 conv reading it ran in float; LayerScale and the grouped conv had no QAT
    lowering either (their MUL / CONV_2D int8 but their weights unsimulated: 1-9 LSB inside).
    Now the residual is QuantAdd, LayerScale the affine's MUL, the grouped conv a QuantConv."""
    from benchmarks.peers.converter_ptq import converter_ptq

    x_cal, x_test = _data((32, 32, 3), n_test=8)
    model = convnext_miniature()
    qmodel = tfquant.quantize_model(model)
    assert tfquant.keras.quantization_report(qmodel).float_layers == []
    tfquant.calibrate(qmodel, x_cal)
    tflite = tfquant.to_tflite(qmodel)
    result = tfquant.verify(tflite, qmodel, x_test, kernels=("reference",))
    report = tfquant.inspect(tflite)
    converter = tfquant.inspect(converter_ptq(model, x_cal))
    assert sorted(op.op for op in report.float_ops) == sorted(op.op for op in converter.float_ops) == ["NEG"] * 6
    counts = report.op_counts()
    assert counts["CONV_2D"] == converter.op_counts()["CONV_2D"] == 5, counts     # stem, 3 grouped, downsampling
    for conv in report.ops_of_type("CONV_2D"):
        assert {report.tensors[i].dtype for i in conv.inputs[:2] + conv.outputs} == {"INT8"}
    _assert_exact(result, expected_tensors=20)


def residual_layer_scale_blocks(gammas=None):
    """Two ConvNeXt-style residual blocks without the norm: grouped 3x3 conv, Dense on 4-D,
    LayerScale (`gammas`, one vector of 8 per block; default drawn from [0.2, 1]), and the
    residual as Keras' `a + b` (the op, not an Add layer)."""
    from keras.src.applications.convnext import LayerScale  # Keras-private

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(8, 3, padding="same")(x)
    scales = []
    for _ in range(2):
        z = keras.layers.Conv2D(8, 3, padding="same", groups=8)(y)
        z = keras.layers.Dense(8)(z)
        scale = LayerScale(1e-6, 8)
        scales.append(scale)
        y = y + scale(z)
    model = keras.Model(x, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(y)))
    gammas = gammas if gammas is not None else [rng.uniform(0.2, 1.0, 8) for _ in scales]
    for scale, gamma in zip(scales, gammas):
        scale.set_weights([np.asarray(gamma, np.float32)])
    return model


def test_residual_op_layer_scale_and_grouped_conv_are_int8_and_exact():
    """The QAT half of the ConvNeXt test above, small: the residual `y + x` had no FakeQuant (an
    ADD and the grouped conv reading it stayed float), LayerScale's MUL and the grouped conv
    were int8 with unsimulated weights. Each is now a tfquant layer: ADD, MUL by the int8
    constant gamma (`op_rules.AFFINE_TFLITE_OPS`), grouped CONV_2D, all int8 and exact."""
    x_cal, x_test = _data()
    qmodel = tfquant.quantize_model(residual_layer_scale_blocks())
    kinds = {type(layer).__name__ for layer in qmodel.layers}
    assert {"QuantAdd", "QuantAffine", "QuantConv"} <= kinds, kinds
    assert tfquant.keras.quantization_report(qmodel).float_layers == []
    tfquant.calibrate(qmodel, x_cal)
    tflite = tfquant.to_tflite(qmodel)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    counts = report.op_counts()
    assert (counts["CONV_2D"], counts["ADD"], counts["MUL"]) == (3, 2, 2), counts
    grouped = [op for op in report.ops_of_type("CONV_2D") if report.tensors[op.inputs[1]].shape[-1] == 1]
    assert len(grouped) == 2 and all(report.tensors[op.inputs[1]].per_channel for op in grouped)
    _assert_exact(tfquant.verify(tflite, qmodel, x_test, kernels=("reference",)), expected_tensors=10)


def test_layer_scale_narrower_than_1e6_and_shared_by_blocks_is_exact():
    """ConvNeXt QAT at initialization: every LayerScale's gammas alike (1e-6). The converter
    merges identical constants and re-derives a merged fake-quantized constant's grid from its
    values, widening ranges under 1e-6 by its own rule, so the MULs by gamma were 1 LSB off on
    1-2% of their outputs. A constant narrower than MIN_RANGE_WIDTH now reaches the converter in
    float; the simulation uses the grid the converter gives it (`converter_constant_params`)."""
    from tfquant.core.quant_params import converter_constant_params
    from tfquant.core.spec import QuantSpec

    x_cal, x_test = _data()
    gamma = np.random.default_rng(5).uniform(2e-7, 9e-7, 8).astype(np.float32)
    qmodel = tfquant.quantize_model(residual_layer_scale_blocks(gammas=[gamma, gamma]))
    tfquant.calibrate(qmodel, x_cal)
    tflite = tfquant.to_tflite(qmodel)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    expected = converter_constant_params(gamma, QuantSpec.activation())
    muls = report.ops_of_type("MUL")
    assert len(muls) == 2
    for op in muls:
        const = report.tensors[op.inputs[1]]
        assert const.dtype == "INT8" and const.shape == [8]
        assert (np.float32(const.scales[0]), const.zero_points[0]) == (expected.scale, int(expected.zero_point))
    _assert_exact(tfquant.verify(tflite, qmodel, x_test, kernels=("reference",)), expected_tensors=9)


def test_grouped_conv_is_imported_as_a_simulated_int8_convolution():
    """PTQ: Keras 3 runs a grouped Conv2D inside an XLA-compiled tf.function, which the frozen
    graph keeps as a call; left as a call, the converter quantized its weights itself and the
    simulation went off after it (ConvNeXt: Mean_2 44%, 1-2 LSB). Imported as the conv it wraps,
    its weights are on tfquant's per-channel grid and every tensor is exact."""
    x_cal, x_test = _data()
    sim = tfquant.ptq(residual_layer_scale_blocks(), x_cal, progress=False, steps=("bias_correction",))
    grouped = [n for n in sim.graph if n.type == "conv2d" and n.attrs.get("groups", 1) > 1]
    assert len(grouped) == 2 and all(n.kernel.shape == (3, 3, 1, 8) for n in grouped)
    tflite = sim.to_tflite()
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    convs = [op for op in report.ops_of_type("CONV_2D") if report.tensors[op.inputs[1]].shape[-1] == 1]
    assert len(convs) == 2 and all(report.tensors[op.inputs[1]].per_channel for op in convs)
    _assert_exact(sim.verify(x_test, kernels=("reference",)), expected_tensors=10)
