"""Issue 15 (COVERAGE.md): the smallest Keras models that showed the simulation off TFLite's
reference kernels on all-int8 flatbuffers, through both routes (PTQ from the Keras model; QAT with
quantize_model + calibrate). Each asserts the flatbuffer's float ops (from `inspect`) and 100%
exact integers under the reference kernels (`verify`), intermediate tensors included."""
from __future__ import annotations

import keras
import numpy as np
import pytest

import tfquant


def _data(shape=(16, 16, 3), n_cal=32, n_test=32):
    rng = np.random.default_rng(0)
    return (rng.uniform(-1, 1, (n_cal, *shape)).astype(np.float32),
            rng.uniform(-1, 1, (n_test, *shape)).astype(np.float32))


def _route(model, route: str, x_cal, x_test):
    """(flatbuffer, verify result) of `model` through tfquant's PTQ or QAT route."""
    if route == "ptq":
        sim = tfquant.ptq(model, x_cal, progress=False, steps=("cle", "bias_absorption", "bias_correction"))
        return sim.to_tflite(), sim.verify(x_test, kernels=("reference",))
    qmodel = tfquant.quantize_model(model)
    tfquant.calibrate(qmodel, x_cal)
    tflite = tfquant.to_tflite(qmodel)
    return tflite, tfquant.verify(tflite, qmodel, x_test, kernels=("reference",))


def _assert_exact(result, expected_tensors: int):
    assert result.exact_fraction == 1.0 and result.max_lsb == 0, result.table()
    assert len(result.tensors) >= expected_tensors, result.table()
    assert all(t.exact == 1.0 for t in result.tensors), result.table()


def swish_squeeze_excite():
    """EfficientNet's block in miniature: swish (LOGISTIC then MUL), squeeze-excite (MEAN, conv,
    sigmoid, broadcasting MUL), another swish, global average pool, dense."""
    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(16, 3, padding="same")(x)
    y = keras.layers.Activation("swish")(y)
    s = keras.layers.GlobalAveragePooling2D(keepdims=True)(y)
    s = keras.layers.Conv2D(16, 1, activation="sigmoid")(s)
    y = keras.layers.Multiply()([y, s])
    y = keras.layers.Conv2D(8, 3, padding="same")(y)
    y = keras.layers.Activation("swish")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(x, keras.layers.Dense(10)(y))


@pytest.mark.parametrize("route", ["ptq", "qat"])
def test_swish_and_squeeze_excite_are_int8_and_exact(route):
    """Cause 8: MUL and LOGISTIC were simulated by float-then-FakeQuant, one LSB off TFLite's
    requantization (88% / 97% exact here before); now their integer kernels are emulated."""
    x_cal, x_test = _data()
    tflite, result = _route(swish_squeeze_excite(), route, x_cal, x_test)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    assert report.op_counts()["MUL"] == 3 and report.op_counts()["LOGISTIC"] == 3
    _assert_exact(result, expected_tensors=8)


def max_pool_read_by_avg_pool_and_convs():
    """InceptionV3's branches in miniature: a max pool read by two convs and by an average pool
    (then a conv), concatenated."""
    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    p = keras.layers.MaxPooling2D(2)(y)
    a = keras.layers.Conv2D(4, 1)(p)
    b = keras.layers.Conv2D(4, 1)(p)
    c = keras.layers.Conv2D(4, 1)(keras.layers.AveragePooling2D(3, strides=1, padding="same")(p))
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()([a, b, c]))
    return keras.Model(x, keras.layers.Dense(10)(y))


@pytest.mark.parametrize("route", ["ptq", "qat"])
def test_max_pool_read_by_avg_pool_and_convs_is_int8_and_exact(route):
    """Cause 4: the average pool's output FakeQuant reached only its own input, so the two other
    convs read the max pool's output in float (2 CONV_2D float, 98.75% exact before)."""
    x_cal, x_test = _data()
    tflite, result = _route(max_pool_read_by_avg_pool_and_convs(), route, x_cal, x_test)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    assert report.op_counts()["CONV_2D"] == 4 and report.op_counts()["QUANTIZE"] == 1
    _assert_exact(result, expected_tensors=4)


