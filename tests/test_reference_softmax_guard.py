"""LiteRT's reference int8 SOFTMAX aborts the process (a gemmlowp assertion) when a row's sum of
exps reaches 512 (issue 16): tfquant predicts that from the int8 inputs and refuses the batch with
a KernelAbortError instead, and `verify` reports the reference kernels as not run. The prediction
is checked at the boundary against the real kernel, in a child process (which the abort kills)."""
from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tfquant
from tfquant.core.integer_kernels import reference_softmax_aborts
from tfquant.errors import KernelAbortError
from tfquant.export.interpreter import TFLiteRunner

CLASSES = 600


@pytest.fixture(scope="module")
def softmax_model(tmp_path_factory):
    x = keras.Input((CLASSES,))
    logits = keras.layers.Dense(CLASSES, kernel_initializer="identity", bias_initializer="zeros")(x)
    model = keras.Model(x, keras.layers.Softmax()(logits))        # logits = inputs
    rng = np.random.default_rng(0)
    result = tfquant.ptq(model, rng.uniform(-4, 4, (16, CLASSES)).astype(np.float32), progress=False,
                         steps=("cle", "bias_absorption", "bias_correction"))
    path = tmp_path_factory.mktemp("softmax") / "softmax600.tflite"
    path.write_bytes(result.to_tflite())
    return result, path


def _rows(tied: int) -> np.ndarray:
    """`tied` classes at the top of the range, the others at the bottom."""
    row = np.full((1, CLASSES), -4.0, np.float32)
    row[0, :tied] = 4.0
    return row


def _raw_reference_exit_code(path, x: np.ndarray) -> int:
    """Exit status of a child process that runs LiteRT's reference kernels on `x` (no guard)."""
    script = (
        "import sys, numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter, OpResolverType\n"
        "it = Interpreter(model_path=sys.argv[1], experimental_op_resolver_type=OpResolverType.BUILTIN_REF)\n"
        "it.allocate_tensors()\n"
        "d = it.get_input_details()[0]\n"
        "x = np.load(sys.argv[2])\n"
        "if d['dtype'] == np.int8:\n"
        "    scale, zp = d['quantization']\n"
        "    x = np.clip(np.round(x / scale) + zp, -128, 127).astype(np.int8)\n"
        "it.set_tensor(d['index'], x)\n"
        "it.invoke()\n")
    npy = str(path) + f".{x[0].sum():.0f}.npy"
    np.save(npy, x)
    proc = subprocess.run([sys.executable, "-c", script, str(path), npy], capture_output=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=120)
    return proc.returncode


def test_prediction_matches_the_kernel_at_the_boundary(softmax_model):
    result, path = softmax_model
    runner = TFLiteRunner(path, kernels="optimized", preserve_all_tensors=True)
    softmax, = runner.report.ops_of_type("SOFTMAX")
    scale = runner.report.tensors[softmax.inputs[0]].scales[0]
    logits = []
    for tied in (511, 512):
        runner.run(_rows(tied))
        logits.append(runner.get_tensor(softmax.inputs[0]).copy())
    assert reference_softmax_aborts(logits[0], scale).tolist() == [False]
    assert reference_softmax_aborts(logits[1], scale).tolist() == [True]
    assert np.sum(logits[1] == logits[1].max()) == 512
    assert _raw_reference_exit_code(path, _rows(511)) == 0
    assert _raw_reference_exit_code(path, _rows(512)) == -6          # SIGABRT: the case refused


def test_runner_refuses_the_batch_and_verify_reports_it(softmax_model):
    result, path = softmax_model
    runner = TFLiteRunner(path, kernels="reference")
    out = runner.run(_rows(511))[0]                   # below the boundary it runs, and agrees
    np.testing.assert_array_equal(out, result.exact(_rows(511)).numpy())
    with pytest.raises(KernelAbortError, match=r"SOFTMAX \(op \d+, 600 classes\).*1 of these 1 samples"):
        runner.run(_rows(512))
    x = np.concatenate([_rows(511), _rows(512)])
    with pytest.raises(KernelAbortError):
        result.verify(x, kernels=("reference",))      # the only kernel set asked for: an error
    report = result.verify(x)                         # reference and default: default runs
    assert "reference" in report.not_run and [o.kernels for o in report.outputs] == ["default"]
    assert "reference  not run: TFLite's reference int8 SOFTMAX" in report.table()
    assert report.exact_fraction == 1.0               # the default kernels agree with the simulation
