"""The TFMOT QAT peer (benchmarks.peers.tfmot_qat): runs in a child process with tf_keras."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from benchmarks.data import fashion_mnist as fm  # noqa: E402
from benchmarks.peers import tfmot_qat  # noqa: E402

HAVE_DATA = all(os.path.isfile(os.path.join(fm.data_dir(), f)) for f in fm.FILES.values())
# Not importorskip: TFMOT / tf_keras must not be imported into this (Keras 3) process.
pytestmark = [
    pytest.mark.skipif(not tfmot_qat.tfmot_available(),
                       reason="pip install tensorflow-model-optimization==0.8.1 tf-keras"),
    pytest.mark.skipif(not HAVE_DATA, reason="apt-get install -y dataset-fashion-mnist"),
]


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        tfmot_qat.run_tfmot_qat(str(tmp_path / "none.npz"), str(tmp_path / "out"), quick=True)


def test_worker_failure_surfaces_stderr(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"not_a_layer/0": np.zeros(3)})
    with pytest.raises(tfmot_qat.TfmotPeerError) as info:
        tfmot_qat.run_tfmot_qat(str(bad), str(tmp_path / "out"), quick=True)
    message = str(info.value)
    assert "exit code" in message and "stderr" in message
    assert "no weights for layer 'stem_conv'" in message        # the child's own exception


@pytest.mark.slow
def test_tfmot_qat_quick(tmp_path):
    from benchmarks.models.fmnist_net import cached_fmnist_net, save_weights_npz
    from benchmarks.peers.converter_ptq import make_interpreter, run_tflite

    model = cached_fmnist_net(quick=True)
    _, _, x_test, y_test = fm.load_fashion_mnist()
    x_test = fm.preprocess(x_test)
    keras_acc = np.mean(np.argmax(model.predict(x_test, batch_size=512, verbose=0), -1) == y_test)
    npz = str(tmp_path / "float.npz")
    save_weights_npz(model, npz)

    result = tfmot_qat.run_tfmot_qat(npz, str(tmp_path / "tfmot"), epochs=1, quick=True)

    # The tf_keras rebuild with the npz weights is the same network as the Keras 3 one.
    assert abs(result["float_keras_accuracy"] - keras_acc) < 2e-3
    assert result["n_train"] == 512 and result["fidelity_n"] == 1000 and result["epochs"] == 1
    with open(result["tflite_path"], "rb") as f:
        tflite = f.read()
    # A real int8 flatbuffer: int8 conv weights, float input and output.
    interp = make_interpreter(tflite)
    kinds = {op["op_name"] for op in interp._get_ops_details()}
    assert {"QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "DEQUANTIZE"} <= kinds
    details = {d["index"]: d for d in interp.get_tensor_details()}
    conv_weights = [details[int(op["inputs"][1])] for op in interp._get_ops_details()
                    if op["op_name"] == "CONV_2D"]
    assert conv_weights and all(np.dtype(d["dtype"]) == np.int8 for d in conv_weights)
    # Its accuracy, measured again here, is the one reported, and close to the float model's.
    acc = np.mean(np.argmax(run_tflite(tflite, x_test), -1) == y_test)
    assert abs(acc - result["tflite_accuracy"]) < 1e-9
    assert acc > keras_acc - 0.05 and acc > 0.6
    # Fidelity figures are consistent with each other.
    assert 0.0 <= result["exact"] <= result["within_one"] <= 1.0
    assert (result["exact"] == 1.0) == (result["max_lsb_error"] == 0)
    assert result["top1_agreement_keras_vs_tflite"] > 0.9
    assert result["output_scale"] > 0 and -128 <= result["output_zero_point"] <= 127
    assert result["step_time_ratio"] > 0 and result["qat_step_ms"] > 0 and result["float_step_ms"] > 0
    assert result["wall_seconds"] > 0 and result["versions"]["tfmot"] == "0.8.1"
