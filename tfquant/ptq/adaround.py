"""AdaRound (Nagel et al. 2020): learn whether each weight rounds up or down.

For a layer with weights W on the grid of scale s (from `tfquant.core.quant_params`), the soft
quantized weights are

    W~ = s * clamp(floor(W / s) + h(V), qmin, qmax),   h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)

with the rectified sigmoid's gamma = -0.1, zeta = 1.1, and V initialised so that h(V) is the
fractional part of W / s (W~ = W at the start). V minimises

    || f_a(W x + b) - f_a(W~ x^ + b) ||^2  +  lambda * sum(1 - |2 h(V) - 1|^beta)

where x is the layer's float input, x^ its input in the model whose preceding layers are already
quantized, f_a the layer's activation; beta is annealed from 20 to 2 (cosine) after a warm start
(20% of the iterations) without the regulariser; Adam, learning rate 1e-3, lambda 0.01 (AIMET's
defaults). Finally each weight rounds up where h(V) >= 0.5 (V >= 0).

1x1 convolutions with stride 1 and dense layers are optimised on random rows (pixels) rather
than whole images: the same objective, much cheaper.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tfquant.core import QuantSpec
from tfquant.core.weight_grid import kernel_scale, on_grid, split_on_grid
from tfquant.core.op_rules import linear_forward
from tfquant.graph import Node, node_kernel_on_grid, linear_op

GAMMA, ZETA = -0.1, 1.1


@dataclasses.dataclass
class AdaRoundResult:
    name: str
    iterations: int
    loss_nearest: float        # reconstruction MSE of round-to-nearest on the layer's data
    loss_adaround: float       # ... of the learned rounding
    flipped: float             # fraction of weights rounded away from the nearest value


def _rows_form(node: Node) -> bool:
    """Whether the layer is a per-pixel matmul (1x1 conv, stride 1, or a dense layer)."""
    if node.type == "matmul":
        return True
    if node.type != "conv2d":
        return False
    k = node.kernel
    return k.shape[0] == 1 and k.shape[1] == 1 and list(node.attrs["strides"]) == [1, 1, 1, 1] \
        and node.attrs.get("padding") in ("SAME", "VALID")


def _patches(node: Node, x: np.ndarray, target: np.ndarray, config, rng: np.random.Generator):
    """Random output patches of a conv / depthwise layer with the input windows they read.

    The input is padded once as the layer pads it (TF "SAME": the extra row / column after);
    an output patch [i0, i0 + p) then reads padded input rows [i0 * s, (i0 + p - 1) * s + k_eff)
    through a VALID convolution, exactly what the layer computes there. Returns (inputs,
    targets, op) with op the VALID version of the layer."""
    a = node.attrs
    kh, kw = node.kernel.shape[:2]
    sh, sw = a["strides"][1:3]
    dh, dw = a["dilations"][1:3]
    keh, kew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    n, h, w = x.shape[:3]
    oh, ow = target.shape[1:3]
    if a["padding"] == "SAME":
        ph, pw = max((oh - 1) * sh + keh - h, 0), max((ow - 1) * sw + kew - w, 0)
        pads = [[0, 0], [ph // 2, ph - ph // 2], [pw // 2, pw - pw // 2], [0, 0]]
    elif a["padding"] == "EXPLICIT":
        e = a["explicit_paddings"]
        pads = [[e[0], e[1]], [e[2], e[3]], [e[4], e[5]], [e[6], e[7]]]
    else:
        pads = [[0, 0]] * 4
    xp = np.pad(x, pads)
    p = min(config.adaround_patch, oh, ow)
    in_h, in_w = (p - 1) * sh + keh, (p - 1) * sw + kew
    positions = (oh - p + 1) * (ow - p + 1)
    patch_bytes = 4 * (in_h * in_w * x.shape[3] + p * p * target.shape[3])
    count = int(min(n * positions, max(n, min(2048, (256 << 20) // patch_bytes))))
    if count >= n * positions:      # every window: take them all
        img, i0, j0 = (a.reshape(-1) for a in np.meshgrid(np.arange(n), np.arange(oh - p + 1),
                                                          np.arange(ow - p + 1), indexing="ij"))
    else:
        img = rng.integers(0, n, count)
        i0 = rng.integers(0, oh - p + 1, count)
        j0 = rng.integers(0, ow - p + 1, count)
    xs = np.stack([xp[b, i * sh:i * sh + in_h, j * sw:j * sw + in_w] for b, i, j in zip(img, i0, j0)])
    ts = np.stack([target[b, i:i + p, j:j + p] for b, i, j in zip(img, i0, j0)])
    valid = node.clone()
    valid.attrs["padding"] = "VALID"
    valid.attrs["explicit_paddings"] = []
    return xs, ts, linear_op(valid)


def _h(v):
    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def adaround_layer(node: Node, x_quant: np.ndarray, target: np.ndarray, spec: QuantSpec, lo, hi, config,
                   rng: np.random.Generator) -> tuple[np.ndarray, AdaRoundResult]:
    """Learned on-grid kernel for `node`, and how it compares with round-to-nearest.

    x_quant: the layer's input in the partly quantized model [N, ...]; target: the float
    layer's activation output f_a(W x + b) [N, ..., C]."""
    s = kernel_scale(lo, hi, spec, node.kernel.shape, depthwise=node.type == "depthwise")
    w = node.kernel.astype(np.float32)
    w_floor, rest = split_on_grid(w, s)
    v0 = -np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)
    bias = np.zeros(node.out_channels, np.float32) if node.bias is None else node.bias.astype(np.float32)

    rows = _rows_form(node)
    if rows:
        cin = w.shape[-2]
        xs = x_quant.reshape(-1, cin)
        ts = target.reshape(-1, target.shape[-1])
        shape2d = (cin, w.shape[-1])

        def op(x, k):
            return tf.matmul(x, tf.reshape(k, shape2d))
        batch = min(config.adaround_rows, xs.shape[0])
    else:
        xs, ts, op = _patches(node, x_quant, target, config, rng)
        batch = min(config.adaround_batch_size, xs.shape[0])

    s_t, floor_t, b_t = tf.constant(s), tf.constant(w_floor, tf.float32), tf.constant(bias)
    v = tf.Variable(v0.astype(np.float32))
    m = tf.Variable(tf.zeros_like(v))
    u = tf.Variable(tf.zeros_like(v))
    t_var = tf.Variable(0.0)
    lr = config.adaround_learning_rate
    b1, b2, eps = 0.9, 0.999, 1e-8

    def recon(xb, tb, kernel):
        y = linear_forward(op, xb, kernel, b_t, node.activation)
        return tf.reduce_mean(tf.reduce_sum(tf.square(y - tb), axis=-1))

    iters = config.adaround_iterations
    warm = int(config.adaround_warm_start * iters)
    beta_start, beta_end = (float(b) for b in config.adaround_beta)
    n = xs.shape[0]
    xs_t, ts_t = tf.constant(xs), tf.constant(ts)
    gen = tf.random.Generator.from_seed(int(rng.integers(0, 2**31 - 1)))

    def step(it):
        # beta: constant during the warm start (no regulariser), then cosine from start to end
        progress = tf.maximum(tf.cast(it - warm, tf.float32), 0.0) / float(max(iters - warm, 1))
        beta = beta_end + 0.5 * (beta_start - beta_end) * (1.0 + tf.cos(progress * math.pi))
        reg_weight = tf.where(it < warm, 0.0, float(config.adaround_reg))
        if n > batch:
            idx = gen.uniform([batch], 0, n, dtype=tf.int32)
            xb, tb = tf.gather(xs_t, idx), tf.gather(ts_t, idx)
        else:
            xb, tb = xs_t, ts_t
        with tf.GradientTape() as tape:
            h = _h(v)
            rec = recon(xb, tb, on_grid(floor_t + h, s_t, spec))
            reg = tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
            loss = rec + reg_weight * reg
        g = tape.gradient(loss, v)
        t_var.assign_add(1.0)
        m.assign(b1 * m + (1 - b1) * g)
        u.assign(b2 * u + (1 - b2) * tf.square(g))
        m_hat = m / (1 - tf.pow(b1, t_var))
        u_hat = u / (1 - tf.pow(b2, t_var))
        v.assign_sub(lr * m_hat / (tf.sqrt(u_hat) + eps))

    @tf.function
    def train():
        for it in tf.range(iters):
            step(it)

    train()

    up = (v.numpy() >= 0.0).astype(np.float32)
    learned = on_grid(w_floor + up, s, spec)
    nearest = np.asarray(node_kernel_on_grid(node, tf.constant(w), lo, hi, spec))   # core's rounding

    def full_loss(kernel):
        total, count = 0.0, 0
        k = tf.constant(kernel)
        for start in range(0, n, max(batch, 256)):
            xb, tb = xs_t[start:start + max(batch, 256)], ts_t[start:start + max(batch, 256)]
            total += float(recon(xb, tb, k)) * int(xb.shape[0])
            count += int(xb.shape[0])
        return total / max(count, 1)

    loss_n, loss_a = full_loss(nearest), full_loss(learned)
    if loss_a > loss_n:           # never worse than round-to-nearest on the layer's own data
        learned, loss_a = nearest, loss_n
    flipped = float(np.mean(np.abs(learned - nearest) > 0.5 * s))
    return learned, AdaRoundResult(node.name, iters, loss_n, loss_a, flipped)
