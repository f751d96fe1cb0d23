"""Training a quantized model: compile / fit / callbacks unchanged, BN folding modes, calibration,
and every quantizer state surviving .keras save / load and checkpoint restore."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfquant
from qat_models import convnet, sample_data
from tfquant.core import simulation_mode
from tfquant.keras import QATConfig, QuantConv, calibrate, quantize_model, quantizer_state

L = keras.layers


def bn_net():
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inp)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.SeparableConv2D(6, 3, padding="same", name="sep")(x)
    x = L.BatchNormalization(name="sep_bn")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3, name="head")(x))


@pytest.fixture(scope="module")
def trained():
    keras.utils.set_random_seed(0)
    model = convnet()
    qmodel = quantize_model(model, QATConfig(bn_folding="batch_stats", bn_freeze_steps=2))
    x, y = sample_data(model, 64)
    qmodel.compile(keras.optimizers.Adam(1e-3), "mse", metrics=["mae"])
    history = qmodel.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0,
                         callbacks=[keras.callbacks.EarlyStopping(monitor="loss", patience=5),
                                    keras.callbacks.LambdaCallback()])
    return model, qmodel, x, history


def test_fit_and_callbacks_work_unchanged(trained):
    _, qmodel, x, history = trained
    assert set(history.history) >= {"loss", "mae"} and len(history.history["loss"]) == 2
    assert all(s[2] == 1.0 for s in quantizer_state(qmodel).values())     # every range initialized
    y = qmodel.predict(x, verbose=0)
    assert np.all(np.isfinite(y)) and qmodel.evaluate(x, y, verbose=0)[0] >= 0


def test_keras_save_load_round_trip(trained, tmp_path):
    _, qmodel, x, _ = trained
    path = tmp_path / "qat.keras"
    qmodel.save(path)
    loaded = keras.models.load_model(path)
    assert quantizer_state(loaded) == quantizer_state(qmodel)
    assert [type(l).__name__ for l in loaded.layers] == [type(l).__name__ for l in qmodel.layers]
    for a, b in zip(qmodel.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qmodel.predict(x, verbose=0))
    with simulation_mode("exact"):
        np.testing.assert_array_equal(loaded(x[:8]).numpy(), qmodel(x[:8]).numpy())
    # The reloaded model is wired like the original (shared concat grid) and exports the same bytes.
    assert loaded.get_layer("branch_a").output_quantizer() is loaded.get_layer("concat").quantizer
    assert tfquant.to_tflite(loaded) == tfquant.to_tflite(qmodel)
    # ... and keeps training.
    loaded.fit(x, qmodel.predict(x, verbose=0), epochs=1, verbose=0)


def test_checkpoint_restore(trained, tmp_path):
    model, qmodel, x, _ = trained
    prefix = tf.train.Checkpoint(model=qmodel).write(str(tmp_path / "ckpt"))
    fresh = quantize_model(model, QATConfig(bn_folding="batch_stats", bn_freeze_steps=2))
    assert quantizer_state(fresh) != quantizer_state(qmodel)
    tf.train.Checkpoint(model=fresh).read(prefix).assert_existing_objects_matched()
    assert quantizer_state(fresh) == quantizer_state(qmodel)
    for a, b in zip(qmodel.weights, fresh.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), qmodel.predict(x, verbose=0))


def test_weights_h5_round_trip(trained, tmp_path):
    model, qmodel, x, _ = trained
    path = tmp_path / "qat.weights.h5"
    qmodel.save_weights(path)
    fresh = quantize_model(model, QATConfig(bn_folding="batch_stats", bn_freeze_steps=2))
    fresh.load_weights(path)
    assert quantizer_state(fresh) == quantizer_state(qmodel)


def test_static_folding_freezes_bn_statistics():
    keras.utils.set_random_seed(1)
    model = bn_net()
    qmodel = quantize_model(model)
    x, y = sample_data(model, 32)
    before = model.get_layer("bn").moving_mean.numpy().copy()
    qmodel.compile("adam", "mse")
    qmodel.fit(x, y, batch_size=8, verbose=0)
    conv = qmodel.get_layer("conv")
    np.testing.assert_array_equal(conv.bn.moving_mean.numpy(), before)
    assert not np.array_equal(conv.bn.gamma.numpy(), model.get_layer("bn").gamma.numpy())   # gamma trains


def test_batch_statistics_folding_updates_then_freezes():
    keras.utils.set_random_seed(1)
    model = bn_net()
    qmodel = quantize_model(model, QATConfig(bn_folding="batch_stats", bn_freeze_steps=3))
    x, y = sample_data(model, 48)
    qmodel.compile("adam", "mse")
    conv = qmodel.get_layer("conv")
    qmodel.fit(x[:24], y[:24], batch_size=8, verbose=0)            # 3 steps: statistics move
    moved = conv.bn.moving_mean.numpy().copy()
    assert not np.allclose(moved, 0.0)
    assert float(conv.bn_step.numpy()) == 3.0
    qmodel.fit(x[24:], y[24:], batch_size=8, verbose=0)            # frozen from now on
    np.testing.assert_array_equal(conv.bn.moving_mean.numpy(), moved)
    assert float(conv.bn_step.numpy()) == 6.0
    # The separable conv folds its BN into the pointwise stage and has its own mid quantizer.
    sep = qmodel.get_layer("sep")
    assert isinstance(sep, QuantConv) and sep.bn is not None and "mid" in sep.quantizers()
    tfl = tfquant.inspect(tfquant.to_tflite(qmodel))
    assert tfl.float_ops == [] and "MUL" not in tfl.op_counts() and "ADD" not in tfl.op_counts()


def test_batch_statistics_match_the_float_bn_in_training():
    """With batch statistics and before freezing, the folded layer computes (up to quantization)
    what conv -> BN(training=True) computes."""
    keras.utils.set_random_seed(2)
    model = bn_net()
    qmodel = quantize_model(model, QATConfig(bn_folding="batch_stats"))
    x, _ = sample_data(model, 16)
    calibrate(qmodel, x)
    conv = qmodel.get_layer("conv")
    (quantize_input,) = [l for l in qmodel.layers if l.name.endswith("_quantize")]
    xq = quantize_input(x, training=False)
    lo, hi, _ = quantizer_state(qmodel)["conv/output"]
    y_q = conv(xq, training=True).numpy()
    ref = keras.layers.ReLU()(model.get_layer("bn")(model.get_layer("conv")(xq), training=True)).numpy()
    inside = ref < hi - 0.05                        # away from the (calibrated) clipping point
    assert inside.mean() > 0.5
    step = (hi - lo) / 255
    # Weight quantization and the output grid account for the rest.
    assert np.max(np.abs(y_q - ref)[inside]) < 0.02 + step


def test_calibrate_sets_every_range():
    keras.utils.set_random_seed(0)
    model = convnet()
    qmodel = quantize_model(model)
    x, _ = sample_data(model, 40)
    ranges = calibrate(qmodel, x, steps=2, batch_size=16)
    state = quantizer_state(qmodel)
    assert set(ranges) == set(state) and all(s[2] == 1.0 for s in state.values())
    lo, hi = ranges["image_quantize/output"]
    assert -1.0 <= lo < -0.9 and 0.9 < hi <= 1.0
    assert ranges["stem/output"][0] == 0.0                       # after the fused ReLU6
    # A tf.data pipeline of (x, y) works too, and the MSE estimator.
    ds = tf.data.Dataset.from_tensor_slices((x, x[:, :1, :1, :1])).batch(8)
    calibrate(qmodel, ds, steps=3, estimator="mse")
    with pytest.raises(tfquant.errors.DataError):
        calibrate(qmodel, x[:0])
