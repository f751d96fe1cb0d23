"""Peer: TFMOT 0.8.1 quantization-aware training on the Fashion-MNIST network.

TFMOT needs tf_keras (TF_USE_LEGACY_KERAS=1 before TensorFlow is imported), which cannot share
a process with Keras 3, so the work runs in a child process (`_tfmot_worker.py`); this module
only starts it and reads its JSON. See the worker's docstring for what it measures.

    from benchmarks.models.fmnist_net import cached_fmnist_net, save_weights_npz
    save_weights_npz(cached_fmnist_net(), "/tmp/float.npz")
    result = run_tfmot_qat("/tmp/float.npz", "/tmp/tfmot", epochs=1)
    result["tflite_accuracy"], result["exact"], result["within_one"], result["step_time_ratio"]

Keys of the result: tflite_path, tflite_accuracy (default kernels), keras_qat_accuracy,
float_keras_accuracy, exact / within_one / max_lsb_error / mean_lsb_error (TFMOT's Keras model
vs its own flatbuffer's int8 output, reference kernels, first `fidelity_n` test images),
exact_default_kernels, within_one_default_kernels, top1_agreement_keras_vs_tflite, output_scale,
output_zero_point, qat_step_ms, float_step_ms, step_time_ratio, qat_train_seconds,
convert_seconds, wall_seconds (the worker's), parent_wall_seconds, settings and versions.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Optional

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_tfmot_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class TfmotPeerError(RuntimeError):
    """The TFMOT worker process failed; the message holds its exit code and stderr tail."""


def tfmot_available() -> bool:
    """Whether tensorflow-model-optimization and tf-keras are installed (without importing
    them here: they must not be imported into a Keras 3 process)."""
    return all(importlib.util.find_spec(m) is not None
               for m in ("tensorflow_model_optimization", "tf_keras"))


def _tail(text: str, chars: int = 4000) -> str:
    text = text or ""
    return text if len(text) <= chars else "..." + text[-chars:]


def run_tfmot_qat(float_model_weights_npz: str, out_dir: str, epochs: float = 1, quick: bool = False, *,
                  batch_size: Optional[int] = None, learning_rate: Optional[float] = None,
                  n_train: Optional[int] = None, timing_steps: Optional[int] = None,
                  fidelity_n: Optional[int] = None, seed: int = 0,
                  timeout: Optional[float] = None) -> dict:
    """Run TFMOT QAT in a child process on the network whose float weights are in
    `float_model_weights_npz` (from benchmarks.models.fmnist_net.save_weights_npz); write the
    flatbuffer and result.json to `out_dir`; return the result dict.

    quick: 512 training samples and 20 timing steps (unless n_train / timing_steps say
    otherwise). Raises TfmotPeerError with the child's stderr tail if it fails."""
    if not os.path.isfile(float_model_weights_npz):
        raise FileNotFoundError(float_model_weights_npz)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    cmd = [sys.executable, WORKER, "--weights", os.path.abspath(float_model_weights_npz),
           "--out", out_dir, "--epochs", str(epochs), "--seed", str(seed)]
    if quick:
        cmd.append("--quick")
    for flag, value in (("--batch-size", batch_size), ("--lr", learning_rate), ("--n-train", n_train),
                        ("--timing-steps", timing_steps), ("--fidelity-n", fidelity_n)):
        if value is not None:
            cmd += [flag, str(value)]
    env = dict(os.environ)
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    result_path = os.path.join(out_dir, "result.json")
    if os.path.exists(result_path):
        os.remove(result_path)

    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise TfmotPeerError(f"TFMOT worker timed out after {timeout} s: {' '.join(cmd)}\n"
                             f"--- stderr (tail) ---\n{_tail(stderr)}") from None
    if proc.returncode != 0:
        raise TfmotPeerError(f"TFMOT worker failed with exit code {proc.returncode}: {' '.join(cmd)}\n"
                             f"--- stderr (tail) ---\n{_tail(proc.stderr)}")
    if not os.path.isfile(result_path):
        raise TfmotPeerError(f"TFMOT worker wrote no {result_path}\n--- stderr (tail) ---\n"
                             f"{_tail(proc.stderr)}")
    with open(result_path) as f:
        result = json.load(f)
    result["parent_wall_seconds"] = time.perf_counter() - start
    return result
