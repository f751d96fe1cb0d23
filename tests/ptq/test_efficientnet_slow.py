"""EfficientNet-Lite0 (ImageNet weights) through tfquant.ptq: agreement with the float model on
crops of real photos. Slow (minutes on two cores): run with `pytest -m slow`."""
import time

import numpy as np
import pytest

import tfquant

pytestmark = pytest.mark.slow

N_CAL, N_EVAL = 64, 200
INPUT_RANGE = (-127.0 / 128.0, 1.0)      # (x - 127) / 128 of uint8 pixels


@pytest.fixture(scope="module")
def effnet():
    lite0 = pytest.importorskip("benchmarks.models.efficientnet_lite0")
    photos = pytest.importorskip("benchmarks.data.photos")
    try:
        path = lite0.cached_saved_model()
        cal_u8, eval_u8 = photos.photo_crops(N_CAL, N_EVAL, seed=0)
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"EfficientNet-Lite0 benchmark data unavailable: {e}")
    import tensorflow as tf

    cal, evaluation = lite0.preprocess(cal_u8), lite0.preprocess(eval_u8)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    key = list(fn.structured_input_signature[1])[0]
    logits = np.concatenate([list(fn(**{key: tf.constant(evaluation[i:i + 25])}).values())[0].numpy()
                             for i in range(0, N_EVAL, 25)])
    return path, cal, evaluation, logits


def agreement(sim, evaluation, float_logits):
    out = np.concatenate([np.asarray(list(sim(evaluation[i:i + 25]).values())[0])
                          for i in range(0, len(evaluation), 25)])
    return float(np.mean(out.argmax(-1) == float_logits.argmax(-1)))


@pytest.mark.parametrize("name, calibrated, options, target", [
    ("per-channel", True, {}, 0.95),
    ("per-tensor", True, {"per_channel": False}, 0.85),
    ("data-free", False, {"input_range": INPUT_RANGE}, 0.86),
])
def test_efficientnet_lite0_agreement(effnet, name, calibrated, options, target):
    path, cal, evaluation, logits = effnet
    start = time.perf_counter()
    sim = tfquant.ptq(path, cal if calibrated else None, progress=False, **options)
    seconds = time.perf_counter() - start
    score = agreement(sim, evaluation, logits)
    print(f"\n{name}: top-1 agreement {score:.3f} in {seconds:.0f} s\n{sim.report.summary()}")
    assert seconds < 120
    assert score >= target
    report = tfquant.inspect(sim.to_tflite())
    assert report.float_ops == []


def test_convert_command_on_efficientnet_lite0(effnet, tmp_path):
    """tfquant-convert on the SavedModel with a .npy of preprocessed crops: fully int8, per-channel
    weights, the verify table and the summary printed."""
    import os
    import subprocess
    import sys

    path, cal, evaluation, _ = effnet
    npy = tmp_path / "cal.npy"
    np.save(npy, cal)
    out = tmp_path / "lite0.tflite"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run([sys.executable, "-m", "tools.convert", "--saved_model", path, "--output", str(out),
                           "--calibration", str(npy), "--noprogress", "--verify"],
                          capture_output=True, text=True, cwd=root, timeout=1800,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=root))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "verify:" in proc.stdout and "reference" in proc.stdout
    report = tfquant.inspect(str(out))
    assert [op.op for op in report.float_ops if op.op not in ("QUANTIZE", "DEQUANTIZE")] == []
    convs = report.ops_of_type("CONV_2D") + report.ops_of_type("DEPTHWISE_CONV_2D")
    assert len(convs) == 49 and all(report.tensors[op.inputs[1]].per_channel for op in convs)
    assert all(report.tensors[op.inputs[1]].dtype == "INT8" for op in convs)
