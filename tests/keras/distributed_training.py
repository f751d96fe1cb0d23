"""The model, data and training loop the distribution tests run in their worker processes
(mirrored_worker.py: two logical CPUs; multiworker_worker.py: two local worker processes)."""
import keras
import numpy as np

import tfquant
from tfquant.keras import quantizer_state

L = keras.layers


def float_model():
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    y = L.Conv2D(8, 1, use_bias=False)(x)
    y = L.BatchNormalization()(y)
    s = L.Add()([x, y])
    g = L.GlobalAveragePooling2D()(s)
    return keras.Model(inp, L.Dense(4)(g))


def data():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 8, 8, 3)).astype("float32")
    y = rng.normal(size=(64, 4)).astype("float32")
    return x, y


def initial_weights(config):
    return tfquant.quantize_model(float_model(), config).get_weights()


def train(strategy, config, x, y, weights):
    """One epoch of SGD at global batch 16 under `strategy`, from `weights`, with model.fit."""
    with strategy.scope():
        qmodel = tfquant.quantize_model(float_model(), config)
        qmodel.set_weights(weights)
        qmodel.compile(keras.optimizers.SGD(0.05), "mse")
    qmodel.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return qmodel


def train_custom_loop(strategy, config, x, y, weights, global_batch: int = 16):
    """The same training as `train`, as a custom loop (`strategy.run` over a distributed
    dataset). Keras 3.15's `fit` cannot run under MultiWorkerMirroredStrategy (its symbolic
    build reduces the first batch with a nested `strategy.reduce`, which that strategy rejects),
    so multi-worker QAT uses a loop like this one."""
    import tensorflow as tf

    with strategy.scope():
        qmodel = tfquant.quantize_model(float_model(), config)
        qmodel.set_weights(weights)
        optimizer = keras.optimizers.SGD(0.05)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = strategy.experimental_distribute_dataset(dataset.with_options(options))

    def replica_step(xb, yb):
        with tf.GradientTape() as tape:
            per_sample = tf.reduce_mean(tf.square(qmodel(xb, training=True) - yb), axis=-1)
            loss = tf.nn.compute_average_loss(per_sample, global_batch_size=global_batch)
        grads = tape.gradient(loss, qmodel.trainable_variables)
        optimizer.apply_gradients(zip(grads, qmodel.trainable_variables))

    @tf.function
    def step(xb, yb):
        strategy.run(replica_step, args=(xb, yb))

    for xb, yb in batches:
        step(xb, yb)
    return qmodel


def summary(qmodel) -> dict:
    """Everything the comparison needs, JSON-ready."""
    return {"weights": [w.tolist() for w in qmodel.get_weights()],
            "trainable": [w.numpy().tolist() for w in qmodel.trainable_weights],
            "ranges": quantizer_state(qmodel)}
