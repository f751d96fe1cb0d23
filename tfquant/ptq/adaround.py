"""AdaRound (Nagel et al. 2020): learn whether each weight rounds up or down.

For a layer with weights W on the grid of scale s (from `tfquant.core.quant_params`), the soft
quantized weights are

    W~ = s * clamp(floor(W / s) + h(V), qmin, qmax),   h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)

with the rectified sigmoid's gamma = -0.1, zeta = 1.1, and V initialised so that h(V) is the
fractional part of W / s (W~ = W at the start). V minimises

    || f_a(W x + b) - f_a(W~ x^ + b) ||^2  +  lambda * sum(1 - |2 h(V) - 1|^beta)

where x is the layer's float input, x^ its input in the model whose preceding layers are already
quantized, f_a the layer's activation; beta is annealed from 20 to 2 (cosine) after a warm start
without the regulariser; Adam, lambda 0.01 (AIMET's defaults). Finally each weight rounds up
where h(V) >= 0.5 (V >= 0).

Every layer is optimised on output *pixels* (rows): each output pixel of a convolution depends
only on its input window, so a bounded pool of random output pixels is drawn once per layer with
the input windows they read (im2col; a 1x1 convolution or a dense layer: the input pixel itself),
and each step is a matmul (a multiply-and-sum for depthwise) on a random batch of the pool: the
same objective as on whole images, without convolution backprops. The optimisation runs in
compiled chunks (one `tf.function` per kind of layer, traced once for every shape) and returns to
Python between chunks: a Ctrl-C is acted on there (`tfquant.Interrupted`; `tfquant.interrupt`
keeps one pressed while TF traces from being lost). It stops early once every h(V) is exactly 0
or 1 (then neither term has a gradient left: the rounding cannot change any more).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tfquant.core import QuantSpec, fake_quant
from tfquant.core.op_rules import linear_forward
from tfquant.core.weight_grid import kernel_scale, on_grid, split_on_grid
from tfquant.errors import Interrupted
from tfquant.graph import Node, node_kernel_on_grid
from tfquant.interrupt import deferred_interrupt

GAMMA, ZETA = -0.1, 1.1
POOL_BYTES = 256 << 20      # a layer's pool of (input window, target) rows, at most
POOL_ROWS = 16384
BATCH_BYTES = 4 << 20       # the rows one step gathers, at most (a 5x5 depthwise: ~100 rows)
XLA_WEIGHTS = 1 << 19       # layers with at least this many weights run their steps under XLA: it
                            # fuses the kernel-sized element-wise work (a 1280x1000 classifier:
                            # 2x faster steps, ~3 s to compile); smaller layers would not repay it
CHUNK_STEPS = 25            # a compiled chunk of steps (well under a second) returns to Python:
CHUNK_WEIGHTS = 25 << 17    # ... fewer on large kernels (at most this many weight-steps): a count
                            # fixed by the shape, so where the rounding stops never depends on timing


@dataclasses.dataclass
class AdaRoundResult:
    name: str
    iterations: int            # steps run (fewer than configured when the rounding converged)
    loss_nearest: float        # reconstruction MSE of round-to-nearest on the layer's pool of rows
    loss_adaround: float       # ... of the learned rounding
    flipped: float             # fraction of weights rounded away from the nearest value
    soft: float = 0.0          # fraction of h(V) strictly between 0 and 1 at the end
    seconds: float = 0.0       # wall time of the layer (pool, optimisation, evaluation)


def _pixel_rows(node: Node) -> bool:
    """Whether every input pixel is one output pixel's whole input (1x1 conv, stride 1; dense)."""
    if node.type == "matmul":
        return True
    k = node.kernel
    return node.type == "conv2d" and k.shape[0] == 1 and k.shape[1] == 1 \
        and list(node.attrs["strides"]) == [1, 1, 1, 1] and list(node.attrs["dilations"]) == [1, 1, 1, 1] \
        and node.attrs.get("padding") in ("SAME", "VALID")


