"""Cross-layer equalization (Nagel et al. 2019) and high-bias absorption.

Two layers joined through a positively homogeneous activation can trade a per-channel factor:
layer 1's output channel c (kernel and bias) is divided by s_c and layer 2's input channel c is
multiplied by it. With r = per-channel max |W|,

    pairs:     s = sqrt(r1 * r2) / r2                      (both ranges become sqrt(r1 r2))
    triplets:  conv -> depthwise -> conv, S12 = r1 / cbrt(r1 r2 r3), S23 = cbrt(r1 r2 r3) / r3
    chains:    longer conv / depthwise chains are equalized pair by pair until they converge

A channel whose range is (nearly) zero keeps scale 1.

ReLU6 is homogeneous only below its clip: relu6(z / s) * s = min(relu(z), 6 s). Two policies:
"relu" replaces every ReLU6 by ReLU first (the paper and AIMET; changes the float model unless
no ReLU6 ever clips), "bounded" keeps ReLU6 and limits each channel's cumulative scale S so that
the clip still holds: a channel whose calibrated pre-activation maximum M reaches 6 keeps S = 1;
the others need S >= M / 6 (so M / S stays below 6). Without calibration data the clip cannot be
checked and ReLU6 channels keep S = 1 (batch-norm statistics proved no guarantee). Optionally
(`cle_activation_bound`) no channel's activation may grow above the largest one of its tensor
(S >= A_c / max A).

High-bias absorption moves c = max(0, min z) (data; or beta - 3 |gamma| from the batch norm,
data-free) out of layer 1's bias into layer 2's: b1 -= c, b2 += W2 . c. Exact when the ReLU never
clips and layer 2 does not pad its input (padded zeros would have to be -c). Through ReLU6 only
channels whose calibrated maximum stays below 6 absorb (none without data).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tfquant.graph import Chain, Graph, Node, equalization_chains
from tfquant.ptq.bn_folding import scale_node_output_channels

ZERO_RANGE = 1e-5   # a channel whose range is below this fraction of its tensor's largest is "zero"


@dataclasses.dataclass
class ChannelRange:
    """Calibrated per-channel minimum and maximum of a linear node's pre-activation output."""

    min: np.ndarray
    max: np.ndarray

    def scaled(self, s: np.ndarray) -> "ChannelRange":
        return ChannelRange(self.min / s, self.max / s)

    def shifted(self, c: np.ndarray) -> "ChannelRange":
        return ChannelRange(self.min - c, self.max - c)


# ---------------------------------------------------------------------------------------------
# per-channel weight ranges and rescaling
# ---------------------------------------------------------------------------------------------
def output_channel_range(node: Node) -> np.ndarray:
    """max |W| per output channel (for a depthwise kernel with multiplier 1: per channel)."""
    k = np.abs(node.kernel.astype(np.float64))
    if node.type == "depthwise":
        return k.max(axis=(0, 1)).reshape(-1)
    return k.reshape(-1, k.shape[-1]).max(axis=0)


def input_channel_range(node: Node) -> np.ndarray:
    """max |W| per input channel."""
    k = np.abs(node.kernel.astype(np.float64))
    if node.type == "conv2d":
        return k.max(axis=(0, 1, 3))
    if node.type == "depthwise":
        return k.max(axis=(0, 1, 3))
    return k.max(axis=1)


def scale_input_channels(node: Node, factor: np.ndarray) -> None:
    """Multiply a linear node's input channel c by factor[c]."""
    k = node.kernel.astype(np.float64)
    f = np.asarray(factor, np.float64)
    if node.type in ("conv2d", "depthwise"):
        k = k * f[None, None, :, None]
    else:
        k = k * f[:, None]
    node.weights["kernel"] = k.astype(np.float32)


def _rescale(producer: Node, consumer: Node, s: np.ndarray, pre_ranges: dict) -> None:
    """Divide producer's output channels by s and multiply consumer's inputs by s."""
    scale_node_output_channels(producer, 1.0 / s)
    if producer.out_stats is not None:
        producer.out_stats = producer.out_stats.scaled(1.0 / s)
    if producer.name in pre_ranges:
        pre_ranges[producer.name] = pre_ranges[producer.name].scaled(s)
    scale_input_channels(consumer, s)


