"""Property tests of the PTQ transforms: folding and equalization keep the float function,
equalization equalizes, absorption is exact where the ReLU never clips, bias correction removes
each layer's mean shift, AdaRound beats round-to-nearest."""
import numpy as np
import pytest
import tensorflow as tf

import ptq_models
from ptq_models import first_output, rel_error, signature_fn
from tfquant.core import QuantSpec
from tfquant.graph import assign_quantizers, build_function, equalization_chains, fuse_activations, load_graph
from tfquant.ptq import (
    Calibration,
    PTQConfig,
    absorb_high_biases,
    analytic_bias_correction,
    clipped_normal_moments,
    equalize,
    fold_batch_norms,
    input_channel_range,
    layer_output_shift,
    output_channel_range,
    pre_activation_ranges,
    quantized_kernel,
    run_layerwise,
    set_weight_ranges,
)

CONFIG = PTQConfig(progress=False)


def prepared(model):
    graph = load_graph(model)
    fold_batch_norms(graph)
    fuse_activations(graph)
    return graph


def run(graph, x):
    return first_output(build_function(graph)(x))


def calibrated_pre_ranges(graph, x):
    names = [n.name for n in graph.linear_nodes()]
    return pre_activation_ranges(graph, Calibration.of(x, graph.inputs[0]), CONFIG, names)


# ---- BN folding --------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["keras3_dir", "tf_keras_dir", "module_dir"])
def test_bn_folding_keeps_float_outputs(source, request, evaluation):
    path = request.getfixturevalue(source)
    graph = load_graph(path)
    folded = fold_batch_norms(graph)
    assert folded and not [n for n in graph if n.type == "affine"]
    assert all(graph[name].bias is not None for name in folded)     # biases created
    assert all(graph[name].out_stats is not None for name in folded)
    assert rel_error(signature_fn(path)(evaluation), run(graph, evaluation)) < 1e-5


# ---- cross-layer equalization ------------------------------------------------------------
def _assert_equalized(chain, rtol=1e-4):
    for k in range(len(chain.layers) - 1):
        r1 = output_channel_range(chain.layers[k])
        r2 = input_channel_range(chain.layers[k + 1])
        live = (r1 > 1e-3 * r1.max()) & (r2 > 1e-3 * r2.max())
        np.testing.assert_allclose(r1[live], r2[live], rtol=rtol)


