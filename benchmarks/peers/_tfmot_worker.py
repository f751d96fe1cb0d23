"""TFMOT 0.8.1 QAT on the Fashion-MNIST network, in its own process (tf_keras, not Keras 3).

Run by benchmarks.peers.tfmot_qat.run_tfmot_qat with TF_USE_LEGACY_KERAS=1 in the environment
(TFMOT needs tf_keras, which cannot share a process with Keras 3). Steps:

1. rebuild the benchmark network in tf_keras (benchmarks.models.fmnist_net._build, so the layers
   and their names are identical) and load the float weights from the npz written by
   save_weights_npz;
2. `tfmot.quantization.keras.quantize_model`, then QAT with model.fit for --epochs on the
   Fashion-MNIST train set (same preprocessing as the float model, no augmentation), Adam at
   --lr, sparse categorical cross-entropy on the logits;
3. step time: median train-step time of a QAT copy and of a float copy of the network over
   --timing-steps steps of the same batch size (the same code path, model.fit);
4. convert with the TFLite converter (optimizations=[DEFAULT]: TFMOT's QAT mode);
5. test accuracy of that flatbuffer (default kernels, 10,000 test images), and fidelity of
   TFMOT's Keras model vs its own flatbuffer on the first --fidelity-n test images: the Keras QAT
   model's float logits quantized with the flatbuffer's int8 output (scale, zero point) (round half
   away from zero, clamped), compared with that int8 tensor as the reference kernels
   (OpResolverType.BUILTIN_REF) compute it -- the tensor feeding the final DEQUANTIZE when the
   model's output is float (read with experimental_preserve_all_tensors=True).

Writes <out>/tfmot_qat.tflite and <out>/result.json (see `main` for the keys).
"""
from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported, whatever the caller set
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from benchmarks.data.fashion_mnist import load_fashion_mnist, preprocess  # noqa: E402
from benchmarks.models import fmnist_net  # noqa: E402
from benchmarks.peers.converter_ptq import make_interpreter, quantize, run_tflite  # noqa: E402

