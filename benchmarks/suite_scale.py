"""Scale: calibration streams (peak memory does not grow with the calibration set), and a
ResNet-50-sized network through PTQ, export and verify.

    python -m benchmarks.suite_scale               # both parts, prints a markdown section
    python -m benchmarks.suite_scale --quick       # fewer samples, a smaller ResNet input

Each measurement runs in its own process (`--worker`), so its peak resident set size
(`ru_maxrss`) is its own.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STREAM_SHAPE = (128, 128, 3)          # MobileNetV2 0.5 input: 192 KiB per float32 sample


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def _streamed_samples(n: int, batch: int = 32):
    """`n` samples made batch by batch (as a reader of files on disk would): never all held."""
    import numpy as np
    import tensorflow as tf

    def gen():
        for start in range(0, n, batch):
            rng = np.random.default_rng(start)
            yield rng.uniform(-1, 1, (min(batch, n - start),) + STREAM_SHAPE).astype(np.float32)

    return tf.data.Dataset.from_generator(
        gen, output_signature=tf.TensorSpec((None,) + STREAM_SHAPE, tf.float32))


def _worker_stream(n: int) -> dict:
    import keras

    import tfquant

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=STREAM_SHAPE, alpha=0.5, weights=None, classes=10)
    started = time.time()
    result = tfquant.ptq(model, _streamed_samples(n), max_calibration_samples=n, progress=False)
    result.to_tflite()
    return {"samples": n, "seconds": time.time() - started, "peak_rss_mb": _peak_rss_mb(),
            "held_whole_mb": n * 4 * STREAM_SHAPE[0] * STREAM_SHAPE[1] * STREAM_SHAPE[2] / 2 ** 20}


def _worker_resnet(size: int) -> dict:
    import keras
    import numpy as np

    import tfquant

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=1000)
    rng = np.random.default_rng(0)
    x_cal = rng.uniform(-1, 1, (64, size, size, 3)).astype(np.float32)
    x_test = rng.uniform(-1, 1, (8, size, size, 3)).astype(np.float32)
    started = time.time()
    result = tfquant.ptq(model, x_cal, progress=False)
    tflite = result.to_tflite()
    quantized = time.time() - started
    # LiteRT's reference SOFTMAX (int8) would abort on this randomly initialised network's nearly
    # uniform 1000-class logits (verify refuses them: KernelAbortError), and its reference
    # convolutions take minutes at 224 px: verify under the default kernels
    report = result.verify(x_test, intermediate_samples=0, kernels=("default",))
    return {"input": size, "parameters": int(model.count_params()), "ptq_export_seconds": quantized,
            "verify_seconds": time.time() - started - quantized, "peak_rss_mb": _peak_rss_mb(),
            "size_mb": len(tflite) / 2 ** 20,
            "float_ops": len([o for o in tfquant.inspect(tflite).float_ops if o.op not in ("QUANTIZE", "DEQUANTIZE")]),
            "within_one": report.within_one_fraction, "max_lsb": report.max_lsb}


def _run_worker(*args: str) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.suite_scale", "--worker", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"scale worker {args} failed (exit status {proc.returncode}; -9: killed, "
                           f"e.g. out of memory):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool) -> tuple[list, str]:
    counts = (64, 512) if quick else (256, 4096)
    streams = [_run_worker("stream", str(n)) for n in counts]
    resnet = _run_worker("resnet", "96" if quick else "224")
    for r in streams + [resnet]:
        print(f"[benchmarks] scale: {r}", flush=True)
    lines = ["## Scale", "",
             "Calibration streams: `tfquant.ptq` (default pipeline) on MobileNetV2 (alpha 0.5, "
             f"{STREAM_SHAPE[0]}x{STREAM_SHAPE[1]}) from a `tf.data` source that makes its samples batch "
             "by batch; peak resident memory of the whole process (TensorFlow included):", "",
             "| calibration samples | held whole would be | peak RSS | wall time |", "|---|---|---|---|"]
    lines += [f"| {r['samples']} | {r['held_whole_mb']:.0f} MB | {r['peak_rss_mb']:.0f} MB | {r['seconds']:.0f} s |"
              for r in streams]
    growth = streams[1]["peak_rss_mb"] - streams[0]["peak_rss_mb"]
    lines += ["", f"{counts[1] // counts[0]}x the samples: peak RSS {growth:+.0f} MB (the samples alone "
              f"would add {streams[1]['held_whole_mb'] - streams[0]['held_whole_mb']:.0f} MB).", "",
              f"ResNet50 (keras.applications, weights=None, {resnet['input']}x{resnet['input']}, "
              f"{resnet['parameters'] / 1e6:.1f} M parameters), default pipeline with 64 calibration "
              f"samples: PTQ + export {resnet['ptq_export_seconds']:.0f} s, verify on 8 samples "
              f"{resnet['verify_seconds']:.0f} s, peak RSS {resnet['peak_rss_mb']:.0f} MB, flatbuffer "
              f"{resnet['size_mb']:.1f} MB, {resnet['float_ops']} float ops, sim = TFLite under the default "
              f"(XNNPACK) kernels {100 * resnet['within_one']:.1f}% within 1 LSB (max {resnet['max_lsb']} LSB).", ""]
    return streams + [resnet], "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        kind, value = sys.argv[2], int(sys.argv[3])
        result = _worker_stream(value) if kind == "stream" else _worker_resnet(value)
        print(json.dumps(result))
        return 0
    _, text = run("--quick" in sys.argv)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