@pytest.mark.parametrize("length", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_cle_relu_keeps_outputs_and_equalizes_ranges(length, seed, evaluation):
    graph = prepared(ptq_models.chain_model(seed=seed, activation="relu", length=length))
    before = run(graph, evaluation)
    (chain,) = equalization_chains(graph)
    spread = [output_channel_range(n).max() / np.median(output_channel_range(n)) for n in chain.layers]
    report = equalize(graph, CONFIG.replace(cle_activation_bound=False))
    assert rel_error(before, run(graph, evaluation)) < 1e-5
    _assert_equalized(chain)
    assert any(np.any(s != 1.0) for s in report.scales.values())
    after = [output_channel_range(n).max() / np.median(output_channel_range(n)) for n in chain.layers]
    assert after[0] < spread[0]


def test_cle_triplet_closed_form(evaluation):
    """conv -> depthwise -> conv: the three ranges become cbrt(r1 r2 r3)."""
    graph = prepared(ptq_models.chain_model(seed=3, activation="relu", length=3))
    (chain,) = equalization_chains(graph)
    r1, r2, r3 = (output_channel_range(chain.layers[0]), output_channel_range(chain.layers[1]),
                  input_channel_range(chain.layers[2]))
    equalize(graph, CONFIG.replace(cle_activation_bound=False), max_sweeps=0)
    expected = np.cbrt(r1 * r2 * r3)
    np.testing.assert_allclose(output_channel_range(chain.layers[0]), expected, rtol=1e-5)
    np.testing.assert_allclose(output_channel_range(chain.layers[1]), expected, rtol=1e-5)
    np.testing.assert_allclose(input_channel_range(chain.layers[2]), expected, rtol=1e-5)


def test_cle_relu6_bounded_keeps_the_clip(calibration):
    """ReLU6 kept: channels reaching 6 keep scale 1, the others stay below 6; exact on the data
    the bounds were calibrated on."""
    graph = prepared(ptq_models.chain_model(seed=0, activation="relu6", length=3))
    before = run(graph, calibration)
    pre = calibrated_pre_ranges(graph, calibration)
    original_max = {k: v.max.copy() for k, v in pre.items()}
    report = equalize(graph, CONFIG, pre)
    assert rel_error(before, run(graph, calibration)) < 1e-5
    for name, s in report.scales.items():
        if graph[name].activation != "relu6":
            continue
        m = original_max[name]
        assert np.all(s[m >= 6.0] == 1.0)
        assert np.all(m[m < 6.0] / s[m < 6.0] <= 6.0 * (1 + 1e-6))
    assert any(np.any(s != 1.0) for s in report.scales.values())


def test_cle_relu_policy_replaces_relu6(evaluation):
    graph = prepared(ptq_models.chain_model(seed=0, activation="relu6", length=3))
    report = equalize(graph, CONFIG.replace(relu6_policy="relu", cle_activation_bound=False))
    assert report.relu6_replaced == 2
    assert not [n for n in graph if n.activation == "relu6" or n.type == "relu6"]
    _assert_equalized(equalization_chains(graph)[0])


# ---- high-bias absorption ----------------------------------------------------------------
def test_high_bias_absorption_exact_where_relu_never_clips(calibration):
    graph = prepared(ptq_models.chain_model(seed=0, activation="relu", length=3, high_bias=True))
    before = run(graph, calibration)
    pre = calibrated_pre_ranges(graph, calibration)
    (chain,) = equalization_chains(graph)
    dw = chain.layers[1]
    assert pre[dw.name].min.min() > 0          # this ReLU never clips on the data
    absorbed = absorb_high_biases(graph, CONFIG, pre)
    assert absorbed == {dw.name: dw.out_channels}          # into the 1x1 conv; not through padding
    assert rel_error(before, run(graph, calibration)) < 1e-5
    after = calibrated_pre_ranges(graph, calibration)[dw.name]
    np.testing.assert_allclose(after.min, 0.0, atol=1e-4)   # the high bias is gone


def test_high_bias_absorption_data_free_uses_bn(calibration):
    graph = prepared(ptq_models.chain_model(seed=0, activation="relu", length=3, high_bias=True))
    dw = equalization_chains(graph)[0].layers[1]
    beta, gamma = dw.out_stats.mean.copy(), dw.out_stats.std.copy()
    absorbed = absorb_high_biases(graph, CONFIG, data_free=True)
    assert absorbed[dw.name] == int(np.sum(beta - 3 * gamma > 0))
    np.testing.assert_allclose(dw.out_stats.mean, np.minimum(beta, 3 * gamma), rtol=1e-6)


# ---- bias correction ---------------------------------------------------------------------
def _plan(graph, per_channel=False, bits=8):
    plan = assign_quantizers(graph)
    set_weight_ranges(graph, plan, per_channel, "minmax")
    if bits != 8:
        for node in graph.linear_nodes():
            plan.weight_specs[node.name] = QuantSpec.weight(bits=bits, per_channel=per_channel and node.type != "matmul")
    return plan


def test_empirical_bias_correction_removes_each_layers_mean_shift(calibration):
    graph = prepared(ptq_models.keras3_model(softmax=False))
    plan = _plan(graph, per_channel=False)
    reference = graph.copy()
    before = layer_output_shift(graph, plan, calibration)
    assert max(np.abs(v).max() for v in before.values()) > 1e-2
    run_layerwise(graph, plan, calibration, CONFIG, bias_correction=True, adaround=False)
    after = layer_output_shift(graph, plan, calibration, reference=reference)
    for name, shift in after.items():
        assert np.abs(shift).max() < 1e-5 + 1e-3 * np.abs(before[name]).max(), name


def test_clipped_normal_moments_match_sampling():
    rng = np.random.default_rng(0)
    mu, sd = np.array([-1.0, 0.0, 0.5, 3.0, 5.5]), np.array([0.5, 1.0, 2.0, 1.5, 1.0])
    z = rng.standard_normal((400_000, 5)) * sd + mu
    for low, high in ((0.0, np.inf), (0.0, 6.0)):
        m, s = clipped_normal_moments(mu, sd, low, high)
        y = np.clip(z, low, high)
        np.testing.assert_allclose(m, y.mean(0), atol=6e-3)
        np.testing.assert_allclose(s, y.std(0), atol=6e-3)


def test_analytic_bias_correction_removes_the_expected_shift():
    """With inputs distributed as the batch norm says (clipped normal through the ReLU), the
    corrected layer's mean output equals the float layer's."""
    graph = prepared(ptq_models.chain_model(seed=0, activation="relu", length=3))
    plan = _plan(graph, per_channel=False, bits=4)
    l1, l2 = equalization_chains(graph)[0].layers[1:]
    kernel, bias = l2.kernel.copy(), l2.bias.copy()
    corrections = analytic_bias_correction(graph, plan)
    assert l2.name in corrections and l1.name in corrections
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((200_000, l1.out_channels)) * l1.out_stats.std + l1.out_stats.mean, 0.0)
    k2 = kernel.reshape(kernel.shape[2], kernel.shape[3])
    kq = quantized_kernel(l2, plan).reshape(k2.shape)
    float_mean = (x @ k2 + bias).mean(0)
    uncorrected = (x @ kq + bias).mean(0)
    corrected = (x @ kq + l2.bias).mean(0)
    assert np.abs(uncorrected - float_mean).max() > 10 * np.abs(corrected - float_mean).max()


