"""Run by test_qat_distribute.py: one worker of a two-worker MultiWorkerMirroredStrategy
cluster on localhost (`worker INDEX PORT0 PORT1 CONFIG_JSON`), or the one-device reference
(`one CONFIG_JSON`); prints the trained model's summary as JSON (worker 0 and `one` only)."""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

if sys.argv[1] == "worker":     # TF_CONFIG must be set before TensorFlow starts
    index, ports = int(sys.argv[2]), sys.argv[3:5]
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index}})

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from distributed_training import data, initial_weights, summary, train_custom_loop  # noqa: E402


def main():
    config = json.loads(sys.argv[-1])
    x, y = data()
    if sys.argv[1] == "one":
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    start = initial_weights(config)
    qmodel = train_custom_loop(strategy, config, x, y, start)
    change = max(float(np.max(np.abs(a - b))) for a, b in zip(qmodel.get_weights(), start))
    if sys.argv[1] == "one" or strategy.cluster_resolver.task_id == 0:
        print(json.dumps(dict(summary(qmodel), replicas=strategy.num_replicas_in_sync,
                              max_weight_change=change)))


if __name__ == "__main__":
    main()
