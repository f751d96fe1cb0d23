"""Bad input gets a clear tfquant error, never a stray traceback from deep inside TensorFlow."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import ptq_models
import tfquant
from test_convert_cli import check_summary, summary_of
from tfquant.errors import DataError, ModelFileError, SpecError, TFQuantError

FAST = dict(progress=False)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_not_a_saved_model(tmp_path, calibration):
    with pytest.raises(ModelFileError, match="does not exist"):
        tfquant.ptq(str(tmp_path / "missing"), calibration, **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="no saved_model.pb"):
        tfquant.ptq(str(tmp_path / "empty"), calibration, **FAST)
    (tmp_path / "file.tflite").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a SavedModel directory"):
        tfquant.ptq(str(tmp_path / "file.tflite"), calibration, **FAST)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "saved_model.pb").write_bytes(b"\x00garbage")
    with pytest.raises(ModelFileError, match="could not be loaded"):
        tfquant.ptq(str(corrupt), calibration, **FAST)
    with pytest.raises(ModelFileError, match="Cannot import"):
        tfquant.ptq(42, calibration, **FAST)


def test_missing_signature(keras3_dir, calibration):
    with pytest.raises(ModelFileError, match=r"no signature 'predict' \(available: serve, serving_default\)"):
        tfquant.ptq(keras3_dir, calibration, signature="predict", **FAST)


@pytest.mark.parametrize("data, match", [
    (np.zeros((4, 8, 8, 3), np.float32), r"shape \[8, 8, 3\] but the model expects \[16, 16, 3\]"),
    (np.zeros((4, 16, 16), np.float32), r"shape \[16, 16\]"),
    (np.zeros((4, 16, 16, 3), np.uint8), "must be floating point, got uint8"),
    (np.array(["a", "b"]), "must be floating point"),
    (np.zeros((0, 16, 16, 3), np.float32), "calibration set is empty"),
    ([np.zeros((16, 16, 3)), np.zeros((8, 3))], "ragged"),
    ("nothing_here.npy", "does not exist"),
    (np.zeros((8, 16, 16, 3), np.float32), "calibration data are constant"),
])
def test_bad_calibration_data(keras3_dir, data, match):
    with pytest.raises(DataError, match=match):
        tfquant.ptq(keras3_dir, data, **FAST)


def test_nan_in_calibration_data(keras3_dir, calibration):
    bad = calibration.copy()
    bad[40, 3, 3, 1] = np.nan
    with pytest.raises(DataError, match="NaN or Inf"):
        tfquant.ptq(keras3_dir, bad, **FAST)
    with pytest.raises(DataError, match="NaN or Inf"):
        tfquant.ptq(keras3_dir, tf.data.Dataset.from_tensor_slices(bad).batch(8), **FAST)


def test_empty_calibration_sources(keras3_dir, tmp_path):
    with pytest.raises(DataError, match="empty"):
        tfquant.ptq(keras3_dir, tf.data.Dataset.from_tensor_slices(np.zeros((0, 16, 16, 3), np.float32)), **FAST)
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="holds no images"):
        tfquant.ptq(keras3_dir, str(tmp_path / "no_images"), **FAST)
    with pytest.raises(DataError, match="wrong|rank"):
        tfquant.ptq(keras3_dir, tf.data.Dataset.from_tensor_slices(np.zeros((4, 2), np.float32)), **FAST)


def test_nan_in_weights(calibration):
    model = ptq_models.keras3_model()
    layer = model.get_layer("expand")
    w = layer.get_weights()
    w[0][0, 0, 1, 2] = np.nan
    layer.set_weights(w)
    with pytest.raises(DataError, match="weights contain NaN or Inf.*expand"):
        tfquant.ptq(model, calibration, **FAST)


def test_data_free_needs_an_input_range(keras3_dir):
    with pytest.raises(DataError, match="input_range"):
        tfquant.ptq(keras3_dir, **FAST)


def test_bad_options(keras3_dir, calibration):
    with pytest.raises(SpecError, match="Unknown PTQ step"):
        tfquant.ptq(keras3_dir, calibration, steps=("cle", "magic"), **FAST)
    with pytest.raises(SpecError, match="Unknown tfquant.ptq option"):
        tfquant.ptq(keras3_dir, calibration, per_chanel=False, **FAST)
    with pytest.raises(SpecError, match="relu6_policy"):
        tfquant.PTQConfig(relu6_policy="clip")
    with pytest.raises(SpecError, match="input_range"):
        tfquant.PTQConfig(input_range=(1.0, -1.0))
    assert issubclass(SpecError, TFQuantError)


# ---- the command line --------------------------------------------------------------------
def _convert(*args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "tools.convert", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def test_convert_command(keras3_dir, calibration, tmp_path):
    npy = tmp_path / "cal.npy"
    np.save(npy, calibration)
    out = tmp_path / "model.tflite"
    proc = _convert("--saved_model", keras3_dir, "--output", str(out), "--calibration", str(npy),
                    "--per_tensor", "--steps", "cle,bias_correction", "--noprogress", "--verify")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "steps: cle, weight ranges" in proc.stdout and summary_of(proc.stdout)["float ops left"] == "0"
    assert "reference" in proc.stdout
    report = tfquant.inspect(str(out))
    conv = report.ops_of_type("CONV_2D")[0]
    assert len(report.tensors[conv.inputs[1]].scales) == 1


def test_convert_command_plan_report_and_float(keras3_dir, calibration, tmp_path):
    npy = tmp_path / "cal.npy"
    np.save(npy, calibration)
    out, plan, rep = tmp_path / "m.tflite", tmp_path / "plan.json", tmp_path / "report"
    proc = _convert("--saved_model", keras3_dir, "--output", str(out), "--calibration", str(npy), "--noprogress",
                    "--plan_output", str(plan), "--report", str(rep))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (rep / "report.md").exists() and (rep / "layer_sqnr.png").exists()
    first = out.read_bytes()
    loaded = tfquant.QuantPlan.load(plan)
    dw = [q for q, ts in loaded.owners.items() if "dw_1" in ts[0]][0]
    # the saved plan exports the same bytes; one entry kept in float changes only its neighbourhood
    out2 = tmp_path / "m2.tflite"
    proc = _convert("--saved_model", keras3_dir, "--output", str(out2), "--calibration", str(npy), "--noprogress",
                    "--plan", str(plan), "--keep_float", dw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"kept in float: ['{dw}']" in proc.stdout
    float_ops = [o.op for o in tfquant.inspect(str(out2)).float_ops if o.op not in ("QUANTIZE", "DEQUANTIZE")]
    assert float_ops == ["DEPTHWISE_CONV_2D", "CONV_2D"]
    summary = summary_of(proc.stdout)                 # the summary names them, and counts the float tensors
    check_summary(summary, out2)
    assert summary["float ops left"].startswith("2 (#")      # (QUANTIZE / DEQUANTIZE are not counted)
    int8, total = map(int, summary["int8 activations"].split(" ")[0].split("/"))
    assert int8 < total and summary["fidelity"] == "not measured (add --verify)"
    proc = _convert("--saved_model", keras3_dir, "--output", str(out2), "--calibration", str(npy), "--noprogress",
                    "--plan", str(plan))
    assert proc.returncode == 0 and out2.read_bytes() == first


def test_convert_command_errors(keras3_dir, tmp_path):
    out = tmp_path / "model.tflite"
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 5, 5, 3), np.float32))
    for args, message in (
        (("--saved_model", str(tmp_path), "--output", str(out), "--input_range=-1,1"), "no saved_model.pb"),
        (("--saved_model", keras3_dir, "--output", str(out), "--calibration", str(bad)), "expects [16, 16, 3]"),
        (("--saved_model", keras3_dir, "--output", str(out)), "input_range"),
        (("--saved_model", keras3_dir, "--output", str(out), "--input_range=-1,1", "--report", str(tmp_path / "r")),
         "--report need(s) --calibration"),
        (("--saved_model", keras3_dir, "--output", str(out), "--input_range=-1,1", "--keep_float", "nothing*"),
         "No plan entry or tensor matches"),
        (("--saved_model", keras3_dir, "--output", str(out), "--input_range=-1,1", "--plan", str(bad)),
         "not valid JSON"),
        (("--saved_model", keras3_dir, "--output", str(tmp_path), "--input_range=-1,1"), "is a directory"),
        (("--saved_model", keras3_dir, "--output", str(bad / "m.tflite"), "--input_range=-1,1"),
         "is not a writable folder"),
        (("--saved_model", str(bad), "--output", str(out), "--input_range=-1,1"), "is a file: give a SavedModel"),
        (("--saved_model", keras3_dir, "--output", str(out), "--input_range=-1,1", "--image_size", "a,b"),
         "--image_size must be two integers"),
        (("--saved_model", keras3_dir, "--output", str(out), "--input_range=-1,1", "--saved_model_output", str(bad)),
         "is a file; the output there is a folder"),
    ):
        proc = _convert(*args, "--noprogress")
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert not out.exists()


def test_convert_command_keras_file(tmp_path):
    path = tmp_path / "model.keras"
    ptq_models.keras3_model().save(path)
    out = tmp_path / "m.tflite"
    proc = _convert("--saved_model", str(path), "--output", str(out), "--input_range=-1,1", "--noprogress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = tfquant.inspect(str(out))
    assert not report.float_ops and len(report.tensors[report.ops_of_type("CONV_2D")[0].inputs[1]].scales) > 1
    assert "oneDNN" not in proc.stderr and "cuda" not in proc.stderr.lower()    # TF's start-up noise kept out


def test_console_script_help_lists_the_flags():
    """Installed as a console script, --help shows every flag (absl shows the key flags of the
    module sys.argv[0] names, which is the wrapper script)."""
    for module, flag in (("tools.convert", "--saved_model"), ("tools.inspect_tflite", "--[no]json")):
        code = f"import sys; sys.argv = ['/usr/bin/tfquant-x', '--help']; from {module} import run; run()"
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=120)
        assert flag in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]     # (absl exits 1 after --help)


def test_subclassed_keras_model_gets_a_clear_error():
    import keras

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ModelFileError, match="subclassed model.*model.export"):
        tfquant.ptq(net, np.random.default_rng(0).uniform(size=(8, 8, 8, 3)).astype(np.float32), **FAST)
    with pytest.raises(tfquant.ExportError, match="subclassed model"):
        tfquant.to_tflite(net)


def test_a_while_loop_is_refused_not_a_hang():
    import keras

    inp = keras.Input((6, 4))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.LSTM(8)(inp)))
    with pytest.raises(ModelFileError, match="has a loop .*LSTM"):
        tfquant.ptq(model, np.random.default_rng(0).uniform(size=(16, 6, 4)).astype(np.float32), **FAST)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def looped(x):
        k = tf.constant(np.eye(4, dtype=np.float32))
        _, y = tf.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, tf.nn.relu(tf.matmul(v, k))), [0, x])
        return tf.matmul(y, k)

    with pytest.raises(ModelFileError, match="tf.while_loop"):
        tfquant.ptq(looped, np.random.default_rng(0).uniform(size=(16, 4)).astype(np.float32), **FAST)


def test_a_tf_data_pipeline_failing_midway_is_a_data_error(keras3_dir):
    def gen():
        for i in range(64):
            if i == 40:
                raise IOError("disk went away")
            yield np.full((16, 16, 3), i / 64.0, np.float32)

    ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec((16, 16, 3), tf.float32)).batch(8)
    with pytest.raises(DataError, match="failed while being read"):
        tfquant.ptq(keras3_dir, ds, **FAST)


def test_a_qat_model_with_a_loop_is_refused_at_export(tmp_path):
    import keras

    inp = keras.Input((5, 4))
    qmodel = tfquant.quantize_model(keras.Model(inp, keras.layers.Dense(3)(keras.layers.LSTM(8)(inp))))
    tfquant.calibrate(qmodel, np.random.default_rng(0).uniform(size=(8, 5, 4)).astype(np.float32))
    out = tmp_path / "lstm.tflite"
    with pytest.raises(tfquant.ExportError, match=r"runs a loop \(TF op '.*lstm.*while'.*LSTM / GRU") as info:
        tfquant.to_tflite(qmodel, str(out))
    assert "\n" not in str(info.value) and "_experimental_lower_tensor_list_ops" not in str(info.value)
    assert not out.exists()


def test_an_op_the_converter_lowers_into_an_unrunnable_flatbuffer_is_refused_before_writing(tmp_path):
    import keras

    inp = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(inp)
    y = keras.layers.Lambda(lambda t: tf.math.real(tf.signal.fft(tf.cast(t, tf.complex64))))(y)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(y)))
    out = tmp_path / "fft.tflite"
    x = np.random.default_rng(0).uniform(-1, 1, size=(16, 8, 8, 3)).astype(np.float32)
    with pytest.raises(tfquant.ExportError, match=r"LiteRT cannot run .*RESHAPE.*Nothing was written"):
        tfquant.ptq(model, x, output=str(out), **FAST)
    assert not out.exists()


def test_fewer_calibration_samples_than_asked_are_warned_about(keras3_dir, calibration):
    n = len(calibration)
    with pytest.warns(UserWarning, match=f"asked for {n + 100} samples .* holds {n}"):
        tfquant.ptq(keras3_dir, calibration, steps=(), max_calibration_samples=n + 100, **FAST)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # not asked: the default limit is not a request
        tfquant.ptq(keras3_dir, calibration, steps=(), **FAST)


def test_numpy_integers_are_ints_and_messages_carry_no_numpy_reprs_or_ansi_codes():
    from tfquant.core.spec import QuantSpec
    from tfquant.errors import cause_text

    assert QuantSpec(bits=np.int32(4)).bits == 4 and type(QuantSpec(bits=np.int32(4)).bits) is int
    assert type(tfquant.PTQConfig(batch_size=np.int64(4)).batch_size) is int
    with pytest.raises(SpecError, match=r"bits=1 is not supported") as info:
        QuantSpec(bits=np.int32(1))
    assert "np.int32" not in str(info.value)
    keras_style = ValueError("\x1b[1mInput 0 is incompatible\x1b[0m with the layer\n\n"
                             "Arguments received by Conv2D.call():\n  • inputs=tf.Tensor(shape=(2, 8))")
    assert cause_text(keras_style) == "Input 0 is incompatible with the layer"
    mlir = RuntimeError("loc(fused[...]): error: 'tf.Foo' op is not supported\nnote: called from\n...")
    assert cause_text(mlir) == "'tf.Foo' op is not supported"
