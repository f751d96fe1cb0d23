"""Fashion-MNIST: real labelled accuracy in TFLite, tfquant QAT beside TFMOT's QAT."""
from __future__ import annotations

import os
import tempfile

import numpy as np

import tfquant

from benchmarks import harness, routes
from benchmarks.harness import NotBuilt, Row


def _ptq_then_qat_seeds(model, ptq_result, x_train, y_train, accuracy, seeds=(0, 1, 2)) -> str:
    """QAT from scratch vs QAT from the PTQ result, one epoch each, over several seeds: one run
    differs by a few test images, which is within the noise of a single seed."""
    import keras

    from benchmarks.models.fmnist_net import BATCH_SIZE

    acc = {"QAT from scratch": [], "PTQ -> QAT": []}
    for seed in seeds:
        for route, init in (("QAT from scratch", None), ("PTQ -> QAT", ptq_result)):
            keras.utils.set_random_seed(seed)
            qmodel = tfquant.quantize_model(model)
            if init is None:
                tfquant.calibrate(qmodel, x_train[:512], batch_size=BATCH_SIZE)
            else:
                tfquant.keras.init_from_ptq(qmodel, init, calibration=x_train[:512], batch_size=BATCH_SIZE)
            routes._compile(qmodel, 1e-4)
            qmodel.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=1, shuffle=True, verbose=0)
            acc[route].append(accuracy(tfquant.to_tflite(qmodel)))
            print(f"[benchmarks] {route} seed {seed}: accuracy={acc[route][-1]:.4f}", flush=True)
    lines = ["W8A8, one epoch, TFLite accuracy per seed:", "",
             "| start | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for route, values in acc.items():
        lines.append(f"| {route} | " + " | ".join(f"{100 * v:.2f}%" for v in values)
                     + f" | {100 * np.mean(values):.2f}% |")
    return "\n".join(lines) + "\n\n"


def run(quick: bool):
    from benchmarks.data.fashion_mnist import load_fashion_mnist, preprocess
    from benchmarks.models.fmnist_net import cached_fmnist_net, save_weights_npz
    from benchmarks.peers.converter_ptq import converter_ptq, float_tflite, run_tflite
    from benchmarks.peers.tfmot_qat import run_tfmot_qat

    x_train, y_train, x_test, y_test = load_fashion_mnist()
    x_train, x_test = preprocess(x_train), preprocess(x_test)
    if quick:
        x_test, y_test = x_test[:2000], y_test[:2000]
    model = cached_fmnist_net(quick=quick)
    cal = x_train[:256]

    def accuracy(tflite: bytes) -> float:
        return float(np.mean(np.argmax(run_tflite(tflite, x_test), -1) == y_test))

    models = {}   # route -> flatbuffer: latencies are measured side by side at the end

    def measure(route, tflite, seconds=None, **extra) -> Row:
        models[route] = tflite
        return harness.announce(Row(route=route, accuracy=accuracy(tflite), size_kb=len(tflite) / 1024,
                                    quant_seconds=seconds, **extra))

    keras_acc = float(np.mean(np.argmax(model.predict(x_test, batch_size=256, verbose=0), -1) == y_test))
    rows = [measure("float TFLite", float_tflite(model), note=f"Keras float accuracy {100 * keras_acc:.2f}%")]
    tfl, secs = harness.timed(converter_ptq, model, cal, per_channel=True)
    rows.append(measure("TFLite converter PTQ per-channel", tfl, secs))
    tfl, secs = harness.timed(converter_ptq, model, cal, per_channel=False)
    rows.append(measure("TFLite converter PTQ per-tensor", tfl, secs))

    epochs = 1
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "float.npz")
        save_weights_npz(model, npz)
        peer, secs = harness.timed(run_tfmot_qat, npz, os.path.join(tmp, "tfmot"), epochs=epochs, quick=quick)
        with open(peer["tflite_path"], "rb") as f:
            tfmot_tflite = f.read()
    rows.append(measure(f"TFMOT 0.8.1 QAT W8A8 ({epochs} epoch, tf_keras)", tfmot_tflite, secs,
                        exact=peer["exact"], within_one=peer["within_one"],
                        step_time_ratio=peer.get("step_time_ratio")))
    ptq_result, secs = harness.timed(tfquant.ptq, model, cal, progress=False)
    rows.append(measure("tfquant PTQ (default pipeline)", ptq_result.to_tflite(), secs))
    for name, bits, init in (("tfquant QAT W8A8", 8, None), ("tfquant PTQ -> QAT W8A8", 8, ptq_result),
                             ("tfquant QAT W4A8", 4, None)):
        try:
            result = routes.tfquant_qat(model, x_train, y_train, x_test, weight_bits=bits,
                                        epochs=epochs, quick=quick, from_ptq=init)
        except NotBuilt as e:
            rows.append(Row(route=name, note=f"not built ({e})"))
            continue
        rows.append(measure(f"{name} ({epochs} epoch)", result.tflite, result.seconds, exact=result.exact,
                            within_one=result.within_one, step_time_ratio=result.step_time_ratio))

    seeds_text = "" if quick else _ptq_then_qat_seeds(model, ptq_result, x_train, y_train, accuracy)
    harness.fill_latencies(rows, models)
    table = harness.markdown_table(
        rows, ["route", "accuracy", "exact", "within_one", "step_time_ratio", "latency_ms", "size_kb",
               "quant_seconds", "note"],
        ratios={"float": rows[0].latency_ms, "converter int8": rows[1].latency_ms})
    n_test = len(y_test)
    text = (f"## Fashion-MNIST, MobileNet-style network\n\n"
            f"Depthwise-separable convs + BN + ReLU6, a residual add, global pool, dense; trained in "
            f"float once and cached; QAT starts from those weights (PTQ -> QAT: from tfquant.ptq's "
            f"result on 256 calibration images, `tfquant.keras.init_from_ptq`). Accuracy on {n_test} test images, "
            f"in the TFLite interpreter. Fidelity for QAT routes: each tool's own Keras model vs its own "
            f"flatbuffer.\n\n{table}\n\n{seeds_text}![accuracy](benchmarks/plots/fashion_mnist_accuracy.png)\n")
    return rows, text
