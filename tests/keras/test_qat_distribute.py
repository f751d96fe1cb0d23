"""MirroredStrategy over two logical CPUs trains a quantized model to the same weights and
quantizer ranges as one device (global batch statistics for every quantizer and BN fold).

Logical devices must be configured before TensorFlow initializes its devices, so the training
runs in a fresh process (mirrored_worker.py)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run_worker(config: dict) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(HERE, "mirrored_worker.py"), json.dumps(config)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("config,tolerance", [({}, 1e-6), ({"bn_folding": "batch_stats"}, 1e-4)],
                         ids=["static_bn", "batch_stats_bn"])
def test_two_replicas_match_one_device(config, tolerance):
    r = run_worker(config)
    assert r["replicas"] == 2
    assert r["max_weight_change"] > 0.01                     # it did train
    # Same weights (trainable, BN statistics and quantizer state) up to float summation order.
    assert r["max_weight_diff"] < tolerance and r["max_trainable_diff"] < tolerance, r
    one, two = list(r["ranges_one"].values()), list(r["ranges_two"].values())
    assert len(one) == len(two) == 6
    np.testing.assert_allclose(np.array(two), np.array(one), rtol=tolerance, atol=tolerance)
    assert all(s[2] == 1.0 for s in two)
