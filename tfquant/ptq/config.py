"""`PTQConfig`: every choice of the post-training quantization pipeline, with its default.

    >>> PTQConfig()                          # bias correction + AdaRound, per-channel (DEFAULT_STEPS)
    >>> PTQConfig(per_channel=False, steps=("cle", "bias_absorption", "bias_correction"))  # no reconstruction
    >>> PTQConfig(data_free=True, input_range=(-1.0, 1.0))  # no data at all

Steps (BN folding is always done: TFLite has no int8 batch norm):
  "cle"              cross-layer equalization over conv -> act -> conv chains
  "bias_absorption"  high-bias absorption after CLE
  "bias_correction"  empirical (with data) or analytic (data-free) bias correction
  "adaround"         AdaRound weight rounding (needs data)
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from tfquant.core.op_rules import DEFAULT_HARD_SWISH_LOWERING, HARD_SWISH_LOWERINGS
from tfquant.errors import SpecError

STEPS = ("cle", "bias_absorption", "bias_correction", "adaround")
DEFAULT_MAX_CALIBRATION_SAMPLES = 256
DEFAULT_STEPS = ("bias_correction", "adaround")                      # with calibration data
DATA_FREE_STEPS = ("cle", "bias_absorption", "bias_correction")       # without (AdaRound needs data)
WEIGHT_RANGES = ("minmax", "mse")
ACTIVATION_RANGES = ("minmax", "mse", "percentile", "bn", "best")
LOGITS_RANGES = ("cross_entropy", "minmax", "mse", "percentile", "bn")
RELU6_POLICIES = ("bounded", "relu")
BIAS_CORRECTION = ("auto", "empirical", "analytic")


@dataclasses.dataclass
class PTQConfig:
    """Options of `tfquant.ptq`.

    Attributes:
      steps: the optional steps to run, in pipeline order (see the module docstring); None
        runs `DEFAULT_STEPS` (empirical bias correction + AdaRound) with calibration data and
        `DATA_FREE_STEPS` (CLE, bias absorption, analytic bias correction) without. AdaRound
        given explicitly is skipped with a note when there is no data. Why reconstruction by
        default (issue 13; held-out photos, 64 calibration crops of 12 photos, 180 evaluation
        crops of 30 others, XNNPACK; top-1 agreement with float / logit SQNR; Lite0 / Lite1 /
        Lite2, per-channel): CLE + bias absorption + bias correction 87.2% 18.3 dB / 87.2%
        15.7 dB / 87.2% 16.6 dB; bias correction + AdaRound (200 iterations, lr 1e-2) 96.1%
        24.4 dB / 92.8% 22.7 dB / 92.2% 23.6 dB (per-tensor with min-max weights 89.4 / 84.4 /
        83.3%; per-tensor weights now default to MSE, see `weight_ranges`); 209 / 184 /
        148 s end to end on a loaded 2-core machine. CLE + bias absorption before bias correction +
        AdaRound measured worse on Lite0: per-channel 89.4% 19.8 dB, per-tensor 82.2% 15.9 dB.
      per_channel: per-output-channel int8 weights for conv and depthwise (Dense / MatMul
        weights are always per-tensor: the converter cannot carry per-channel FC weights).
      ranges: range estimator for weights and activations unless set one by one below; None (the
        default): each its own default (weights: min-max per-channel, MSE per-tensor; activations:
        min-max). Min-max by default per-channel: on EfficientNet-Lite0 (W8A8) MSE ranges lost
        0.5-5 points of top-1 agreement (per-channel weights: a 3x3 depthwise channel has 9
        weights, and MSE clips the one that matters); the logits still get the cross-entropy
        estimator.
      weight_ranges: "minmax" or "mse"; None: `ranges` if it is one of these, else min-max
        per-channel and MSE per-tensor (`per_channel=False`). MSE per-tensor by default (the
        likely reason, not isolated layer by layer: a per-tensor depthwise kernel's range is set
        by its widest channel, and clipping it costs less than the resolution the narrow
        channels lose). With the default steps (bias correction + AdaRound;
        held-out photos, see `steps`; benchmarks/recon_sweep.py) per-tensor Lite0 / Lite1 /
        Lite2, measured side by side (one run, 2 cores under load ~10): min-max 88.9% 17.2 dB /
        85.6% 17.8 dB / 78.9% 15.6 dB, MSE 92.2% 17.9 dB / 90.0% 18.5 dB / 86.1% 15.9 dB;
        paired over photos (same crops) +3.3 (-1.1..+7.8) / +4.4 (-0.6..+9.4) / +7.2 (+1.7..+13.3)
        points and +0.66 (+0.03..+1.33) / +0.66 (+0.17..+1.23) / +0.35 (-0.44..+1.03) dB. Still
        below the 95% target (issue 13). MSE weight ranges cost a golden-section search per layer
        (82 of 441 s on Lite0 in that run).
      activation_ranges: "minmax", "mse", "percentile", "best" (per tensor, the one of
        `range_candidates` with the least error of the model's outputs) or "bn" (from batch-norm statistics:
        the data-free choice, used for every activation when `data_free`). Min-max by default:
        with bias correction + AdaRound on Lite1 (held-out photos, above) min-max 92.8% 22.7 dB,
        MSE 92.2% 23.2 dB, percentile 92.2% 22.7 dB: no estimator is better within the
        +-4-point interval (benchmarks/recon_sweep.py).
      logits_ranges: estimator for the model's logits (the input of a final softmax, or a
        linear output): "cross_entropy" by default, None for the activation estimator.
      percentile: for the "percentile" estimator.
      range_candidates: the estimators activation_ranges="best" chooses among, per tensor (the
        first is where the choice starts; see `ranges.select_ranges_by_output`). Not the
        default: with bias correction + AdaRound (held-out photos, benchmarks/recon_sweep.py)
        per-tensor Lite0 / Lite1 / Lite2 89.4 -> 91.7%, 84.4 -> 86.7%, 83.3 -> 82.2%;
        per-channel Lite0 96.1 -> 95.6% (24.4 -> 24.6 dB): within the intervals, and the
        choice costs a pass per candidate and tensor (128 s on Lite0). Measured
        on `range_selection_samples` calibration samples (a candidate within 2% of the current
        range at both ends is not tried).
      data_free: ignore any calibration data: BN-based ranges, analytic bias correction, BN
        statistics for the CLE bounds and bias absorption. Needs `input_range`.
      input_range: (min, max) of the model's input; required when there is no data.
      relu6_policy: "bounded" keeps ReLU6 and limits the CLE scales so that every channel's clip
        still holds (a channel whose pre-activation reaches 6 keeps scale 1; the others are
        scaled only so far that they still do not reach it); "relu" replaces every ReLU6 by
        ReLU before CLE, as the data-free quantization paper and AIMET do (exact only for
        networks whose ReLU6 never clip). Why CLE is not in the per-tensor default: "bounded"
        is exact on the calibration data only; on EfficientNet-Lite0 (held-out photos, see
        `steps`) the equalized float model agrees with the original on 93.3% (21.6 dB) of the
        held-out crops (with bias absorption 93.9%; "relu": 30.0%), a ceiling below the
        per-tensor target. CLE still lifts naive per-tensor 47.2% -> 56.7% (5.0 -> 7.4 dB),
        bias absorption adds nothing measurable (57.8%), and both sides of the bound do damage
        (no channel grown: float 95.0%; none shrunk: 94.4%).
      relu6_headroom: a "bounded" channel may be scaled until its calibrated maximum reaches
        6 * headroom. Less headroom keeps the float model but also loses CLE's gain (Lite0,
        per-tensor, no reconstruction; 0.75 / 0.5 / 0.25: float 95.6 / 97.8 / 99.4%, int8
        49.4 / 52.2 / 50.0%).
      cle_activation_bound: never let CLE scale a channel's activation above the largest
        activation of its tensor (keeps the per-tensor activation range; data or BN based).
      bias_correction: "auto" (empirical with data, analytic without), "empirical", "analytic".
      layerwise_activations: the layer-by-layer steps (empirical bias correction, AdaRound) see
        the model with its activations quantized too (ranges set first, from the weight-quantized
        model), so bias correction also removes the mean shift of activation quantization.
      absorb_through_padding: absorb high biases into a layer that pads its input (exact only
        away from the border); by default such pairs are skipped.
      bn_alpha: the alpha of BN-based ranges (beta +- alpha * |gamma|). 6 by default: data-free on
        held-out photos (see `steps`; benchmarks/recon_sweep.py --configs df,df_a4,df_a5,df_a8),
        Lite0 / Lite1 / Lite2 alpha 4: 81.7 / 80.0 / 81.1%; 5: 85.6 / 88.3 / 88.3%; 6: 88.3 / 85.0 /
        91.1%; 8: 87.2 / 84.4 / 88.9% (converter per-channel PTQ 85.0 / 82.8 / 85.6%): no alpha
        is better on all three.
      bn_sigmas: data-free estimates of a channel's pre-activation minimum and maximum are
        beta -+ k * |gamma| (bias absorption: c = max(0, beta - 3 |gamma|); CLE's activation bound).
      adaround_iterations / adaround_batch_size / adaround_lr / adaround_reg /
      adaround_beta / adaround_warm_start: AdaRound's optimisation (Nagel et al. 2020 and AIMET:
        10,000 iterations, Adam 1e-3, regularisation 0.01, beta 20 -> 2 after a 20% warm start).
        The learning rate defaults to 10 / iterations within [1e-3, 1e-2]: AIMET's 1e-3 at
        10,000 iterations, larger for the short runs that fit a CPU budget (at 1e-3, a few
        hundred steps barely move the rounding variables). 200 iterations by default (so lr
        1e-2), since AdaRound is in the default pipeline: the figures under `steps`; 1,000
        reach 4-6x lower per-layer reconstruction error on Lite0 but took 9 minutes against 2.5
        on 2 cores (issue 5's 320 crops: 96.9% against 95.6%).
        Without adaround_lr the learning rate is 10 / iterations within [1e-3, 1e-2] (a bound
        of 5e-2 hardened the rounding sooner but measured worse on Lite0). More iterations do
        not carry over to held-out photos (one run, idle 2-core machine, held-out set as under
        `steps`; benchmarks/recon_sweep.py --configs default,ada500,ada1000 --verify; Lite0 /
        Lite1 / Lite2): 200: 96.1% 24.4 dB / 92.8% 22.7 dB / 92.2% 23.6 dB, 77 / 74 / 78 s end
        to end (verified); 500: 94.4% 24.0 dB / 92.2% 22.3 dB / 92.8% 24.0 dB, 117 / 131 / 183 s;
        1,000: 94.4% 23.9 dB / 95.0% 22.4 dB / 93.9% 23.7 dB, 168 / 206 / 245 s: the rounding
        fits the calibration crops better, not the model's function on new photos.
      adaround_rows: rows (output pixels with their input windows) per step, at most (a 5x5
        depthwise layer with many channels gets fewer: a step gathers at most 4 MB).
      adaround_batch_size / adaround_patch: no longer used (every layer is optimised on pixels).
      adaround_qdrop: QDrop (Wei et al. 2022): each element of a step's input is the float
        model's with this probability, else the quantized model's (0: always the quantized one).
        Not the default: held-out photos (benchmarks/recon_sweep.py, as under `steps`, measured
        again at b0b87d3: default 92.8% 24.5 dB / 93.3% 22.5 dB / 91.7% 23.7 dB on Lite0 / 1 / 2),
        0.5 gave 95.6% 24.7 dB / 92.8% 22.7 dB / 93.9% 23.7 dB; with adaround_output_quant too
        92.8% 24.6 dB / 95.6% 22.6 dB / 94.4% 23.9 dB (paired over photos against the default:
        Lite0 +0.0 points (-3.9 to +3.9), +0.08 dB (-0.24 to +0.37); Lite1 +2.2 (-0.6 to +5.0),
        +0.12 dB (-0.08 to +0.41); Lite2 +2.8 (-0.6 to +6.1), +0.20 dB (-0.17 to +0.54)): no
        gain beyond noise, and no model nearer 25 dB.
      adaround_output_quant: AdaRound's loss sees each layer's output on its int8 grid (the
        layer's own activation range; needs layerwise_activations), not the float output.
      adaround_converged: stop a layer once at most this fraction of its rounding variables is
        soft (h(V) strictly between 0 and 1; then nothing is left to learn); None: never.
      adaround_max_weights: layers with more weights keep round-to-nearest (None: no limit),
        a time budget knob (on EfficientNet-Lite0 the head and logits take a fifth of the time).
      max_calibration_samples: samples read from the calibration source (streamed); None reads
        up to DEFAULT_MAX_CALIBRATION_SAMPLES. A source holding fewer than a number given here
        is warned about.
      layerwise_samples: samples held in memory for the layer-by-layer steps (bias correction,
        AdaRound): the bound on their memory.
      batch_size: calibration batch size.
      image_size: (height, width) images from a folder are resized to (default: the model's
        input size).
      image_mean / image_std: a folder's images become (pixel - mean) / std (so do a TFRecord's
        encoded images and int64 pixel lists).
      tfrecord_feature: the feature of a .tfrecord calibration file's tf.train.Example records
        to calibrate with (default: the only one).
      hard_swish: how x * relu6(x + 3) / 6 goes on the device (`core.op_rules.HARD_SWISH_LOWERINGS`):
        "decomposed" (ADD + RELU6, MUL, MUL: XNNPACK-delegated, faster) or "HARD_SWISH" (the
        converter's one op, int16 fixed point); both bit-exact in the simulation.
      progress: tqdm progress bars.
      seed: random seed (sampling, AdaRound batches).
    """

    steps: Optional[Sequence[str]] = None
    per_channel: bool = True
    ranges: Optional[str] = None
    weight_ranges: Optional[str] = None
    activation_ranges: Optional[str] = None
    logits_ranges: Optional[str] = "cross_entropy"
    percentile: float = 99.99
    range_candidates: tuple[str, ...] = ("minmax", "mse", "percentile")
    range_selection_samples: int = 32
    data_free: bool = False
    input_range: Optional[tuple[float, float]] = None
    relu6_policy: str = "bounded"
    relu6_headroom: float = 1.0
    cle_activation_bound: bool = True
    bias_correction: str = "auto"
    layerwise_activations: bool = True
    absorb_through_padding: bool = False
    bn_alpha: float = 6.0
    bn_sigmas: float = 3.0
    adaround_iterations: int = 200
    adaround_batch_size: int = 32
    adaround_patch: int = 16
    adaround_rows: int = 1024
    adaround_lr: Optional[float] = None
    adaround_reg: float = 0.01
    adaround_beta: tuple[float, float] = (20.0, 2.0)
    adaround_warm_start: float = 0.2
    adaround_qdrop: float = 0.0
    adaround_output_quant: bool = False
    adaround_converged: Optional[float] = 1e-3
    adaround_max_weights: Optional[int] = None
    max_calibration_samples: Optional[int] = None
    layerwise_samples: int = 64
    batch_size: int = 16
    image_size: Optional[tuple[int, int]] = None
    image_mean: float = 127.5
    image_std: float = 127.5
    tfrecord_feature: Optional[str] = None
    hard_swish: str = DEFAULT_HARD_SWISH_LOWERING
    progress: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.steps is not None:
            if isinstance(self.steps, str):
                self.steps = tuple(s.strip() for s in self.steps.split(",") if s.strip())
            self.steps = tuple(s for s in self.steps if s != "fold_bn")
            unknown = [s for s in self.steps if s not in STEPS]
            if unknown:
                raise SpecError(f"Unknown PTQ step(s) {unknown}; choose from {list(STEPS)} "
                                "(BN folding is always done).")
        if self.ranges is not None:
            self._check("ranges", self.ranges, WEIGHT_RANGES + ACTIVATION_RANGES)
        if self.weight_ranges is not None:
            self._check("weight_ranges", self.weight_ranges, WEIGHT_RANGES)
        if self.activation_ranges is not None:
            self._check("activation_ranges", self.activation_ranges, ACTIVATION_RANGES)
        if self.logits_ranges is not None:
            self._check("logits_ranges", self.logits_ranges, LOGITS_RANGES)
        self._check("relu6_policy", self.relu6_policy, RELU6_POLICIES)
        self._check("bias_correction", self.bias_correction, BIAS_CORRECTION)
        self._check("hard_swish", self.hard_swish, HARD_SWISH_LOWERINGS)
        if self.input_range is not None:
            lo, hi = (float(v) for v in self.input_range)
            if not lo < hi:
                raise SpecError(f"input_range must be (min, max) with min < max, got {self.input_range}.")
            self.input_range = (lo, hi)
        for name in ("adaround_iterations", "adaround_batch_size", "adaround_rows", "adaround_patch",
                     "max_calibration_samples", "layerwise_samples", "range_selection_samples", "batch_size"):
            v = getattr(self, name)
            if v is None and name == "max_calibration_samples":
                continue
            if isinstance(v, np.integer):      # np.int32(8) is an int too
                v = int(v)
                setattr(self, name, v)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpecError(f"PTQConfig.{name} must be a positive int, got {v!r}.")
        if not 0.0 <= float(self.adaround_qdrop) <= 1.0:
            raise SpecError(f"PTQConfig.adaround_qdrop must be a probability in [0, 1], got {self.adaround_qdrop!r}.")
        if not self.image_std:
            raise SpecError("PTQConfig.image_std must not be 0.")

    @staticmethod
    def _check(name, value, allowed):
        if value not in allowed:
            raise SpecError(f"PTQConfig.{name}={value!r}: choose one of {list(allowed)}.")

    # ---- resolved choices -------------------------------------------------------------
    @property
    def calibration_limit(self) -> int:
        """Samples the calibration passes read."""
        return self.max_calibration_samples or DEFAULT_MAX_CALIBRATION_SAMPLES

    @property
    def active_steps(self) -> tuple[str, ...]:
        return self.steps_for(self.data_free)

    def steps_for(self, data_free: bool) -> tuple[str, ...]:
        """The steps run: `steps`, else `DATA_FREE_STEPS` without data and `DEFAULT_STEPS` with."""
        if self.steps is not None:
            return tuple(self.steps)
        return DATA_FREE_STEPS if data_free else DEFAULT_STEPS

    @property
    def adaround_learning_rate(self) -> float:
        if self.adaround_lr is not None:
            return float(self.adaround_lr)
        return float(min(1e-2, max(1e-3, 10.0 / self.adaround_iterations)))

    @property
    def weight_estimator(self) -> str:
        if self.weight_ranges is not None:
            return self.weight_ranges
        if self.ranges in WEIGHT_RANGES:
            return self.ranges
        return "minmax" if self.per_channel else "mse"

    @property
    def activation_estimator(self) -> str:
        if self.data_free:
            return "bn"
        if self.activation_ranges is not None:
            return self.activation_ranges
        return self.ranges if self.ranges in ACTIVATION_RANGES else "minmax"

    @property
    def logits_estimator(self) -> str:
        if self.data_free:
            return "bn"
        return self.logits_ranges or self.activation_estimator

    def replace(self, **changes) -> "PTQConfig":
        return dataclasses.replace(self, **changes)
