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


def _free_ports(n: int) -> list:
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_local_workers_match_one_worker():
    """MultiWorkerMirroredStrategy with two worker processes on localhost (each with half of
    every global batch) trains to the weights and quantizer ranges of one device."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    worker = os.path.join(HERE, "multiworker_worker.py")
    config = json.dumps({})
    ports = [str(p) for p in _free_ports(2)]
    procs = [subprocess.Popen([sys.executable, worker, "worker", str(i), *ports, config], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    one = subprocess.run([sys.executable, worker, "one", config], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=600))
        finally:
            p.kill()
    assert one.returncode == 0, one.stderr[-3000:]
    assert all(p.returncode == 0 for p in procs), [o[1][-3000:] for o in outs]
    ref = json.loads(one.stdout.strip().splitlines()[-1])
    got = json.loads(outs[0][0].strip().splitlines()[-1])
    assert got["replicas"] == 2 and ref["replicas"] == 1
    assert ref["max_weight_change"] > 0.01                   # it did train
    for a, b in zip(ref["weights"], got["weights"]):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=1e-5, atol=1e-5)
    assert sorted(ref["ranges"]) and sorted(ref["ranges"]) == sorted(got["ranges"])
    for name in ref["ranges"]:
        np.testing.assert_allclose(got["ranges"][name], ref["ranges"][name], rtol=1e-5, atol=1e-5)
        assert ref["ranges"][name][2] == 1.0     # every quantizer saw data