def test_quantize_after_a_float_island_rounds_as_tflite():
    """Cause 8 (ResNet50V2 / InceptionV3: the QUANTIZE right after a float island): a float op's
    output onto an int8 grid is TFLite's QUANTIZE, ties rounded away from zero; the simulation
    rounded them up (TF's FakeQuant): 52.8% exact here before. Two identity 1x1 convs kept float
    (the first's output set float in the plan), inputs at odd multiples of 1/128 onto a 1/64 grid:
    every value is a tie."""
    keras.utils.set_random_seed(0)
    x = keras.Input((4, 4, 3))
    eye = keras.initializers.Constant(np.eye(3).reshape(1, 1, 3, 3))
    y = keras.layers.Conv2D(3, 1, use_bias=False, kernel_initializer=eye)(x)
    y = keras.layers.Conv2D(3, 1, use_bias=False, kernel_initializer=eye)(y)
    model = keras.Model(x, keras.layers.Conv2D(4, 1)(y))
    x_test = ((2 * np.random.default_rng(0).integers(-64, 64, (16, 4, 4, 3)) + 1) / 128).astype(np.float32)
    sim = tfquant.ptq(model, x_test, progress=False, steps=())
    first, second, _ = sim.graph.linear_nodes()
    plan = sim.plan.copy()
    plan.set_range(plan.quantizer_of(sim.graph.inputs[0].ref), -1.0, 127 / 128)     # scale 1/128
    plan.set_range(plan.quantizer_of(second.output()), -2.0, 127 / 64)             # scale 1/64
    plan.set_precision(first.output(), "float")
    island = sim.with_plan(plan)
    report = tfquant.inspect(island.to_tflite())
    assert [op.op for op in report.float_ops] == ["CONV_2D", "CONV_2D"]
    assert report.op_counts()["QUANTIZE"] == 2
    result = island.verify(x_test, kernels=("reference",))
    assert result.exact_fraction == 1.0 and result.max_lsb == 0, result.table()


def _dense_block(x, growth: int = 4):
    """DenseNet's block: BN, ReLU, 1x1 conv, BN, ReLU, 3x3 conv, concatenated onto its input."""
    L = keras.layers
    y = L.Activation("relu")(L.BatchNormalization()(x))
    y = L.Conv2D(8, 1, use_bias=False)(y)
    y = L.Activation("relu")(L.BatchNormalization()(y))
    y = L.Conv2D(growth, 3, padding="same", use_bias=False)(y)
    return L.Concatenate()([x, y])


def _with_bn_statistics(model: keras.Model, x_bn: np.ndarray) -> keras.Model:
    """`model` with its batch norms' moving statistics set by one training pass over `x_bn`."""
    for bn in [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]:
        bn.momentum = 0.0
    model(x_bn, training=True)
    return model


def densenet_blocks(x_bn):
    """DenseNet121 in miniature: the stem's max pool read by a batch norm and by a concat, two
    dense blocks, a transition (1x1 conv, average pool) read by a batch norm and a concat, and a
    third block; batch norm statistics from one training pass over `x_bn`."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((16, 16, 3))
    y = L.Conv2D(8, 3, strides=2, use_bias=False)(x)
    y = L.MaxPooling2D(2)(L.Activation("relu")(L.BatchNormalization()(y)))
    y = _dense_block(_dense_block(y))
    y = L.Conv2D(8, 1, use_bias=False)(L.Activation("relu")(L.BatchNormalization()(y)))
    y = _dense_block(L.AveragePooling2D(2)(y))
    y = L.GlobalAveragePooling2D()(L.Activation("relu")(L.BatchNormalization()(y)))
    model = keras.Model(x, L.Dense(10)(y))
    return _with_bn_statistics(model, x_bn)


@pytest.mark.parametrize("route", ["ptq", "qat"])
def test_densenet_blocks_are_int8_and_exact(route):
    """DenseNet121 QAT (16.2% exact, 16 LSB before): a QAT concat input on a grid of its own is
    requantized by the converter (QUANTIZE int8 to int8, fixed-point multiplier), which the
    simulation rounded in float (54.1% exact here before); and the stem's max pool output, read by
    a batch norm and by a concat, was carried onto the concat's grid by the converter, behind a
    requantize, while the simulation read it on the conv's grid (the first diverging tensor of
    DenseNet121 QAT: conv2_block1_0_bn, 79.4%). PTQ shares one grid per concat (no requantize)."""
    x_cal, x_test = _data()
    tflite, result = _route(densenet_blocks(x_cal), route, x_cal, x_test)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    counts = report.op_counts()
    assert counts["CONCATENATION"] == 3 and counts["MAX_POOL_2D"] == 1
    assert counts["QUANTIZE"] == (3 if route == "qat" else 1)     # QAT: input + 2 requantizes
    _assert_exact(result, expected_tensors=18)


def mobilenet_v3_block():
    """MobileNetV3's pieces in miniature: the Rescaling stem (pixels in [0, 255]), conv + BN +
    hard-swish (`Activation("hard_swish")`: x * relu6(x + 3) / 6), depthwise + BN + hard-swish,
    squeeze-excite whose gate is Keras' hard-sigmoid `ReLU(6)(x + 3) * (1 / 6)`, conv, pooled head."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((16, 16, 3))
    y = L.Rescaling(1 / 127.5, offset=-1.0)(x)
    y = L.Conv2D(16, 3, padding="same", use_bias=False)(y)
    y = L.Activation("hard_swish")(L.BatchNormalization()(y))
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False)(y)
    y = L.Activation("hard_swish")(L.BatchNormalization()(y))
    s = L.GlobalAveragePooling2D(keepdims=True)(y)
    s = L.Conv2D(8, 1, activation="relu")(s)
    s = L.Conv2D(16, 1)(s)
    s = L.ReLU(6.0)(s + 3.0) * (1.0 / 6.0)
    y = L.Multiply()([y, s])
    y = L.GlobalAveragePooling2D()(L.Conv2D(8, 1)(y))
    return keras.Model(x, L.Dense(10)(y))


