"""The QAT quantizers: configs, bits checks, moving-average and learned ranges."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfquant.core import QuantSpec, quant_params
from tfquant.errors import SpecError, TFQuantError
from tfquant.keras import ActivationQuantizer, FixedQuantizer, QATConfig, WeightQuantizer


class Holder(keras.layers.Layer):
    """A layer that owns one activation quantizer (as tfquant's layers do)."""

    def __init__(self, quantizer, **kwargs):
        super().__init__(**kwargs)
        self.q = quantizer
        self.q.build(self, "output")

    def call(self, x, training=None):
        return self.q(x, training=bool(training))


@pytest.mark.parametrize("bits", [0, 1, 17, 9, "8", 8.0])
def test_weight_bits_outside_what_tflite_runs_are_refused(bits):
    with pytest.raises(SpecError):
        WeightQuantizer(bits=bits)
    with pytest.raises(SpecError):
        QATConfig(weight_bits=bits)


@pytest.mark.parametrize("bits", [0, 4, 16, 17])
def test_activation_bits_must_be_8(bits):
    with pytest.raises(SpecError) as err:
        ActivationQuantizer(bits=bits)
    assert isinstance(err.value, TFQuantError)
    with pytest.raises(SpecError):
        QATConfig(activation_bits=bits)


def test_config_errors_are_clear():
    with pytest.raises(SpecError, match="bn_folding"):
        QATConfig(bn_folding="sometimes")
    with pytest.raises(SpecError, match="momentum"):
        ActivationQuantizer(momentum=1.0)
    with pytest.raises(SpecError, match="Unknown QATConfig keys"):
        QATConfig.coerce({"weight_bitz": 4})
    with pytest.warns(UserWarning, match="under 4 bits"):
        WeightQuantizer(bits=3)


def test_quantizers_round_trip_their_config():
    for q in (WeightQuantizer(bits=4, per_channel=False), ActivationQuantizer(momentum=0.9, learned=True),
              FixedQuantizer(0.0, 255 / 256)):
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(q))
        assert type(restored) is type(q) and restored.get_config() == q.get_config()
    assert WeightQuantizer(bits=4).spec() == QuantSpec.weight(bits=4)
    assert WeightQuantizer().spec(per_channel=False).per_channel is False


def test_moving_average_first_batch_initializes_then_ema():
    q = ActivationQuantizer(momentum=0.9)
    layer = Holder(q)
    x1 = tf.constant([[-1.0, 2.0]])
    y1 = layer(x1, training=True)
    assert float(q.min.numpy()) == -1.0 and float(q.max.numpy()) == 2.0 and q.is_initialized()
    p = quant_params(-1.0, 2.0, QuantSpec.activation())
    np.testing.assert_allclose(y1.numpy(), np.clip(np.round(x1.numpy() / p.scale) * p.scale, p.min, p.max),
                               atol=1e-6)
    layer(tf.constant([[-3.0, 4.0]]), training=True)
    np.testing.assert_allclose([q.min.numpy(), q.max.numpy()], [0.9 * -1 + 0.1 * -3, 0.9 * 2 + 0.1 * 4], rtol=1e-6)
    # Inference freezes the range.
    layer(tf.constant([[-100.0, 100.0]]), training=False)
    np.testing.assert_allclose([q.min.numpy(), q.max.numpy()], [-1.2, 2.2], rtol=1e-6)


def test_uninitialized_range_warns_at_inference():
    layer = Holder(ActivationQuantizer())
    with pytest.warns(UserWarning, match="has no range yet"):
        layer(tf.constant([[1.0]]), training=False)


def test_learned_range_is_trained_by_gradient():
    q = ActivationQuantizer(learned=True)
    layer = Holder(q)
    x = tf.constant(np.linspace(-2.0, 3.0, 101, dtype=np.float32)[None])
    layer(x, training=True)                          # first batch initializes the range
    assert [v.name for v in layer.trainable_weights] == ["output_min", "output_max"]
    np.testing.assert_allclose([q.min.numpy(), q.max.numpy()], [-2.0, 3.0])
    q.set_range(-1.0, 1.0)                           # too narrow: the reconstruction error pulls it open
    optimizer = keras.optimizers.SGD(0.01)
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(layer(x, training=True) - x))
        grads = tape.gradient(loss, layer.trainable_weights)
        assert all(g is not None and np.isfinite(g.numpy()) for g in grads)
        optimizer.apply_gradients(zip(grads, layer.trainable_weights))
    assert float(q.min.numpy()) < -1.05 and float(q.max.numpy()) > 1.05
    # A learned range is never reset from a batch once initialized.
    before = float(q.max.numpy())
    layer(x * 10, training=True)
    assert float(q.max.numpy()) == before


def test_fixed_quantizer_is_tflites_softmax_grid():
    q = FixedQuantizer(0.0, 255 / 256)
    y = q(tf.constant([0.0, 0.5, 0.999, 1.2]))
    np.testing.assert_allclose(y.numpy(), [0.0, 0.5, 255 / 256, 255 / 256])
    p = quant_params(*q.range(), QuantSpec.activation())
    assert float(p.scale) == 1 / 256 and int(p.zero_point) == -128


def test_export_of_a_never_calibrated_model_is_refused():
    import keras

    import tfquant

    inp = keras.Input((8, 8, 3))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp))))
    qmodel = tfquant.quantize_model(model)
    with pytest.raises(tfquant.ExportError, match="have no range .*tfquant.calibrate"):
        tfquant.to_tflite(qmodel)
    tfquant.keras.calibrate(qmodel, np.random.default_rng(0).uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32))
    assert tfquant.inspect(tfquant.to_tflite(qmodel)).float_ops == []


def test_calibrate_checks_the_data_like_ptq():
    import keras

    import tfquant

    inp = keras.Input((8, 8, 3))
    qmodel = tfquant.quantize_model(keras.Model(inp, keras.layers.Conv2D(4, 3)(inp)))
    with pytest.raises(tfquant.DataError, match=r"samples of shape \[6, 6, 3\] but .* expects \[8, 8, 3\]"):
        tfquant.keras.calibrate(qmodel, np.zeros((4, 6, 6, 3), np.float32))
    with pytest.raises(tfquant.DataError, match="must be floating point, got uint8"):
        tfquant.keras.calibrate(qmodel, np.zeros((4, 8, 8, 3), np.uint8))