# ---- AdaRound ----------------------------------------------------------------------------
def test_adaround_beats_round_to_nearest_on_every_layer(calibration):
    graph = prepared(ptq_models.keras3_model(softmax=False))
    plan = _plan(graph, per_channel=True, bits=4)
    config = CONFIG.replace(adaround_iterations=300, adaround_rows=512, adaround_batch_size=16)
    report = run_layerwise(graph, plan, calibration[:32], config, bias_correction=False, adaround=True)
    assert len(report.adaround) == len(graph.linear_nodes())
    for name, r in report.adaround.items():
        assert r.loss_adaround < r.loss_nearest, (name, r)
    # the learned kernels are on the 4-bit grid: quantizing them again changes nothing
    for node in graph.linear_nodes():
        np.testing.assert_allclose(quantized_kernel(node, plan), node.kernel, rtol=0, atol=1e-6)


def test_adaround_longer_runs_reconstruct_better_than_a_short_run(calibration):
    """Longer runs reconstruct each layer better: on every layer 1,000 iterations are no worse
    than 50, and better in total (the default, 200, is a time budget: PTQConfig's docstring)."""
    model = ptq_models.keras3_model(softmax=False)
    losses = {}
    for iterations in (50, 1000):
        graph = prepared(model)
        plan = _plan(graph, per_channel=True, bits=4)
        config = CONFIG.replace(adaround_iterations=iterations, adaround_rows=512)
        report = run_layerwise(graph, plan, calibration[:32], config, bias_correction=False, adaround=True)
        losses[iterations] = {name: r.loss_adaround for name, r in report.adaround.items()}
    short, default = losses.values()
    assert default.keys() == short.keys() and len(short) == len(graph.linear_nodes())
    for name in short:
        assert default[name] <= short[name] * 1.05, (name, short[name], default[name])
    assert sum(default.values()) < 0.95 * sum(short.values()), (short, default)


def test_adaround_beats_round_to_nearest_on_held_out_layer_output(calibration, evaluation):
    """The stem's learned 4-bit (per-tensor) kernel against round-to-nearest, measured
    independently of AdaRound's own loss: the layer's output through the real convolution
    (linear_op, stride 2, SAME padding) on whole held-out images (measured: 0.94 of nearest's MSE)."""
    from tfquant.core.op_rules import linear_forward
    from tfquant.graph import linear_op
    from tfquant.ptq.adaround import adaround_layer

    graph = prepared(ptq_models.keras3_model(softmax=False))
    plan = _plan(graph, per_channel=False, bits=4)
    stem = graph.linear_nodes()[0]
    assert stem.type == "conv2d" and stem.kernel.shape[:2] == (3, 3)
    op, bias = linear_op(stem), tf.constant(stem.bias)

    def out(x, kernel):
        return np.asarray(linear_forward(op, tf.constant(x), tf.constant(kernel), bias, stem.activation))

    lo, hi = plan.weight_ranges[stem.name]
    spec = plan.weight_specs[stem.name]
    learned, result = adaround_layer(stem, calibration, out(calibration, stem.kernel), spec, lo, hi,
                                     CONFIG.replace(adaround_iterations=300), np.random.default_rng(0))
    nearest = quantized_kernel(stem, plan)
    target = out(evaluation, stem.kernel)
    mse_learned = np.mean((out(evaluation, learned) - target) ** 2)
    mse_nearest = np.mean((out(evaluation, nearest) - target) ** 2)
    assert result.flipped > 0.01
    assert mse_learned < 0.97 * mse_nearest, (mse_learned, mse_nearest)