QUICK = dict(n_train=512, timing_steps=20, timing_warmup=5)
FULL = dict(n_train=None, timing_steps=300, timing_warmup=20)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="float weights, .npz from save_weights_npz")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--epochs", type=float, default=1.0,
                   help="QAT epochs (a fraction trains that part of one epoch)")
    p.add_argument("--quick", action="store_true", help="few training samples, few timing steps")
    p.add_argument("--batch-size", type=int, default=fmnist_net.BATCH_SIZE)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate for QAT")
    p.add_argument("--n-train", type=int, default=None, help="training samples (default: all; quick 512)")
    p.add_argument("--timing-steps", type=int, default=None, help="steps per step-time measurement")
    p.add_argument("--fidelity-n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


class StepTimer:
    """A tf_keras callback (built lazily) recording the wall time of every training batch."""

    def __new__(cls, keras_module):
        class _Timer(keras_module.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []
                self._start = None

            def on_train_batch_begin(self, batch, logs=None):
                self._start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self._start)

        return _Timer()


def compile_model(model, keras_module, lr):
    model.compile(optimizer=keras_module.optimizers.Adam(lr),
                  loss=keras_module.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def median_step_seconds(model, keras_module, x, y, batch_size, steps, warmup, lr):
    """Median wall time of one model.fit training step (after `warmup` steps)."""
    n = (steps + warmup) * batch_size
    reps = int(np.ceil(n / len(x)))
    xs, ys = np.concatenate([x] * reps)[:n], np.concatenate([y] * reps)[:n]
    compile_model(model, keras_module, lr)
    timer = StepTimer(keras_module)
    model.fit(xs, ys, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    return statistics.median(timer.times[warmup:])


def int8_output_tensor(interp):
    """(tensor index, scale, zero point) of the int8 tensor holding the model's output: the output
    itself, or the input of the DEQUANTIZE op that produces a float output."""
    out = interp.get_output_details()[0]
    index = out["index"]
    if np.dtype(out["dtype"]) != np.int8:
        producers = [op for op in interp._get_ops_details() if index in list(op["outputs"])]
        if not producers or producers[0]["op_name"] != "DEQUANTIZE":
            raise RuntimeError(f"float output {out['name']} is not produced by a DEQUANTIZE op "
                               f"({[op['op_name'] for op in producers]})")
        index = int(producers[0]["inputs"][0])
    detail = next(d for d in interp.get_tensor_details() if d["index"] == index)
    if np.dtype(detail["dtype"]) != np.int8:
        raise RuntimeError(f"tensor {detail['name']} feeding the output is {detail['dtype']}, not int8")
    scale, zero_point = detail["quantization"]
    return index, float(scale), int(zero_point), detail["name"]


def int8_outputs_reference(tflite: bytes, x: np.ndarray, batch_size: int = 250):
    """The int8 output tensor under the reference kernels, for every row of x (float inputs)."""
    interp = make_interpreter(tflite, reference=True, preserve_all_tensors=True)
    in_detail = interp.get_input_details()[0]
    if np.dtype(in_detail["dtype"]) != np.float32:
        raise RuntimeError(f"expected a float input, got {in_detail['dtype']}")
    index, scale, zp, name = int8_output_tensor(interp)
    parts, current = [], None
    for start in range(0, len(x), batch_size):
        chunk = x[start:start + batch_size]
        if current != len(chunk):
            interp.resize_tensor_input(in_detail["index"], list(chunk.shape))
            interp.allocate_tensors()
            current = len(chunk)
        interp.set_tensor(in_detail["index"], chunk.astype(np.float32))
        interp.invoke()
        parts.append(interp.get_tensor(index).copy())
    return np.concatenate(parts), scale, zp, name


def main(argv=None) -> dict:
    wall_start = time.perf_counter()
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.n_train is not None:
        settings["n_train"] = args.n_train
    if args.timing_steps is not None:
        settings["timing_steps"] = args.timing_steps
    os.makedirs(args.out, exist_ok=True)

    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    keras_module = tf.keras
    if not keras_module.__name__.startswith("tf_keras"):
        raise RuntimeError(f"tf.keras is {keras_module.__name__}, not tf_keras: TF_USE_LEGACY_KERAS "
                           f"must be set before TensorFlow is imported")
    tf_keras.utils.set_random_seed(args.seed)

    x_train, y_train, x_test, y_test = load_fashion_mnist()
    if settings["n_train"]:
        x_train, y_train = x_train[:settings["n_train"]], y_train[:settings["n_train"]]
    x_train, x_test = preprocess(x_train), preprocess(x_test)
    y_train, y_test = y_train.astype(np.int32), y_test.astype(np.int32)

    def float_model():
        model = fmnist_net._build(tf_keras)
        fmnist_net.load_weights_npz(model, args.weights)
        return model

    model = float_model()
    float_logits = model.predict(x_test, batch_size=512, verbose=0)
    float_accuracy = float(np.mean(np.argmax(float_logits, -1) == y_test))

    # QAT
    qat = tfmot.quantization.keras.quantize_model(model)
    compile_model(qat, keras_module, args.lr)
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    whole, frac = int(args.epochs), args.epochs - int(args.epochs)
    qat_start = time.perf_counter()
    if whole:
        qat.fit(x_train, y_train, batch_size=args.batch_size, epochs=whole, shuffle=True, verbose=0)
    if frac > 0:
        n = max(args.batch_size, int(round(frac * steps_per_epoch)) * args.batch_size)
        perm = np.random.default_rng(args.seed).permutation(len(x_train))[:n]
        qat.fit(x_train[perm], y_train[perm], batch_size=args.batch_size, epochs=1, verbose=0)
    qat_train_seconds = time.perf_counter() - qat_start
    qat_logits = qat.predict(x_test, batch_size=512, verbose=0)
    keras_qat_accuracy = float(np.mean(np.argmax(qat_logits, -1) == y_test))

    # Step times, on throwaway copies, the same way for both.
    steps, warmup = settings["timing_steps"], settings["timing_warmup"]
    float_step = median_step_seconds(float_model(), keras_module, x_train, y_train, args.batch_size,
                                     steps, warmup, args.lr)
    qat_step = median_step_seconds(tfmot.quantization.keras.quantize_model(float_model()), keras_module,
                                   x_train, y_train, args.batch_size, steps, warmup, args.lr)

    # Conversion (TFMOT's documented route).
    convert_start = time.perf_counter()
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    tflite = converter.convert()
    convert_seconds = time.perf_counter() - convert_start
    tflite_path = os.path.join(os.path.abspath(args.out), "tfmot_qat.tflite")
    with open(tflite_path, "wb") as f:
        f.write(tflite)

    # Accuracy of the flatbuffer (default kernels).
    tflite_logits = run_tflite(tflite, x_test, batch_size=500)
    tflite_accuracy = float(np.mean(np.argmax(tflite_logits, -1) == y_test))

    # Fidelity: TFMOT's Keras model vs its own flatbuffer, in int8 LSBs, reference kernels.
    n_fid = min(args.fidelity_n, len(x_test))
    q_ref, scale, zp, out_name = int8_outputs_reference(tflite, x_test[:n_fid])
    q_keras = quantize(qat_logits[:n_fid], scale, zp, np.int8)
    err = np.abs(q_keras.astype(np.int32) - q_ref.astype(np.int32))
    # The same against the default kernels (their float output is (q - zp) * scale exactly).
    q_default = quantize(tflite_logits[:n_fid] / np.float64(scale), 1.0, zp, np.int8)
    err_default = np.abs(q_keras.astype(np.int32) - q_default.astype(np.int32))

    result = dict(
        tflite_path=tflite_path,
        tflite_accuracy=tflite_accuracy,
        keras_qat_accuracy=keras_qat_accuracy,
        float_keras_accuracy=float_accuracy,
        exact=float(np.mean(err == 0)),
        within_one=float(np.mean(err <= 1)),
        max_lsb_error=int(err.max()),
        mean_lsb_error=float(err.mean()),
        top1_agreement_keras_vs_tflite=float(np.mean(np.argmax(q_keras, -1) == np.argmax(q_ref, -1))),
        exact_default_kernels=float(np.mean(err_default == 0)),
        within_one_default_kernels=float(np.mean(err_default <= 1)),
        fidelity_n=int(n_fid),
        fidelity_tensor=out_name,
        output_scale=scale,
        output_zero_point=zp,
        qat_step_ms=1000.0 * qat_step,
        float_step_ms=1000.0 * float_step,
        step_time_ratio=qat_step / float_step,
        timing_steps=steps,
        qat_train_seconds=qat_train_seconds,
        convert_seconds=convert_seconds,
        epochs=args.epochs,
        steps_per_epoch=steps_per_epoch,
        n_train=int(len(x_train)),
        n_test=int(len(x_test)),
        batch_size=args.batch_size,
        learning_rate=args.lr,
        quick=bool(args.quick),
        size_kb=len(tflite) / 1024,
        versions=dict(tensorflow=tf.__version__, tfmot=getattr(tfmot, "__version__", "?"),
                      tf_keras=tf_keras.__version__),
        threads=os.cpu_count(),
    )
    result["wall_seconds"] = time.perf_counter() - wall_start
    path = os.path.join(args.out, "result.json")
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2)
    os.replace(path + ".tmp", path)
    return result


if __name__ == "__main__":
    main()
