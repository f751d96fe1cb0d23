"""tfquant.debug: the white paper's workflow finds a planted fault, on PTQ and QAT alike."""
import os
import sys

import keras
import numpy as np
import pytest

import tfquant
import tfquant.debug
from tfquant.export.verify import sqnr_db

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "keras"))
import qat_models  # noqa: E402

L = keras.layers
SHAPE = (8, 8, 3)


def data(n, seed):
    return np.random.default_rng(seed).uniform(-1, 1, (n, *SHAPE)).astype(np.float32)


def planted_fault_model() -> keras.Model:
    """conv -> 'spiky' 1x1 conv + ReLU whose channel 0 fires rarely and 300x larger than the rest
    (its consumer reads it with a small weight, so the float output hardly depends on it) ->
    1x1 conv -> pooling -> dense. A per-tensor int8 grid on 'spiky' wastes its 256 levels on the
    spikes and wipes out the other channels."""
    keras.utils.set_random_seed(3)
    inp = keras.Input(SHAPE)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    spiky = L.Conv2D(8, 1, activation="relu", name="spiky")(x)
    x = L.Conv2D(8, 1, activation="relu", name="c3")(spiky)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, L.Dense(5, name="head")(x))
    pre = keras.Model(inp, model.get_layer("c1").output)(data(256, 0)).numpy()
    k, b = model.get_layer("spiky").get_weights()
    z = pre.reshape(-1, 8) @ k[0, 0, :, 0]
    threshold = np.percentile(z, 99.5)                  # fires on 0.5% of the positions
    k[..., 0] *= 300.0
    b[0] = -300.0 * threshold
    model.get_layer("spiky").set_weights([k, b])
    k3, b3 = model.get_layer("c3").get_weights()
    k3[0, 0, 0, :] *= 0.003                            # the consumer barely reads the spikes
    model.get_layer("c3").set_weights([k3, b3])
    return model


@pytest.fixture(scope="module")
def ptq_diagnosis():
    model = planted_fault_model()
    result = tfquant.ptq(model, data(256, 0), progress=False, steps=("bias_correction",))
    return model, result, tfquant.debug.diagnose(result, data(128, 1))


def test_planted_fault_is_ranked_first_and_float_fixes_it(ptq_diagnosis, tmp_path):
    model, result, d = ptq_diagnosis
    # every quantizer bypassed against the model as given: bias correction moved the biases of the
    # float path (19.8 dB on 32 samples; with steps=() it is identical, inf)
    assert 10.0 < d.fp32_sanity_db < 40.0, d.fp32_sanity_db
    # the quantized model against the model as given (what agreement is measured to), not only
    # against the bypassed path
    x_diag = data(128, 1)
    assert d.quantized_vs_given_db == pytest.approx(
        sqnr_db(np.asarray(model(x_diag)), np.asarray(result(x_diag))), abs=0.3)
    assert d.quantized_vs_given_db != pytest.approx(d.quantized_db, abs=0.05)
    assert d.suspects and "spiky" in d.suspects[0].layer
    assert "outliers" in d.suspects[0].cause
    assert d.activations_only_db < d.weights_only_db    # the damage is on the activation side
    spiky = [t for t in d.tensors if t.outlier_ratio > 10]
    assert spiky and spiky[0].entry == result.plan.quantizer_of(
        [n for n in result.graph.linear_nodes() if "spiky" in n.name][0].output())
    assert d.fixed_db > d.quantized_db + 6 and d.fixed_agreement >= d.quantized_agreement
    assert d.tflite_exact == 1.0 and len(d.tensor_fidelity) >= 3     # the flatbuffer, tensor by tensor
    # the same fix, exported: the flatbuffer agrees with float better than the all-int8 one
    x = data(256, 2)
    y = np.asarray(model(x))
    plan = result.plan.copy()
    plan.set_precision(d.fix_floats, "float")

    def agreement(tflite):
        from tfquant.export.interpreter import TFLiteRunner
        out = TFLiteRunner(tflite, kernels="reference").run([x])[0]
        return float(np.mean(np.argmax(out, -1) == np.argmax(y, -1)))
    fixed, plain = tfquant.to_tflite(result, plan=plan), result.to_tflite()
    assert agreement(fixed) > agreement(plain)
    assert agreement(fixed) >= 0.95
    path = d.write_report(tmp_path / "report")
    text = open(path).read()
    assert "spiky" in text.split("## Suspects")[1].splitlines()[2]
    for png in ("layer_sqnr.png", "worst_ranges.png", "weight_ranges.png"):
        assert os.path.getsize(tmp_path / "report" / png) > 1000


