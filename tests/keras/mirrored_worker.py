"""Run by test_qat_distribute.py in a fresh process (logical devices must be set before TF starts):
train the same quantized model for a few steps on one device and under a MirroredStrategy over
two logical CPUs, and print a JSON comparison."""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

import tfquant  # noqa: E402
from distributed_training import data, float_model, train  # noqa: E402
from tfquant.keras import quantizer_state  # noqa: E402


def main():
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    x, y = data()
    initial = tfquant.quantize_model(float_model(), config)
    weights = initial.get_weights()
    start = [w.numpy() for w in initial.trainable_weights]
    one = train(tf.distribute.OneDeviceStrategy("/cpu:0"), config, x, y, weights)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    two = train(mirrored, config, x, y, weights)
    t1 = [w.numpy() for w in one.trainable_weights]
    t2 = [w.numpy() for w in two.trainable_weights]
    w1, w2 = one.get_weights(), two.get_weights()
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(w1, w2)),
        "max_weight_change": max(float(np.max(np.abs(a - b))) for a, b in zip(t1, start)),
        "max_trainable_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(t1, t2)),
        "ranges_one": quantizer_state(one), "ranges_two": quantizer_state(two),
    }))


if __name__ == "__main__":
    main()
