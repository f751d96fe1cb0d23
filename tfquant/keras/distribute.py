"""Cross-replica statistics for quantizer state under `tf.distribute` strategies.

A quantizer's moving-average range and a batch-statistics BN fold must see the *global* batch, so
that N replicas give the same variables as one device: every replica reduces its own batch, then
the replicas exchange those partial results (`all_gather` for min/max, which `ReduceOp` lacks; an
`all_reduce(SUM)` for sums) and all compute the same global value. Variables updated from these
values use `aggregation="only_first_replica"`.

Outside a strategy (or with one replica) these are plain reductions.
"""
from __future__ import annotations

import tensorflow as tf


def _replica_context():
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def global_min_max(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Min and max of `x` over the global batch (all replicas)."""
    x = tf.cast(x, tf.float32)
    local = tf.stack([-tf.reduce_min(x), tf.reduce_max(x)])
    ctx = _replica_context()
    if ctx is not None:
        local = tf.reduce_max(ctx.all_gather(local[None], axis=0), axis=0)
    return -local[0], local[1]


def global_moments(x: tf.Tensor, axes) -> tuple[tf.Tensor, tf.Tensor]:
    """Mean and (biased) variance of `x` over `axes` and over all replicas' batches."""
    x = tf.cast(x, tf.float32)
    count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), axes)), tf.float32)
    total = tf.reduce_sum(x, axis=axes)
    squares = tf.reduce_sum(tf.square(x), axis=axes)
    ctx = _replica_context()
    if ctx is not None:
        total, squares, count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [total, squares, count])
    mean = total / count
    variance = tf.maximum(squares / count - tf.square(mean), 0.0)
    return mean, variance