def test_adaround_compiles_once_per_kind_of_layer(calibration):
    """Layers of different shapes share one trace of the compiled step (no retracing), and the
    rounding converges (every h(V) at 0 or 1) so that the loop stops early."""
    from tfquant.ptq import adaround

    adaround._CACHE.clear()
    graph = prepared(ptq_models.keras3_model(softmax=False))
    plan = _plan(graph, per_channel=True, bits=4)
    config = CONFIG.replace(adaround_iterations=400, adaround_lr=0.05)
    report = run_layerwise(graph, plan, calibration[:32], config, bias_correction=False, adaround=True)
    shapes = {graph[name].kernel.shape for name in report.adaround}
    assert len(shapes) >= 4 and len(adaround._CACHE) < len(shapes)
    assert all(fn.traces == 2 for fn in adaround._CACHE.values())     # one chunk trace, one loss trace
    assert any(r.iterations < 400 and r.soft <= 1e-3 for r in report.adaround.values()), report.adaround


def test_adaround_honours_ctrl_c_within_a_second(calibration):
    """Ctrl-C during a long optimisation ends it between compiled chunks with tfquant.Interrupted."""
    import _thread
    import signal
    import threading
    import time

    import tfquant
    from tfquant.ptq.adaround import adaround_layer

    graph = prepared(ptq_models.keras3_model(softmax=False))
    plan = _plan(graph, per_channel=True)
    node = graph.linear_nodes()[0]
    lo, hi = plan.weight_ranges[node.name]
    target = np.asarray(tf.nn.relu6(tf.nn.conv2d(calibration, node.kernel, 2, "SAME") + node.bias))
    spec = plan.weight_specs[node.name]

    def run(iterations):
        adaround_layer(node, calibration, target, spec, lo, hi,
                       CONFIG.replace(adaround_iterations=iterations, adaround_converged=None),
                       np.random.default_rng(0))

    for delay in (0.5, 1.0):       # early (maybe while TF traces the step), then mid-run
        sent = []
        timer = threading.Timer(delay, lambda: (sent.append(time.perf_counter()), _thread.interrupt_main(signal.SIGINT)))
        started = time.perf_counter()
        timer.start()
        try:
            with pytest.raises(tfquant.Interrupted, match="Ctrl-C"):
                run(10**7)
        finally:
            timer.cancel()
        assert sent and time.perf_counter() - started < 120      # not the 10**7 steps
        assert time.perf_counter() - sent[0] < 1.0                # acted on at the next chunk
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler     # the handler is restored


def test_deferred_interrupt_records_the_first_ctrl_c_and_raises_on_the_second():
    import os
    import signal

    from tfquant.interrupt import deferred_interrupt

    with deferred_interrupt() as pressed:
        assert not pressed()
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):       # the handler runs at the next bytecode of the main thread
            pass
        assert pressed()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _ConvNode:
    """The fields of a graph Node that `layer_rows` reads."""

    def __init__(self, type_, kernel, strides, padding, dilations=(1, 1), explicit=None):
        self.type, self.kernel = type_, kernel
        self.attrs = dict(strides=[1, *strides, 1], dilations=[1, *dilations, 1], padding=padding,
                          explicit_paddings=explicit or [0] * 8)