def test_diagnose_traces_nothing_per_layer_and_keeps_only_live_tensors(monkeypatch):
    """The sensitivity runs (two plans per layer) are eager and batched: no tf.function is traced
    for them (one per plan used to cost a trace, a graph with every weight in it, and memory that
    grew with the number of layers: EfficientNet-Lite0 ran out of 14.5 GB), and a run holds only
    the tensors still to be read."""
    import tensorflow as tf

    from tfquant.graph import emit

    model = planted_fault_model()
    result = tfquant.ptq(model, data(64, 0), progress=False, steps=())
    traced = []
    run = emit.Emitter.run

    def counting_run(self, inputs, fetch=None):
        if not tf.executing_eagerly():
            traced.append(self.mode)
        return run(self, inputs, fetch)

    monkeypatch.setattr(emit.Emitter, "run", counting_run)
    d = tfquant.debug.diagnose(result, data(20, 1), check_tflite=False, progress=False, batch_size=8)
    assert len(d.layers) >= 4 and d.suspects and "spiky" in d.suspects[0].layer
    assert traced == []
    monkeypatch.undo()
    # fetch: only the asked tensors come back, with the values of the full run
    x = tf.constant(data(4, 2))
    out = result.graph.outputs[0][1]
    full = emit.Emitter(result.graph, result.plan, "quant").run([x])
    only = emit.Emitter(result.graph, result.plan, "quant").run([x], fetch=[out])
    assert len(full) > 5 and list(only) == [out]
    assert np.array_equal(np.asarray(only[out]), np.asarray(full[out]))


def test_qat_model_is_diagnosed_by_the_same_code(ptq_diagnosis):
    model = planted_fault_model()
    qmodel = tfquant.quantize_model(model)
    tfquant.keras.calibrate(qmodel, data(256, 0))
    d = tfquant.debug.diagnose(qmodel, data(128, 1), float_model=model)
    # quantizers bypassed, the QAT model computes exactly the Keras float model
    assert d.route == "QAT" and d.fp32_sanity_db == float("inf")
    assert d.quantized_vs_given_db == pytest.approx(d.quantized_db)   # its float model is the bypassed path
    # the flatbuffer against the exact simulation, intermediate tensors included (layer by layer,
    # eagerly in exact mode: not the fake-quant trace, which reads 1-LSB differences as faults)
    assert d.tflite_exact == 1.0 and len(d.tensor_fidelity) >= 4
    assert all(exact == 1.0 for _, exact, _ in d.tensor_fidelity), d.tensor_fidelity
    assert d.suspects[0].layer == "spiky" and d.fix_floats == ["spiky/output"]
    assert d.fixed_db > d.quantized_db + 6
    # the QAT model's own ranges are untouched by the debugger
    before = tfquant.keras.quantizer_state(qmodel)
    tfquant.debug.diagnose(qmodel, data(32, 1), try_fix=False)
    assert tfquant.keras.quantizer_state(qmodel) == before


def test_diagnose_a_float_model_and_errors():
    ex = qat_models.train_and_export(qat_models.convnet)
    d = tfquant.debug.diagnose(ex.model, ex.x_test[:32])          # a float Keras model: PTQ first
    assert d.route == "PTQ" and len(d.layers) >= 5
    with pytest.raises(tfquant.DataError, match="NaN"):
        tfquant.debug.diagnose(ex.qmodel, np.full((4, 16, 16, 3), np.nan, np.float32))
    with pytest.raises(tfquant.DataError, match="batch"):
        tfquant.debug.diagnose(ex.qmodel, np.zeros((0, 16, 16, 3), np.float32))