@pytest.mark.parametrize("lowering", ["decomposed", "HARD_SWISH"])
@pytest.mark.parametrize("route", ["ptq", "qat"])
def test_mobilenet_v3_block_is_int8_and_exact(route, lowering):
    """Hard-swish as ADD + RELU6, MUL, MUL (the default, XNNPACK-delegated) or as the converter's one
    HARD_SWISH (int16 fixed point; QAT was 93% exact here before, 1 LSB), the hard-sigmoid gate as
    ADD (into the conv's bias on PTQ) + MUL: all int8, every tensor bit-exact."""
    x_cal, x_test = (127.5 * (v + 1.0) for v in _data())
    model = mobilenet_v3_block()
    if route == "ptq":
        sim = tfquant.ptq(model, x_cal, progress=False, hard_swish=lowering,
                           steps=("cle", "bias_absorption", "bias_correction"))
        tflite, result = sim.to_tflite(), sim.verify(x_test, kernels=("reference",))
    else:
        qmodel = tfquant.quantize_model(model, {"hard_swish": lowering})
        tfquant.calibrate(qmodel, x_cal)
        tflite = tfquant.to_tflite(qmodel)
        result = tfquant.verify(tflite, qmodel, x_test, kernels=("reference",))
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    counts = report.op_counts()
    fused = lowering == "HARD_SWISH"
    assert counts.get("HARD_SWISH", 0) == (2 if fused else 0)
    # stem, gate * 1 / 6, squeeze-excite; + (* 1 / 6, * x) per decomposed hard-swish
    assert counts["MUL"] == (3 if fused else 7)
    # stem, the gate's + 3 (PTQ: in the conv's bias); + (+ 3) per decomposed hard-swish
    assert counts["ADD"] == (1 if route == "ptq" else 2) + (0 if fused else 2)
    _assert_exact(result, expected_tensors=12)


def nasnet_stem_relus(x_bn):
    """NASNet's first reduction cell in miniature: the stem's conv (+ batch norm) read by three
    ReLUs only (one RELU on the device, fused into the conv), a 1x1 conv's output (+ batch norm)
    read by two ReLUs and an average pool (one standalone RELU), separable convs, adds, a concat;
    batch norm statistics from one training pass over `x_bn`."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((16, 16, 3))
    ip = L.BatchNormalization()(L.Conv2D(8, 3, strides=2, use_bias=False)(x))
    h = L.BatchNormalization()(L.Conv2D(8, 1, use_bias=False)(L.Activation("relu")(ip)))
    p = L.SeparableConv2D(8, 3, padding="same")(L.Activation("relu")(ip))
    q = L.Conv2D(8, 1)(L.Activation("relu")(ip))
    h1 = L.SeparableConv2D(8, 3, padding="same")(L.Activation("relu")(h))
    h2 = L.Conv2D(8, 1)(L.Activation("relu")(h))
    h3 = L.AveragePooling2D(3, strides=1, padding="same")(h)
    y = L.Concatenate()([L.Add()([p, h1]), L.Add()([q, h2]), L.Add()([h3, p])])
    model = keras.Model(x, L.Dense(10)(L.GlobalAveragePooling2D()(y)))
    return _with_bn_statistics(model, x_bn)


@pytest.mark.parametrize("route", ["ptq", "qat"])
def test_relus_of_one_tensor_are_one_op_and_exact(route):
    """NASNetMobile (PTQ 7.5% / QAT 3.8% exact before; first diverging tensor the 1x1 conv after
    the stem's ReLU, 69%, 2 LSB): the converter merges the ReLUs of one tensor into one op and,
    where they are all its readers, fuses it into the conv; the simulation rounded the conv's
    output onto a grid of its own, then each ReLU onto its own (67.8% exact here before)."""
    x_cal, x_test = _data()
    tflite, result = _route(nasnet_stem_relus(x_cal), route, x_cal, x_test)
    report = tfquant.inspect(tflite)
    assert report.float_ops == []
    counts = report.op_counts()
    assert counts["RELU"] == 1 and counts["CONV_2D"] == 6 and counts["ADD"] == 3
    _assert_exact(result, expected_tensors=10)