def _pair_scale(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """s = sqrt(r1 r2) / r2, 1 where either range is (nearly) zero."""
    ok = (r1 > ZERO_RANGE * max(r1.max(), 1e-30)) & (r2 > ZERO_RANGE * max(r2.max(), 1e-30))
    return np.where(ok, np.sqrt(np.where(ok, r1 * r2, 1.0)) / np.where(ok, r2, 1.0), 1.0)


def relu6_to_relu(graph: Graph) -> int:
    """Replace every ReLU6 (fused or standalone) by ReLU. Returns the number replaced."""
    count = 0
    for node in graph:
        if node.activation == "relu6":
            node.activation = "relu"
            count += 1
        elif node.type == "relu6":
            node.type = "relu"
            count += 1
    return count


# ---------------------------------------------------------------------------------------------
# bounds of the scales
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Bounds:
    lower: np.ndarray       # cumulative scale S >= lower
    fixed: np.ndarray       # S == 1


def _pre_range(node: Node, pre_ranges: dict, sigmas: float, data_free: bool) -> Optional[ChannelRange]:
    if not data_free and node.name in pre_ranges:
        return pre_ranges[node.name]
    if node.out_stats is not None:
        st = node.out_stats
        return ChannelRange(st.mean - sigmas * st.std, st.mean + sigmas * st.std)
    return None


def _bounds(node: Node, pre_ranges: dict, config, data_free: bool) -> _Bounds:
    c = node.out_channels
    lower, fixed = np.zeros(c), np.zeros(c, bool)
    rng = _pre_range(node, pre_ranges, config.bn_sigmas, data_free)
    if node.activation == "relu6":
        cap = 6.0 * config.relu6_headroom
        if data_free or node.name not in pre_ranges:
            # Without data the clip cannot be checked: batch-norm statistics are no guarantee
            # that a channel never reaches 6 (on EfficientNet-Lite0 trusting them breaks the
            # float model), so ReLU6 channels keep scale 1.
            return _Bounds(lower, np.ones(c, bool))
        fixed |= rng.max >= cap
        lower = np.maximum(lower, np.where(fixed, 0.0, np.maximum(rng.max, 0.0) / cap))
    if config.cle_activation_bound and rng is not None:
        lo, hi = rng.min, rng.max
        if node.activation in ("relu", "relu6"):
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        if node.activation == "relu6":
            hi = np.minimum(hi, 6.0)
        a = np.maximum(np.abs(lo), np.abs(hi))
        if a.max() > 0:
            lower = np.maximum(lower, a / a.max())
    return _Bounds(lower, fixed)


def _clip(s_new: np.ndarray, b: _Bounds) -> np.ndarray:
    return np.where(b.fixed, 1.0, np.maximum(s_new, b.lower))


# ---------------------------------------------------------------------------------------------
# equalization
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class EqualizationReport:
    chains: list[list[str]]
    scales: dict[str, np.ndarray]      # producer node name -> cumulative scale of its outputs
    relu6_replaced: int = 0

    def summary(self) -> str:
        fixed = sum(int(np.sum(s == 1.0)) for s in self.scales.values())
        total = sum(s.size for s in self.scales.values())
        return (f"CLE: {len(self.chains)} chains, {len(self.scales)} connections, "
                f"{total - fixed}/{total} channels rescaled")


def equalize(graph: Graph, config, pre_ranges: Optional[dict] = None, data_free: bool = False,
             max_sweeps: int = 100, tol: float = 1e-6) -> EqualizationReport:
    """Cross-layer equalization of every chain of `graph` (activations already fused).

    `pre_ranges`: calibrated `ChannelRange` per linear node (updated in place)."""
    pre_ranges = {} if pre_ranges is None else pre_ranges
    replaced = relu6_to_relu(graph) if config.relu6_policy == "relu" else 0
    chains = equalization_chains(graph)
    scales: dict[str, np.ndarray] = {}
    for chain in chains:
        _equalize_chain(chain, config, pre_ranges, data_free, scales, max_sweeps, tol)
    return EqualizationReport([[n.name for n in c.layers] for c in chains], scales, replaced)


def _equalize_chain(chain: Chain, config, pre_ranges, data_free, scales, max_sweeps, tol) -> None:
    layers = chain.layers
    n = len(layers) - 1
    bounds = [_bounds(layers[k], pre_ranges, config, data_free) for k in range(n)]
    S = [np.ones(layers[k].out_channels) for k in range(n)]

    def step(k: int, s: np.ndarray) -> float:
        s_cum = _clip(S[k] * s, bounds[k])
        s_eff = s_cum / S[k]
        if np.all(s_eff == 1.0):
            return 0.0
        _rescale(layers[k], layers[k + 1], s_eff, pre_ranges)
        S[k] = s_cum
        return float(np.max(np.abs(np.log(s_eff))))

    if chain.is_triplet:
        r1, r2, r3 = output_channel_range(layers[0]), output_channel_range(layers[1]), input_channel_range(layers[2])
        ok = np.minimum(np.minimum(r1 / r1.max(), r2 / r2.max()), r3 / r3.max()) > ZERO_RANGE
        c = np.cbrt(np.where(ok, r1 * r2 * r3, 1.0))
        step(0, np.where(ok, r1 / np.where(ok, c, 1.0), 1.0))             # S12
        r2, r3 = output_channel_range(layers[1]), input_channel_range(layers[2])
        step(1, _pair_scale(r2, r3))                                       # = cbrt(r1 r2 r3) / r3
    for _ in range(max_sweeps):
        change = 0.0
        for k in range(n):
            change = max(change, step(k, _pair_scale(output_channel_range(layers[k]),
                                                      input_channel_range(layers[k + 1]))))
        if change < tol:
            break
    for k in range(n):
        scales[layers[k].name] = S[k]


# ---------------------------------------------------------------------------------------------
# high-bias absorption
# ---------------------------------------------------------------------------------------------
def absorbed_bias(node: Node, c: np.ndarray) -> np.ndarray:
    """W . c: what layer `node` adds to its output when its input channels grow by c."""
    k = node.kernel.astype(np.float64)
    if node.type == "conv2d":
        return np.einsum("hwio,i->o", k, c)
    if node.type == "depthwise":
        return np.einsum("hwcm,c->cm", k, c).reshape(-1)
    return c @ k


def _add_bias(node: Node, delta: np.ndarray) -> None:
    b = np.zeros(node.out_channels) if node.bias is None else node.bias.astype(np.float64)
    node.weights["bias"] = (b + delta).astype(np.float32)


def absorb_high_biases(graph: Graph, config, pre_ranges: Optional[dict] = None,
                       data_free: bool = False) -> dict[str, int]:
    """High-bias absorption over every chain's connections. Returns {layer: channels absorbed}."""
    pre_ranges = {} if pre_ranges is None else pre_ranges
    done: dict[str, int] = {}
    for chain in equalization_chains(graph):
        for k in range(len(chain.layers) - 1):
            producer, consumer = chain.layers[k], chain.layers[k + 1]
            if producer.activation not in ("relu", "relu6"):
                continue
            if chain.padded(k) and not config.absorb_through_padding:
                continue
            c = high_bias(producer, pre_ranges, config, data_free)
            if c is None or not np.any(c > 0):
                continue
            _add_bias(producer, -c)
            if producer.out_stats is not None:
                producer.out_stats = producer.out_stats.shifted(-c)
            if producer.name in pre_ranges:
                pre_ranges[producer.name] = pre_ranges[producer.name].shifted(c)
            _add_bias(consumer, absorbed_bias(consumer, c))
            done[producer.name] = int(np.sum(c > 0))
    return done


def high_bias(node: Node, pre_ranges: dict, config, data_free: bool) -> Optional[np.ndarray]:
    """The vector c that can leave `node`'s bias: max(0, min z) where the activation keeps
    z - c exact (ReLU: always; ReLU6: only channels whose maximum stays below 6)."""
    if not data_free and node.name in pre_ranges:
        rng = pre_ranges[node.name]
    elif node.out_stats is not None:
        st = node.out_stats
        rng = ChannelRange(st.mean - config.bn_sigmas * st.std, st.mean + config.bn_sigmas * st.std)
    else:
        return None
    c = np.maximum(rng.min, 0.0)
    if node.activation == "relu6":
        if data_free or node.name not in pre_ranges:
            return None          # whether the clip at 6 is ever reached is unknown without data
        c = np.where(rng.max <= 6.0, c, 0.0)
    return c
