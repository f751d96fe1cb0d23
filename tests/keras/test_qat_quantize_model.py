"""quantize_model's graph rewrite: which layer becomes what, the report, the registry, bad input."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfquant
from qat_models import back_to_back_fake_quants, convnet, fake_quant_graph_ops, nested_net, sequence_net
from tfquant.errors import SpecError, TFQuantError
from tfquant.export.converter import FAKE_QUANT_OPS
from tfquant.keras import (
    AlreadyQuantizedError,
    ModelTypeError,
    QuantConcatenate,
    QuantConv,
    QuantizeConfig,
    QuantizeInput,
    QuantizeWrapper,
    calibrate,
    quantization_report,
    quantize_model,
    register_quantize_config,
    unregister_quantize_config,
)

L = keras.layers


def test_conv_bn_relu_become_one_layer_with_the_original_weights():
    keras.utils.set_random_seed(0)
    model = convnet()
    # Non-trivial BN statistics, so that folding is visible.
    bn = model.get_layer("stem_bn")
    bn.set_weights([np.linspace(0.5, 2.0, 8), np.linspace(-0.2, 0.2, 8), np.linspace(-0.1, 0.1, 8),
                    np.linspace(0.5, 1.5, 8)])
    qmodel = quantize_model(model)
    stem = qmodel.get_layer("stem")
    assert isinstance(stem, QuantConv) and stem.bn is not None and stem.activation == "relu6"
    np.testing.assert_array_equal(stem.layer.kernel.numpy(), model.get_layer("stem").kernel.numpy())
    kernel, bias = stem.folded_weights()
    gamma, beta, mean, var = bn.get_weights()
    factor = gamma / np.sqrt(var + bn.epsilon)
    np.testing.assert_allclose(kernel.numpy(), model.get_layer("stem").kernel.numpy() * factor, rtol=1e-6)
    np.testing.assert_allclose(bias.numpy(), beta - mean * factor, rtol=1e-5, atol=1e-7)
    assert isinstance(qmodel.get_layer("image_quantize"), QuantizeInput)
    names = {layer.name for layer in qmodel.layers}
    assert not {"stem_bn", "stem_relu6", "dw_bn", "dw_relu", "residual_relu"} & names
    # Quantized with float weights, before any training, the model stays close to the float one.
    x = np.random.default_rng(0).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32)
    calibrate(qmodel, x)
    np.testing.assert_allclose(qmodel(x).numpy(), model(x).numpy(), atol=0.05)


def test_every_int8_tensor_has_exactly_one_fake_quant():
    qmodel = quantize_model(convnet())
    calibrate(qmodel, np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32))
    assert back_to_back_fake_quants(qmodel) == []
    fq = [op for op in fake_quant_graph_ops(qmodel) if op.type in FAKE_QUANT_OPS]
    per_channel = [op for op in fq if op.type == "FakeQuantWithMinMaxVarsPerChannel"]
    per_tensor = [op for op in fq if op.type == "FakeQuantWithMinMaxVars"]
    # Kernels of stem, dw, pw, branch_a, branch_b (per channel) and of the classifier (per tensor);
    # activations: input, stem, dw, pw, residual, concat (branch_a / branch_b write on its grid),
    # avg_pool (on the concat's grid), gap, classifier, softmax.
    assert len(per_channel) == 5, [op.name for op in per_channel]
    assert len(per_tensor) == 11, [op.name for op in per_tensor]


def test_sequential_and_nested_models_are_flattened():
    qseq = quantize_model(sequence_net())
    kinds = [type(layer).__name__ for layer in qseq.layers]
    assert kinds.count("QuantConv") == 3 and "NearestUpSampling" in kinds
    assert quantization_report(qseq).float_layers == []
    qnested = quantize_model(nested_net())
    report = quantization_report(qnested)
    names = [r.name for r in report.layers]
    assert "seq_block/conv2d" in " ".join(names) or any(n.startswith("seq_block/") for n in names)
    assert any(n.startswith("func_block/") for n in names)
    assert not any(isinstance(layer, keras.Model) for layer in qnested.layers)
    assert report.float_layers == []


def test_unsupported_layer_stays_float_and_is_reported():
    inp = keras.Input((8, 8, 4))
    x = L.Conv2D(8, 3, padding="same")(inp)
    x = L.LayerNormalization(axis=(1, 2, 3), name="norm")(x)   # the last axis alone is int8 (QuantLayerNorm)
    x = L.Conv2D(4, 1)(x)
    model = keras.Model(inp, x)
    with pytest.warns(UserWarning, match="norm"):
        qmodel = quantize_model(model)
    report = quantization_report(qmodel)
    (row,) = report.float_layers
    assert row.name == "norm" and row.class_name == "LayerNormalization"
    assert "register_quantize_config" in row.how_to and row.reason
    assert "left in float" in report.table()
    # Its output is quantized again for the conv that reads it.
    assert isinstance(qmodel.get_layer("norm_quantize"), QuantizeInput)
    np.testing.assert_array_equal(qmodel.get_layer("norm").get_weights()[0], model.get_layer("norm").get_weights()[0])
    x = np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 4)).astype(np.float32)
    calibrate(qmodel, x)
    tfl = tfquant.inspect(tfquant.to_tflite(qmodel))
    assert tfl.float_ops                                   # the layer norm, and only it, runs in float
    assert tfl.op_counts()["CONV_2D"] == 2
    for op in tfl.ops_of_type("CONV_2D"):
        assert tfl.tensors[op.outputs[0]].dtype == "INT8"


def halve(v):
    return v * 0.5


def test_activations_without_an_int8_lowering_stay_float():
    inp = keras.Input((8,))
    x = L.Dense(8, activation=halve, name="custom_act")(inp)                # a Python function
    x = L.ReLU(max_value=3.0, name="relu3")(x)                              # RELU + MINIMUM in float
    x = L.Dense(4, activation="leaky_relu", name="leaky")(x)
    with pytest.warns(UserWarning, match="relu3"):
        qmodel = quantize_model(keras.Model(inp, x))
    report = quantization_report(qmodel)
    assert {r.name for r in report.float_layers} == {"custom_act_custom", "relu3"}
    assert report.status_of("custom_act") == "quantized" and report.status_of("leaky") == "quantized"
    assert qmodel.get_layer("leaky_leaky_relu").params == {"negative_slope": 0.2}
    x = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    calibrate(qmodel, x)
    np.testing.assert_allclose(qmodel.get_layer("custom_act_custom")(np.ones((1, 8), np.float32)), 0.5)


def test_float_layers_option_and_shared_layers():
    shared = L.Dense(4, name="shared")
    inp = keras.Input((4,))
    out = L.Dense(2, name="head")(L.Add()([shared(inp), shared(L.Dense(4)(inp))]))
    model = keras.Model(inp, out)
    with pytest.warns(UserWarning):
        qmodel = quantize_model(model, {"float_layers": ["head"]})
    report = quantization_report(qmodel)
    statuses = {r.name: r.status for r in report.layers}
    assert statuses["head"] == "float" and statuses["shared"] == "float"
    assert "called 2 times" in [r for r in report.float_layers if r.name == "shared"][0].reason


def test_custom_layer_with_a_quantize_config():
    @keras.saving.register_keras_serializable(package="tfquant_tests")
    class Scale(L.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return x * self.w

    inp = keras.Input((6,))
    model = keras.Model(inp, L.Dense(3)(Scale(name="scale")(L.Dense(6)(inp))))
    with pytest.warns(UserWarning, match="scale"):
        quantize_model(model)                          # unknown: left float
    register_quantize_config(Scale, QuantizeConfig(weights=["w"]))
    try:
        qmodel = quantize_model(model)
    finally:
        unregister_quantize_config(Scale)
    layer = qmodel.get_layer("scale")
    assert isinstance(layer, QuantizeWrapper)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype(np.float32)
    qmodel.compile("adam", "mse")
    qmodel.fit(x, np.zeros((16, 3), np.float32), verbose=0)
    tfl = tfquant.inspect(tfquant.to_tflite(qmodel))
    assert tfl.float_ops == [] and "MUL" in tfl.op_counts()
    with pytest.raises(TypeError):
        register_quantize_config(Scale, {"weights": ["w"]})


def test_concat_shares_only_inputs_that_feed_nothing_else():
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(4, 1, name="a")(inp)
    b = L.Conv2D(4, 1, name="b")(inp)
    out_b = L.GlobalAveragePooling2D(name="side")(b)           # b has another consumer
    c = L.Concatenate(name="cat")([a, L.MaxPooling2D(1, name="mp")(b), inp])
    qmodel = quantize_model(keras.Model(inp, [c, out_b]))
    cat = qmodel.get_layer("cat")
    assert isinstance(cat, QuantConcatenate)
    assert cat.shared_inputs == [True, False, False]
    assert qmodel.get_layer("a").shared_output and not qmodel.get_layer("b").shared_output


# ---- bad input ----------------------------------------------------------------------------------
class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = L.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_subclassed_model_is_refused_with_a_way_out():
    model = Subclassed()
    model(np.zeros((1, 3), np.float32))
    with pytest.raises(ModelTypeError, match="subclassed model.*Functional API") as err:
        quantize_model(model)
    assert isinstance(err.value, TFQuantError)


@pytest.mark.parametrize("thing", ["model.h5", L.Dense(3), tf.Module(), None])
def test_unsupported_model_types_are_refused(thing):
    with pytest.raises(ModelTypeError, match="Keras"):
        quantize_model(thing)


def test_unbuilt_sequential_is_refused():
    with pytest.raises(ModelTypeError, match="not built"):
        quantize_model(keras.Sequential([L.Dense(2)]))


def test_already_quantized_model_is_refused():
    qmodel = quantize_model(convnet())
    with pytest.raises(AlreadyQuantizedError, match="already quantized"):
        quantize_model(qmodel)
    outer_in = keras.Input((16, 16, 3))
    with pytest.raises(AlreadyQuantizedError):
        quantize_model(keras.Model(outer_in, qmodel(outer_in)))


@pytest.mark.parametrize("bits", [0, 17])
def test_bits_config_is_refused_before_touching_the_model(bits):
    with pytest.raises(SpecError, match=f"bits={bits}"):
        quantize_model(convnet(), {"weight_bits": bits})
    with pytest.raises(SpecError, match=f"bits={bits}"):
        quantize_model(convnet(), {"activation_bits": bits})


def test_keras_op_with_a_constant_is_an_int8_affine():
    """`x + 3.0` / `x * (1 / 6)` in a Functional graph are Keras ops, not layers (MobileNetV3's
    hard-sigmoid, ConvNeXt): each is an int8 ADD of / MUL by a constant (a Rescaling's affine),
    ReLU6 fused, exact. `3.0 - x` (a SUB of its own) stays float, reported, not a crash."""
    import keras

    import tfquant

    x = keras.Input((16, 16, 3))
    y = keras.layers.Conv2D(4, 1)(keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0))
    qmodel = tfquant.quantize_model(keras.Model(x, y))
    report = tfquant.keras.quantization_report(qmodel)
    assert report.float_layers == []
    assert [r.status for r in report.layers if r.class_name in ("Add", "ReLU", "Multiply")] == \
        ["quantized", "fused", "quantized"]
    data = np.random.default_rng(0).uniform(-4, 4, (8, 16, 16, 3)).astype(np.float32)
    tfquant.keras.calibrate(qmodel, data)
    tflite = tfquant.to_tflite(qmodel)
    assert tfquant.inspect(tflite).float_ops == []
    assert [o.op for o in tfquant.inspect(tflite).ops] == ["QUANTIZE", "ADD", "MUL", "CONV_2D", "DEQUANTIZE"]
    assert tfquant.verify(tflite, qmodel, data, kernels=("reference",)).exact_fraction == 1.0

    with pytest.warns(UserWarning, match="left these layers in float"):
        qmodel = tfquant.quantize_model(keras.Model(x, keras.layers.Conv2D(4, 1)(3.0 - x)))
    assert [r.class_name for r in tfquant.keras.quantization_report(qmodel).float_layers] == ["Subtract"]