def layer_pool(node: Node, x: np.ndarray, target: np.ndarray, rng: np.random.Generator,
               max_rows: int = POOL_ROWS, x_other: Optional[np.ndarray] = None) -> tuple[np.ndarray, ...]:
    """A pool of random output pixels of `node`, compact: (pixels, table, targets).

    pixels [P, Cin]: the distinct input pixels the pool reads, then a row of zeros (padding);
    table [R, T] (int32): row r's input window as indices into pixels (T = kh * kw; 1 for 1x1
    convolutions and dense layers); targets [R, Cout]. `pixels[table]` is the pool of input
    windows (see `layer_rows`) without its overlapping windows stored once per row.
    `x_other` (x's shape, e.g. the float input beside the quantized one): a fourth item, its
    pixels at the same places (the same rows as without it)."""
    cout = target.shape[-1]
    cin = x.shape[-1]
    if _pixel_rows(node):
        total = int(np.prod(x.shape[:-1]))
        cap = int(min(max_rows, max(1, POOL_BYTES // (4 * (cin + cout)))))
        flat = np.arange(total) if total <= cap else np.sort(rng.choice(total, cap, replace=False))
        pixel = flat[:, None]
        ts = target.reshape(-1, cout)[flat]
        inside = None
    else:
        a = node.attrs
        kh, kw = node.kernel.shape[:2]
        sh, sw = a["strides"][1:3]
        dh, dw = a["dilations"][1:3]
        keh, kew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        n, h, w = x.shape[:3]
        oh, ow = target.shape[1:3]
        if a["padding"] == "SAME":
            ph, pw = max((oh - 1) * sh + keh - h, 0), max((ow - 1) * sw + kew - w, 0)
            top, left = ph // 2, pw // 2
        elif a["padding"] == "EXPLICIT":
            e = a["explicit_paddings"]
            top, left = e[2], e[4]
        else:
            top = left = 0
        total = n * oh * ow
        cap = int(min(max_rows, total, max(1, POOL_BYTES // (4 * (kh * kw * cin + cout)))))
        flat = np.arange(total) if cap >= total else np.sort(rng.choice(total, cap, replace=False))
        b, i, j = np.unravel_index(flat, (n, oh, ow))
        rows = (i * sh - top)[:, None, None] + dh * np.arange(kh)[None, :, None]      # [R, kh, 1]
        cols = (j * sw - left)[:, None, None] + dw * np.arange(kw)[None, None, :]     # [R, 1, kw]
        inside = ((rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)).reshape(len(flat), -1)
        pixel = ((b[:, None, None] * h + np.clip(rows, 0, h - 1)) * w + np.clip(cols, 0, w - 1)).reshape(len(flat), -1)
        ts = target[b, i, j]
    used, table = np.unique(pixel, return_inverse=True)
    table = table.reshape(pixel.shape).astype(np.int32)
    if inside is not None:
        table[~inside] = len(used)                 # padding: the row of zeros
    ts = np.ascontiguousarray(ts, np.float32)
    pools = []
    for source in (x,) if x_other is None else (x, x_other):
        pixels = np.empty((len(used) + 1, cin), np.float32)
        np.take(source.reshape(-1, cin), used, axis=0, out=pixels[:-1])
        pixels[-1] = 0.0
        pools.append(pixels)
    return (pools[0], table, ts) if x_other is None else (pools[0], table, ts, pools[1])


def layer_rows(node: Node, x: np.ndarray, target: np.ndarray, rng: np.random.Generator,
               max_rows: int = POOL_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """A pool of random output pixels of `node`: (their inputs, their targets), `layer_pool`
    expanded. Inputs are [R, K] (K = kh * kw * Cin: the input window, flattened as the kernel)
    for convolutions and dense layers, [R, kh * kw, C] for depthwise; targets [R, Cout]. The
    input is padded as the layer pads it (TF "SAME": the extra row / column after)."""
    pixels, table, ts = layer_pool(node, x, target, rng, max_rows)
    windows = pixels[table]                                   # [R, T, Cin]
    if node.type != "depthwise":
        windows = windows.reshape(len(table), -1)
    return windows, ts


def _h(v):
    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _forward(depthwise: bool, activation) -> Callable:
    """f_a(rows . kernel + b) on rows from `layer_rows` (core's linear_forward). The kernel comes
    as [K, Cout] (convolutions, dense) or [kh * kw, C, M] (depthwise), so that one trace serves
    every layer shape."""
    if depthwise:
        def op(x, k):       # y[r, c, m] = sum over the window of x[r, t, c] * k[t, c, m]
            y = tf.reduce_sum(x[:, :, :, None] * k[None], axis=1)
            return tf.reshape(y, (tf.shape(x)[0], -1))
    else:
        op = tf.matmul
    return lambda x, k, b: linear_forward(op, x, k, b, activation)


class _Compiled:
    """The compiled training chunk and loss of one kind of layer (see `compiled`)."""

    def __init__(self, depthwise: bool, activation, spec: QuantSpec, batch: int, gather: bool,
                 xla: bool = False, qdrop: bool = False, out_quant: bool = False):
        fwd = _forward(depthwise, activation)
        self.traces = 0

        def recon(xb, tb, kernel, bias, out_lo=None, out_hi=None):
            y = fwd(xb, kernel, bias)
            if out_quant:         # the output on its int8 activation grid (straight-through)
                y = fake_quant(y, out_lo, out_hi, QuantSpec.activation())
            return tf.reduce_mean(tf.reduce_sum(tf.square(y - tb), axis=-1))

        def windows(pixels, table):
            """pixels[table]: input windows [B, T, Cin], flattened to [B, T * Cin] but for depthwise."""
            xb = tf.gather(pixels, table)
            return xb if depthwise else tf.reshape(xb, (tf.shape(table)[0], -1))

        def chunk(v, m, u, pixels, pixels_f, table, ts, floor, s, bias, start, count, hp, seed):
            """`count` Adam steps from step `start`; hp = [iterations, warm, lr, reg, beta0, beta1,
            drop, out_lo, out_hi]. With `qdrop`, each input element of a step is pixels_f's with
            probability drop (else pixels'); without, pixels_f is not read. With `out_quant`, the
            loss sees the output fake-quantized to (out_lo, out_hi)."""
            self.traces += 1      # Python side effect: runs once per trace
            iters, warm, lr, reg, beta_start, beta_end, drop, out_lo, out_hi = (hp[k] for k in range(9))
            n = tf.shape(table)[0]
            if not gather:
                xs = windows(pixels, table)
                xs_f = windows(pixels_f, table) if qdrop else None

            def mixed(xq, xf, i):
                keep = tf.random.stateless_uniform(tf.shape(xq), tf.stack([seed, -1 - (start + i)])) >= drop
                return tf.where(keep, xq, xf)

            def body(i, v, m, u):
                it = tf.cast(start + i, tf.float32)
                progress = tf.maximum(it - warm, 0.0) / tf.maximum(iters - warm, 1.0)
                beta = beta_end + 0.5 * (beta_start - beta_end) * (1.0 + tf.cos(progress * math.pi))
                if gather:
                    idx = tf.random.stateless_uniform([batch], tf.stack([seed, start + i]), 0, n, tf.int32)
                    rows = tf.gather(table, idx)
                    xb, tb = windows(pixels, rows), tf.gather(ts, idx)
                    if qdrop:
                        xb = mixed(xb, windows(pixels_f, rows), i)
                else:
                    xb, tb = (mixed(xs, xs_f, i) if qdrop else xs), ts
                with tf.GradientTape() as tape:
                    tape.watch(v)
                    h = _h(v)
                    # The regulariser only after the warm start (before it, its weight is 0: the
                    # same gradient, without its kernel-sized work)
                    reg_term = tf.cond(it < warm, lambda: tf.zeros([]), lambda: reg * tf.reduce_sum(
                        1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta)))
                    loss = recon(xb, tb, on_grid(floor + h, s, spec), bias, out_lo, out_hi) + reg_term
                g = tape.gradient(loss, v)
                m = 0.9 * m + 0.1 * g
                u = 0.999 * u + 0.001 * tf.square(g)
                t = it + 1.0
                v = v - lr * (m / (1.0 - tf.pow(0.9, t))) / (tf.sqrt(u / (1.0 - tf.pow(0.999, t))) + 1e-8)
                return i + 1, v, m, u

            _, v, m, u = tf.while_loop(lambda i, *_: i < count, body, (tf.constant(0), v, m, u))
            h = _h(v)
            soft = tf.reduce_mean(tf.cast((h > 0.0) & (h < 1.0), tf.float32))
            return v, m, u, soft

        def loss(pixels, table, ts, kernel, bias):
            """recon over the whole pool, in blocks of `batch` rows (no expanded pool in memory)."""
            self.traces += 1
            n = tf.shape(table)[0]

            def body(start, total):
                rows = tf.range(start, tf.minimum(start + batch, n))
                err = tf.square(fwd(windows(pixels, tf.gather(table, rows)), kernel, bias) - tf.gather(ts, rows))
                return start + batch, total + tf.reduce_sum(err)

            _, total = tf.while_loop(lambda start, _: start < n, body, (tf.constant(0), tf.constant(0.0)))
            return total / tf.cast(n, tf.float32)

        rank = 3 if depthwise else 2
        k_spec = tf.TensorSpec([None] * rank, tf.float32)
        p_spec = tf.TensorSpec([None, None], tf.float32)
        table_spec = tf.TensorSpec([None, None], tf.int32)
        t_spec = tf.TensorSpec([None, None], tf.float32)
        b_spec = tf.TensorSpec([None], tf.float32)
        i_spec = tf.TensorSpec([], tf.int32)
        # Shapes left open: one trace for every layer of this kind. XLA only for the largest
        # kernels (XLA_WEIGHTS): on 2 CPU cores it compiles each shape in 2-6 s, more than it
        # saves at a few hundred steps on a smaller layer. functools.partial: TF's retracing warning counts the traces
        # of one Python function's code across every tf.function made from it.
        self.chunk = tf.function(functools.partial(chunk), input_signature=[
            k_spec, k_spec, k_spec, p_spec, p_spec, table_spec, t_spec, k_spec, k_spec, b_spec, i_spec, i_spec,
            tf.TensorSpec([9], tf.float32), i_spec], jit_compile=xla or None)
        self.loss = tf.function(functools.partial(loss), input_signature=[p_spec, table_spec, t_spec, k_spec, b_spec])


_CACHE: dict[tuple, _Compiled] = {}


def compiled(depthwise: bool, activation, spec: QuantSpec, batch: int, gather: bool,
             xla: bool = False, qdrop: bool = False, out_quant: bool = False) -> _Compiled:
    """The compiled steps for a kind of layer (depthwise or not, activation, weight grid, batch
    rows, whether steps sample the pool, whether they mix in the float input): layers of any
    shape share its one trace; whether the loss quantizes the output)."""
    key = (depthwise, activation, spec.qmin, spec.qmax, batch, gather, xla, qdrop, out_quant)
    if key not in _CACHE:
        _CACHE[key] = _Compiled(depthwise, activation, spec, batch, gather, xla, qdrop, out_quant)
    return _CACHE[key]


def adaround_layer(node: Node, x_quant: np.ndarray, target: np.ndarray, spec: QuantSpec, lo, hi, config,
                   rng: np.random.Generator, x_float: Optional[np.ndarray] = None,
                   out_range: Optional[tuple[float, float]] = None) -> tuple[np.ndarray, AdaRoundResult]:
    """Learned on-grid kernel for `node`, and how it compares with round-to-nearest.

    x_quant: the layer's input in the partly quantized model [N, ...]; target: the float
    layer's activation output f_a(W x + b) [N, ..., C]; x_float: the float model's input of the
    layer, mixed into each step's input element by element with probability
    `config.adaround_qdrop` (QDrop, Wei et al. 2022; needed when that is > 0); out_range: the
    (min, max) of the layer's int8 output, which the loss then quantizes the output to (BRECQ's
    activation quantization in the reconstruction). Raises `tfquant.Interrupted` on Ctrl-C."""
    started = time.perf_counter()
    stop = Interrupted(f"AdaRound interrupted (Ctrl-C) at layer {node.name!r}; the model is not quantized.")
    try:
        with deferred_interrupt() as pressed:
            return _adaround_layer(node, x_quant, target, spec, lo, hi, config, rng, started, x_float, out_range,
                                   pressed, stop)
    except KeyboardInterrupt as e:
        if isinstance(e, Interrupted):
            raise
        raise stop from None


def _adaround_layer(node, x_quant, target, spec, lo, hi, config, rng, started, x_float, out_range, pressed, stop):
    depthwise = node.type == "depthwise"
    w = node.kernel.astype(np.float32)
    if node.type == "conv2d" and w.shape[2] != x_quant.shape[-1]:     # grouped: round to nearest
        nearest = np.asarray(node_kernel_on_grid(node, tf.constant(w), lo, hi, spec))
        return nearest, AdaRoundResult(node.name, 0, 0.0, 0.0, 0.0, 0.0, time.perf_counter() - started)
    s = kernel_scale(lo, hi, spec, node.kernel.shape, depthwise=depthwise)
    w_floor, rest = split_on_grid(w, s)
    v0 = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    bias = np.zeros(node.out_channels, np.float32) if node.bias is None else node.bias.astype(np.float32)

    drop = float(config.adaround_qdrop)
    qdrop = drop > 0.0
    if qdrop and x_float is None:
        raise ValueError(f"AdaRound with adaround_qdrop={drop} at layer {node.name!r} needs the layer's "
                         "float input (x_float).")
    if qdrop:
        pixels, table, ts, pixels_f = layer_pool(node, x_quant, target, rng, x_other=x_float)
    else:
        pixels, table, ts = layer_pool(node, x_quant, target, rng)
    row_bytes = 4 * (table.shape[1] * pixels.shape[1] + ts.shape[1])
    batch = int(min(config.adaround_rows, max(64, BATCH_BYTES // row_bytes)))
    gather = table.shape[0] > batch
    fn = compiled(depthwise, node.activation, spec, batch, gather, xla=w.size >= XLA_WEIGHTS, qdrop=qdrop,
                  out_quant=out_range is not None)
    out_lo, out_hi = (0.0, 0.0) if out_range is None else (float(out_range[0]), float(out_range[1]))
    shape = (w.shape[0] * w.shape[1], w.shape[2], w.shape[3]) if depthwise else (-1, w.shape[-1])
    s = np.broadcast_to(s, w.shape).reshape(shape)        # the kernel as the compiled op takes it
    w_floor, v0 = w_floor.reshape(shape), v0.reshape(shape)

    iters = config.adaround_iterations
    warm = int(config.adaround_warm_start * iters)
    beta_start, beta_end = (float(b) for b in config.adaround_beta)
    hp = tf.constant([iters, warm, config.adaround_learning_rate, config.adaround_reg, beta_start, beta_end,
                      drop, out_lo, out_hi], tf.float32)
    seed = tf.constant(int(rng.integers(0, 2**31 - 1)), tf.int32)
    pool = (tf.constant(pixels), tf.constant(table), tf.constant(ts))   # round-to-nearest check: x_quant
    pixels_t = pool[0]
    pixels_f_t = tf.constant(pixels_f) if qdrop else pixels_t
    s_t, floor_t, b_t = tf.constant(s), tf.constant(w_floor, tf.float32), tf.constant(bias)
    v = tf.constant(v0.astype(np.float32))
    m = u = tf.zeros_like(v)
    tol = config.adaround_converged
    per_chunk = int(min(CHUNK_STEPS, max(1, CHUNK_WEIGHTS // w.size)))
    done, count, soft = 0, min(per_chunk, iters), 1.0
    while done < iters:
        v, m, u, soft_t = fn.chunk(v, m, u, pixels_t, pixels_f_t, *pool[1:], floor_t, s_t, b_t, tf.constant(done, tf.int32),
                                   tf.constant(count, tf.int32), hp, seed)
        soft = float(soft_t)                         # waits for the chunk: Ctrl-C is acted on here
        if pressed():
            raise stop
        done += count
        if tol is not None and done > warm and soft <= tol:
            break
        count = min(iters - done, per_chunk)

    up = (v.numpy() >= 0.0).astype(np.float32)
    learned = on_grid(w_floor + up, s, spec).reshape(w.shape)
    nearest = np.asarray(node_kernel_on_grid(node, tf.constant(w), lo, hi, spec))   # core's rounding
    loss_n = float(fn.loss(*pool, tf.constant(nearest.reshape(shape)), b_t))
    loss_a = float(fn.loss(*pool, tf.constant(learned.reshape(shape)), b_t))
    if loss_a > loss_n:           # never worse than round-to-nearest on the layer's own data
        learned, loss_a = nearest, loss_n
    flipped = float(np.mean(np.abs(learned - nearest) > 0.5 * s.reshape(w.shape)))
    return learned, AdaRoundResult(node.name, done, loss_n, loss_a, flipped, soft,
                                   time.perf_counter() - started)