@pytest.mark.parametrize("type_, kernel_shape, strides, padding, dilations, x_shape", [
    ("conv2d", (3, 3, 3, 8), (2, 2), "SAME", (1, 1), (3, 17, 16, 3)),       # odd / even sizes, stride 2
    ("conv2d", (3, 3, 4, 5), (1, 1), "EXPLICIT", (2, 2), (2, 12, 11, 4)),   # dilated, explicit pads
    ("depthwise", (5, 5, 6, 1), (2, 2), "SAME", (1, 1), (2, 15, 14, 6)),
    ("depthwise", (3, 3, 4, 1), (1, 1), "VALID", (1, 1), (2, 9, 8, 4)),
])
def test_layer_rows_are_the_convolutions_input_windows(type_, kernel_shape, strides, padding, dilations, x_shape):
    """Every pooled row times the kernel is the TF convolution's output at that pixel (padding
    read as zeros), and its target is the given output there."""
    from tfquant.ptq.adaround import layer_rows

    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(np.float32)
    kernel = rng.standard_normal(kernel_shape).astype(np.float32)
    explicit = [0, 0, 1, 2, 2, 1, 0, 0] if padding == "EXPLICIT" else None
    node = _ConvNode(type_, kernel, strides, padding, dilations, explicit)
    pad = [[0, 0], [1, 2], [2, 1], [0, 0]] if explicit else padding
    if type_ == "depthwise":
        y = tf.nn.depthwise_conv2d(x, kernel, [1, *strides, 1], pad, dilations=dilations)
    else:
        y = tf.nn.conv2d(x, kernel, [1, *strides, 1], pad, dilations=[1, *dilations, 1])
    y = np.asarray(y)
    target = y + 1.0             # any per-pixel target: checked to be the one of the same pixel
    xs, ts = layer_rows(node, x, target, np.random.default_rng(1), max_rows=40)
    assert xs.shape[0] == ts.shape[0] == min(40, y[..., 0].size)
    if type_ == "depthwise":
        out = np.einsum("rtc,tc->rc", xs, kernel.reshape(-1, kernel_shape[2]))
    else:
        out = xs @ kernel.reshape(-1, kernel_shape[-1])
    np.testing.assert_allclose(out, ts - 1.0, rtol=0, atol=2e-5)
    assert np.all(xs == 0.0, axis=tuple(range(1, xs.ndim))).sum() == 0     # no row is all padding