def test_automatic_mixed_precision_finds_the_planted_fault(ptq_diagnosis):
    _, result, d = ptq_diagnosis
    x = data(128, 2)
    # int16 first: 'spiky' and its reader's output on 16-bit grids (so that the reader reads the
    # spikes in int16), no weight bytes added
    wide = tfquant.debug.mixed_precision(result, x, target_sqnr_db=30.0, measure_latency=False)
    spiky, reader = d.fix_floats[0], result.plan.quantizer_of(
        [n for n in result.graph.linear_nodes() if "c3" in n.name][0].output())
    assert wide.met and wide.floats == [] and wide.int16 == [spiky, reader] and wide.sqnr_db >= 30.0
    assert sorted(wide.plan.non_int8()) == sorted(wide.int16) and wide.trials[0].precision == "int16"
    assert wide.trials[0].weight_bytes == 0 and wide.trials[0].accepted
    assert {t.dtype for t in tfquant.inspect(wide.tflite).tensors if not t.is_constant} >= {"INT16", "INT8"}
    # float only: the same tensor, in float
    mp = tfquant.debug.mixed_precision(result, x, target_sqnr_db=30.0, precisions=("float",))
    assert mp.met and mp.sqnr_db >= 30.0 > mp.int8_sqnr_db + 10       # measured on the flatbuffer
    assert mp.agreement >= mp.int8_agreement
    assert mp.floats == d.fix_floats                     # one tensor, the planted one
    assert mp.plan.non_int8() == mp.floats
    # its figures are against the model as given (not the bias-corrected float graph), and they
    # hold on other images: the bias correction was re-run for the mixed plan
    from tfquant.export.interpreter import TFLiteRunner
    from tfquant.export.verify import sqnr_db

    model = ptq_diagnosis[0]
    assert sqnr_db(np.asarray(model(x)), TFLiteRunner(mp.tflite, kernels="default").run([x])[0]) == \
        pytest.approx(mp.sqnr_db, abs=1e-6)
    other = data(256, 9)
    y_other = np.asarray(model(other))
    corrected = sqnr_db(y_other, TFLiteRunner(mp.result.to_tflite(), kernels="default").run([other])[0])
    stale = sqnr_db(y_other, TFLiteRunner(tfquant.to_tflite(result, plan=mp.plan), kernels="default").run([other])[0])
    assert corrected >= 30.0 and corrected > stale + 10, (corrected, stale)
    assert mp.result.verify(other[:16], intermediate_samples=0).exact_fraction == 1.0
    report = tfquant.inspect(mp.tflite)
    float_ops = [o.op for o in report.float_ops if o.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert float_ops == ["CONV_2D", "CONV_2D"]           # 'spiky' and its consumer, nothing else
    with pytest.raises(tfquant.SpecError, match="needs a target"):
        tfquant.debug.mixed_precision(result, x)


def twin_fault_model() -> keras.Model:
    """Two branches that compute the same function: each a copy of the planted 'spiky' layer and
    its consumer; branch B's consumer is a 5x5 conv whose kernel is zero but for the centre tap
    (the same function as branch A's 1x1 conv, 25x the weight bytes). B is built first."""
    base = planted_fault_model()
    keras.utils.set_random_seed(3)
    inp = keras.Input(SHAPE)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    branches = {}
    for tag in ("b", "a"):
        s = L.Conv2D(8, 1, activation="relu", name=f"spiky_{tag}")(x)
        size = 5 if tag == "b" else 1
        branches[tag] = L.Conv2D(8, size, padding="same", activation="relu", name=f"c3_{tag}")(s)
    y = L.GlobalAveragePooling2D()(L.Add()([branches["b"], branches["a"]]))
    model = keras.Model(inp, L.Dense(5, name="head")(y))
    model.get_layer("c1").set_weights(base.get_layer("c1").get_weights())
    model.get_layer("head").set_weights(base.get_layer("head").get_weights())
    k3, b3 = base.get_layer("c3").get_weights()
    for tag in ("a", "b"):
        model.get_layer(f"spiky_{tag}").set_weights(base.get_layer("spiky").get_weights())
    model.get_layer("c3_a").set_weights([k3, b3])
    wide = np.zeros((5, 5, 8, 8), np.float32)
    wide[2, 2] = k3[0, 0]
    model.get_layer("c3_b").set_weights([wide, b3])
    return model


@pytest.fixture(scope="module")
def twin_result():
    return tfquant.ptq(twin_fault_model(), data(256, 0), progress=False, steps=())


def _spiky_quantizer(result, tag):
    node = [n for n in result.graph.linear_nodes() if f"spiky_{tag}" in n.name][0]
    return result.plan.quantizer_of(node.output())


def test_mixed_precision_picks_the_cheaper_of_two_equally_good_tensors(twin_result):
    result = twin_result
    qa, qb = _spiky_quantizer(result, "a"), _spiky_quantizer(result, "b")
    x = data(128, 2)
    mp = tfquant.debug.mixed_precision(result, x, target_sqnr_db=60.0, max_float=1, precisions=("float",))
    blind = tfquant.debug.mixed_precision(result, x, target_sqnr_db=60.0, max_float=1, db_per_mb=0.0,
                                          precisions=("float",))
    # equally good: the same simulated gain, and each alone lifts the flatbuffer by the same amount
    ta, tb = mp.trials[0], blind.trials[0]
    assert (ta.quantizer, tb.quantizer) == (qa, qb)
    assert ta.simulated_gain_db == pytest.approx(tb.simulated_gain_db, abs=1e-3) and ta.simulated_gain_db > 2
    assert ta.sqnr_db == pytest.approx(tb.sqnr_db, abs=1e-3)
    # the ops 'spiky' feeds go float: 3 bytes more per kernel weight (1x1x8x8 + 1x1x8x8 vs 1x1x8x8 + 5x5x8x8)
    assert (ta.weight_bytes, tb.weight_bytes) == (3 * 128, 3 * 1664)
    assert mp.floats == [qa] and blind.floats == [qb]
    assert len(mp.tflite) < len(blind.tflite) and ta.size_bytes == len(mp.tflite)
    assert mp.int8_size == len(result.to_tflite()) < len(mp.tflite)
    float_ops = [o.op for o in tfquant.inspect(mp.tflite).float_ops if o.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert float_ops == ["CONV_2D", "CONV_2D"]
    assert ta.latency_ms > 0 and mp.latency_ms > 0 and mp.int8_latency_ms > 0


def test_mixed_precision_refuses_what_costs_too_much(twin_result):
    result, x = twin_result, data(128, 2)
    slow = tfquant.debug.mixed_precision(result, x, target_sqnr_db=60.0, max_latency_ratio=0.5, patience=2,
                                         precisions=("float",))
    assert slow.floats == [] and slow.tflite == result.to_tflite() and not slow.met
    assert len(slow.trials) == 2 and all(not t.accepted and "latency" in t.reason for t in slow.trials)
    assert slow.stopped == "2 candidates in a row refused"
    # a byte price above what the twin branches gain: nothing is worth keeping in float
    dear = tfquant.debug.mixed_precision(result, x, target_sqnr_db=60.0, db_per_mb=1e5, measure_latency=False,
                                         precisions=("float",))
    assert dear.floats == [] and dear.trials == [] and dear.latency_ms is None


def test_gain_noise_resamples_groups():
    from tfquant.debug.mixed_precision import gain_noise_db

    ref = np.zeros((4, 3))
    before = np.ones((4, 3))
    # the same gain in every group: no noise, whatever is resampled
    assert gain_noise_db(ref, before, 0.5 * before, np.array([0, 0, 1, 1])) == 0.0
    # group 0 halves its error (+3.01 dB), group 1 keeps it: resampling the two groups gives
    # +3.01 dB (1/4), 0 dB (1/4) or +1.25 dB (1/2), a standard deviation of 1.072 dB
    after = before.copy()
    after[:2] *= np.sqrt(0.5)
    assert gain_noise_db(ref, before, after, np.array([0, 0, 1, 1]), resamples=20000) == pytest.approx(1.072, abs=0.02)
    assert gain_noise_db(ref, before, after, np.array([0, 0, 0, 0])) == 0.0       # one group