def test_adaround_large_kernel_runs_under_xla_in_short_chunks():
    """A dense layer at XLA_WEIGHTS weights takes the XLA step, in chunks of fewer steps (so that
    Ctrl-C lands within a second), and still beats round-to-nearest on its own data."""
    from tfquant.core.op_rules import linear_forward
    from tfquant.ptq import adaround

    rng = np.random.default_rng(0)
    k_in = 1024
    kernel = (rng.standard_normal((k_in, adaround.XLA_WEIGHTS // k_in)) / 32).astype(np.float32)
    node = _ConvNode("matmul", kernel, (1, 1), "VALID")
    node.name, node.activation, node.bias, node.out_channels = "dense", None, None, kernel.shape[1]
    x = rng.standard_normal((48, k_in)).astype(np.float32)
    target = np.asarray(linear_forward(tf.matmul, tf.constant(x), tf.constant(kernel), None, None))
    spec = QuantSpec(bits=4, symmetric=True, narrow_range=True, per_channel=True)
    hi = np.abs(kernel).max(axis=0)
    adaround._CACHE.clear()
    learned, result = adaround.adaround_layer(node, x, target, spec, -hi, hi, CONFIG.replace(adaround_iterations=20),
                                              np.random.default_rng(0))
    assert [key[6] for key in adaround._CACHE] == [True]           # the compiled step is XLA's
    assert adaround.CHUNK_WEIGHTS // kernel.size < adaround.CHUNK_STEPS
    assert result.iterations == 20 and result.loss_adaround < result.loss_nearest, result


@pytest.mark.parametrize("form, fused", [
    ("keras", True),           # x * (relu6(x + 3) / 6): Keras' hard_silu
    ("product_first", True),   # (x * relu6(x + 3)) * (1 / 6)
    ("offset_2", False),       # x * (relu6(x + 2) / 6): not hard-swish
    ("gate_read_twice", False),   # relu6(x + 3) / 6 also read by another op: kept as three ops
])
def test_fuse_hard_swish_matches_the_pattern_only(form, fused):
    """`fuse_hard_swish` replaces x * relu6(x + 3) / 6 after a conv by one hard_swish node (TFLite's
    HARD_SWISH), in both orders of the products, and nothing else; the float function is kept."""
    import tensorflow as tf

    from tfquant.graph import fuse_hard_swish

    kernel = tf.constant(np.random.default_rng(0).normal(0, 1, (3, 3, 3, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
    def f(x):
        y = tf.nn.conv2d(x, kernel, 1, "SAME")
        if form == "product_first":
            return y * tf.nn.relu6(y + 3.0) * (1.0 / 6.0)
        gate = tf.nn.relu6(y + (2.0 if form == "offset_2" else 3.0)) / 6.0
        return y * gate + gate if form == "gate_read_twice" else y * gate

    graph = load_graph(f)
    x = np.random.default_rng(1).normal(0, 2, (4, 8, 8, 3)).astype(np.float32)
    before = run(graph, x)
    assert fuse_hard_swish(graph) == int(fused)
    types = [n.type for n in graph]
    assert ("hard_swish" in types) == fused and ("relu6" in types) != fused
    np.testing.assert_allclose(run(graph, x), before, rtol=1e-5, atol=1e-5)


def test_adaround_qdrop_mixes_the_float_input_into_each_step(calibration):
    """QDrop's input mix: at probability 1 every step reads the float input, so the stem learns
    exactly the rounding it learns from the float input alone, whatever the quantized input
    holds; at 0.5 the noisy input changes the rounding. Without the float input: a clear error."""
    from tfquant.core.op_rules import linear_forward
    from tfquant.graph import linear_op
    from tfquant.ptq.adaround import adaround_layer

    graph = prepared(ptq_models.keras3_model(softmax=False))
    plan = _plan(graph, per_channel=True, bits=4)
    stem = graph.linear_nodes()[0]
    x = calibration[:16]
    target = np.asarray(linear_forward(linear_op(stem), tf.constant(x), tf.constant(stem.kernel),
                                       tf.constant(stem.bias), stem.activation))
    noisy = (x + np.random.default_rng(1).normal(0.0, 0.02, x.shape)).astype(np.float32)
    lo, hi = plan.weight_ranges[stem.name]
    spec, config = plan.weight_specs[stem.name], CONFIG.replace(adaround_iterations=200)

    def learn(x_quant, drop, x_float=None):
        return adaround_layer(stem, x_quant, target, spec, lo, hi, config.replace(adaround_qdrop=drop),
                              np.random.default_rng(0), x_float=x_float)

    plain, r_plain = learn(x, 0.0)
    from_float, r_float = learn(noisy, 1.0, x)
    mixed, _ = learn(noisy, 0.5, x)
    nearest = quantized_kernel(stem, plan)
    assert r_plain.flipped > 0.01 and r_float.flipped > 0.01      # neither fell back to nearest
    np.testing.assert_array_equal(from_float, plain)
    assert np.mean(mixed != plain) > 0.01 and np.mean(mixed != nearest) > 0.01
    with pytest.raises(ValueError, match="x_float"):
        learn(noisy, 0.5)
    with pytest.raises(Exception, match="adaround_qdrop"):
        PTQConfig(adaround_qdrop=1.5)


@pytest.mark.slow
def test_adaround_output_quant_reaches_the_loss_only_with_quantized_activations(keras3_dir, calibration):
    """adaround_output_quant puts each layer's int8 output grid into AdaRound's loss: it changes
    the learned rounding when the layer-by-layer steps quantize activations, and changes nothing
    when they do not (there is no output range to quantize to then)."""
    import tfquant

    def kernels(**options):
        sim = tfquant.ptq(keras3_dir, calibration[:32], progress=False, steps=("adaround",),
                          adaround_iterations=60, **options)
        return {n.name: n.kernel for n in sim.graph.linear_nodes()}

    plain, quantized = kernels(), kernels(adaround_output_quant=True)
    changed = [name for name in plain if not np.array_equal(plain[name], quantized[name])]
    assert changed, "the output grid changed no layer's rounding"
    weights_only = dict(layerwise_activations=False)
    plain, quantized = kernels(**weights_only), kernels(adaround_output_quant=True, **weights_only)
    assert all(np.array_equal(plain[name], quantized[name]) for name in plain)
