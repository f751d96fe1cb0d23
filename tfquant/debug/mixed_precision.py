"""Automatic mixed precision: the fewest float tensors that meet a target, checked on the flatbuffer.

    >>> mp = tfquant.debug.mixed_precision(result, x_val, target_agreement=0.98)
    >>> mp.plan.non_int8(), mp.agreement, mp.tflite      # the plan, what it reaches, its flatbuffer
    >>> for t in mp.trials: print(t)                      # every candidate: SQNR, size, latency

Pass data the ranges were *not* calibrated on, and as hard as the data the model will see (crops
of other photos, not further crops of the calibration photos: there int8 already agrees and the
search finds nothing that carries over), with `groups` naming where each sample came from (its
photo): the split and the noise estimate then go by group.

Each candidate is tried in `precisions` order, 16-bit activations first (TFLite int16x8: the
tensor on a 16-bit grid, its weights int8, no bytes added), float only if int16 is refused, does
not gain enough, or is too slow. A candidate is kept only when its gain is above the noise: at
least `min_gain_db`, and at least `noise_z` standard deviations of the gain over a bootstrap of
the acceptance part's groups (the gain of one tensor on a few dozen crops is often a fraction of
a dB, which another set of crops would not repeat).

The data is split in two (`rank_fraction`; by group when `groups` is given): the *ranking* part orders the candidates (activation
quantizers) by what leaving each one in float gains in the simulation (the debugger's "all but
this layer" SQNR, with the kernels of the ops that then run in float left float too, as the
converter does), minus what its float ops cost in weight bytes (`db_per_mb`: the float32
kernels of the ops that go float are 4x their int8 size); the *acceptance* part checks each
candidate on the exported flatbuffer, in the interpreter. Decisions are by logit SQNR (top-1
agreement on a few dozen samples moves in steps of several percent): a candidate is kept when the
flatbuffer's SQNR on the acceptance part rises by at least `min_gain_db` after paying for the
bytes it adds, and (with `max_latency_ratio`) when its flatbuffer is not slower than that ratio of
the all-int8 one. The search stops as soon as the target is met on the acceptance part, after
`max_float` tensors, or after `patience` candidates in a row were refused. The figures returned
are on all of `data`; every candidate tried is in `trials` with its size and latency.

When the PTQ pipeline ran the empirical bias correction, a candidate that is good or nearly good
with the all-int8 biases gets the correction re-run for the mixed plan (`PTQResult.bias_corrected_for`: the float layer's bias uncorrected, the int8
layers after it corrected for what now reaches them, on the pipeline's own calibration samples)
and is measured again (the corrections made for the all-int8 model over-correct), and it is that
flatbuffer that is accepted or refused.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tfquant.debug.subjects import PTQSubject
from tfquant.export.interpreter import latencies_ms
from tfquant.export.verify import sqnr_db, top1_agreement as agreement
from tfquant.errors import SpecError, TFQuantError


@dataclasses.dataclass
class Trial:
    """One candidate checked on the flatbuffer (acceptance part of the data)."""

    quantizer: str               # the candidate ("q3"; with int16, "+" the entries read in int16 with it)
    precision: str                # "int16" or "float": what it was tried in
    simulated_gain_db: float      # "all but this one" SQNR gain in the simulation (ranking part)
    weight_bytes: int             # estimated bytes its float ops add (float32 - int8 kernels)
    sqnr_db: float                # flatbuffer SQNR with it in float (biases re-corrected if kept)
    agreement: Optional[float]
    size_bytes: int               # the candidate flatbuffer
    latency_ms: Optional[float]   # batch-1, one thread, default kernels (None: not measured)
    accepted: bool
    reason: str = ""
    noise_db: float = 0.0         # standard deviation of the gain (bootstrap of the acceptance groups)

    def __str__(self) -> str:
        lat = "-" if self.latency_ms is None else f"{self.latency_ms:.2f} ms"
        return (f"{'kept   ' if self.accepted else 'refused'} {self.quantizer} {self.precision}: sim +{self.simulated_gain_db:.2f} dB, "
                f"flatbuffer {self.sqnr_db:.2f} dB, {self.size_bytes / 1e6:.2f} MB "
                f"(+{self.weight_bytes / 1e6:.3f} MB est.), {lat}, noise {self.noise_db:.2f} dB {self.reason}")


@dataclasses.dataclass
class MixedPrecisionResult:
    plan: object                     # the QuantPlan found
    result: object                   # the PTQ result to export it with (biases corrected for it)
    tflite: bytes
    agreement: Optional[float]       # top-1 agreement with float, flatbuffer on all of `data`
    sqnr_db: float
    int8_agreement: Optional[float]  # the same for the all-int8 flatbuffer
    int8_sqnr_db: float
    floats: list[str]                # quantizer ids kept in float, in the order they were added
    met: bool                        # the target, on all of `data`
    tried: int                       # flatbuffers exported and run
    trials: list[Trial] = dataclasses.field(default_factory=list)
    int8_size: int = 0               # bytes of the all-int8 flatbuffer
    int8_latency_ms: Optional[float] = None
    latency_ms: Optional[float] = None   # the result's flatbuffer, measured beside the all-int8 one
    stopped: str = ""                # why the search ended
    int16: list[str] = dataclasses.field(default_factory=list)   # quantizer ids given 16-bit activations
    # (a candidate and the outputs of the ops reading it, `int16_entries`)

    def summary(self) -> str:
        a = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        lat = "" if self.latency_ms is None or not self.int8_latency_ms else \
            f", latency {self.latency_ms / self.int8_latency_ms:.2f}x the int8 model"
        return (f"mixed precision: {len(self.floats)} tensor(s) in float {self.floats}, {len(self.int16)} in int16 "
                f"{self.int16}: agreement "
                f"{a(self.int8_agreement)} -> {a(self.agreement)}, SQNR {self.int8_sqnr_db:.1f} -> "
                f"{self.sqnr_db:.1f} dB, size {self.int8_size / 1e6:.2f} -> {len(self.tflite) / 1e6:.2f} MB{lat} "
                f"({'target met' if self.met else 'target NOT met'}, {self.tried} flatbuffers tried; "
                f"{self.stopped})")


def _flatbuffer_outputs(tflite: bytes, x: np.ndarray) -> np.ndarray:
    from tfquant.export.interpreter import TFLiteRunner

    return np.asarray(TFLiteRunner(tflite, kernels="default").run([x])[0])


def _simulate(graph, plan, x: np.ndarray) -> np.ndarray:
    """The fake-quant simulation of `plan`, run eagerly (no tf.function to trace for a plan that
    is run once)."""
    import tensorflow as tf

    from tfquant.core import simulation_mode
    from tfquant.graph.emit import Emitter

    with simulation_mode("fake_quant"):
        env = Emitter(graph, plan, "quant").run([tf.convert_to_tensor(x, tf.float32)])
    return np.asarray(env[graph.outputs[0][1]])


def gain_noise_db(reference: np.ndarray, before: np.ndarray, after: np.ndarray, groups: np.ndarray,
                  resamples: int = 200, seed: int = 0) -> float:
    """Standard deviation of the SQNR gain from `before` to `after` (outputs against `reference`)
    over a bootstrap that resamples the groups (e.g. photos: crops of one photo are not
    independent); 0 with a single group."""
    axes = tuple(range(1, reference.ndim))
    ref = np.asarray(reference, np.float64)
    e_before = np.sum((ref - before) ** 2, axis=axes)
    e_after = np.sum((ref - after) ** 2, axis=axes)
    labels, index = np.unique(groups, return_inverse=True)
    if len(labels) < 2:
        return 0.0
    gb, ga = np.bincount(index, e_before), np.bincount(index, e_after)
    pick = np.random.default_rng(seed).integers(0, len(labels), (resamples, len(labels)))
    with np.errstate(divide="ignore", invalid="ignore"):
        gains = 10 * np.log10(gb[pick].sum(1) / ga[pick].sum(1))
    gains = gains[np.isfinite(gains)]
    return float(np.std(gains)) if gains.size > 1 else 0.0


def int16_entries(graph, plan, quantizer: str) -> list[str]:
    """The activation entries to make int16 so that `quantizer`'s tensors are *read* in int16:
    itself and the outputs of the ops that read them (an int8 op reading an int16 tensor reads a
    requantized int8 copy, and the finer grid is lost at once). Entries already not int8, and
    TFLite's fixed-range outputs, are left as they are."""
    tensors = set(plan.owners[quantizer])
    out = [quantizer]
    for node in graph:
        if node.type in ("input", "const") or not node.out_dtypes or not tensors & set(node.inputs):
            continue
        q = plan.qid.get(node.output())
        if q is not None and q not in out and q not in plan.fixed and q not in plan.non_int8():
            out.append(q)
    return out


def float_ops(graph, plan, quantizer: str) -> set[str]:
    """The nodes that run in float in the flatbuffer when `quantizer`'s tensors stay float and
    did not before (the emitter's `node_precision`: those that produce and read them; the
    converter keeps their weights float too)."""
    from tfquant.graph.emit import node_precision

    trial = plan.copy()
    trial.set_precision(quantizer, "float")
    return {n.name for n in graph if n.type not in ("input", "const")
            and node_precision(graph, trial, n) == "float" and node_precision(graph, plan, n) != "float"}


def float_weight_bytes(graph, plan, quantizer: str) -> int:
    """Bytes the exported flatbuffer gains when `quantizer`'s tensors stay float: the kernels of
    `float_ops` are stored as float32 instead of int8."""
    return int(sum(3 * graph[n].kernel.size for n in float_ops(graph, plan, quantizer) if graph[n].is_linear))


def float_gains(graph, plan, candidates, x: np.ndarray, y_float: np.ndarray) -> tuple[dict, dict]:
    """({q: dB}, {q: bytes}): what keeping each activation quantizer q in float gains in the
    simulation's output SQNR against `y_float` on `x` (the ops around q in float with their
    weights, as the flatbuffer runs them), and the weight bytes it adds (`float_weight_bytes`).

        >>> gain, cost = float_gains(result.graph, result.plan, ["q1", "q3"], x, y_float)
    """
    base = sqnr_db(y_float, _simulate(graph, plan, x))
    gain = {}
    for q in candidates:
        trial_plan = plan.copy()
        trial_plan.precision[q] = "float"
        for op in float_ops(graph, plan, q):
            if op in plan.weight_specs:
                trial_plan.precision[op] = "float"
        gain[q] = sqnr_db(y_float, _simulate(graph, trial_plan, x)) - base
    return gain, {q: float_weight_bytes(graph, plan, q) for q in candidates}


def mixed_precision(result, data, *, target_agreement: Optional[float] = None,
                    target_sqnr_db: Optional[float] = None, max_float: int = 8,
                    max_samples: int = 256, rank_fraction: float = 0.5, min_gain_db: float = 0.1,
                    db_per_mb: float = 1.0, patience: int = 8, max_latency_ratio: Optional[float] = None,
                    measure_latency: bool = True, max_rank_samples: int = 16,
                    recorrect_margin_db: float = 3.0, groups=None, noise_z: float = 2.0,
                    precisions=("int16", "float")) -> MixedPrecisionResult:
    """Keep the fewest activation tensors of a `tfquant.ptq` result in float that bring the
    exported flatbuffer to the target (top-1 agreement with float, or output SQNR in dB).

    rank_fraction: share of `data` that ranks the candidates (simulation); the rest accepts
    them (flatbuffer). With fewer than 4 samples both use all of it. The ranking runs one
    simulation per candidate, on at most `max_rank_samples` of its part.
    min_gain_db: the flatbuffer SQNR gain (after the size cost) a candidate must bring, and
    noise_z: at least this many standard deviations of that gain (`gain_noise_db`, over `groups`).
    groups: one label per sample (its photo): the rank / accept split and the noise go by group
    (default: every sample its own group).
    precisions: what a candidate is tried in, in order (int16 before float; ("float",) for float only).
    db_per_mb: what one MB of float weights costs, in dB, when ranking and accepting.
    patience: stop after this many refused candidates in a row.
    recorrect_margin_db: with an empirical bias correction in the pipeline, a candidate whose
    flatbuffer (biases as corrected for all-int8) falls short of `min_gain_db` by less than this
    is measured again with the correction re-run for its plan (`PTQResult.bias_corrected_for`).
    max_latency_ratio: refuse a candidate whose flatbuffer is slower than this times the all-int8
    one (latency is measured for every candidate when `measure_latency`)."""
    if target_agreement is None and target_sqnr_db is None:
        raise SpecError("mixed_precision needs a target: target_agreement (e.g. 0.98) or target_sqnr_db.")
    if not hasattr(result, "with_plan"):
        raise SpecError("mixed_precision works on a tfquant.ptq result.")
    if not 0.0 < rank_fraction < 1.0:
        raise SpecError(f"rank_fraction must be in (0, 1), got {rank_fraction}.")
    if max_latency_ratio is not None and not measure_latency:
        raise SpecError("max_latency_ratio needs measure_latency=True.")
    if not precisions or any(p not in ("int16", "float") for p in precisions):
        raise SpecError(f"precisions: a sequence of 'int16' and 'float', got {precisions!r}.")
    import tfquant

    x = np.asarray(data, np.float32)[:max_samples]
    group = np.arange(len(x)) if groups is None else np.asarray(groups)[:max_samples]
    if len(group) != len(x):
        raise SpecError(f"groups: one label per sample, got {len(group)} for {len(x)} samples.")
    labels = np.unique(group)
    n_rank = int(round(rank_fraction * len(labels)))
    if len(x) < 4 or n_rank in (0, len(labels)):
        rank, accept = np.arange(len(x)), np.arange(len(x))
    else:       # interleaved groups, e.g. every other group for 0.5
        order = np.arange(len(labels))
        f = 1.0 - n_rank / len(labels)
        taken = labels[order[np.floor((order + 1) * f) > np.floor(order * f)]]
        accept = np.flatnonzero(np.isin(group, taken))
        rank = np.flatnonzero(~np.isin(group, taken))
    subject = PTQSubject(result)
    y_float = subject.reference_run(x)    # the model as given, not the bias-corrected float graph
    rank = rank[:max_rank_samples]
    x_rank, y_rank = x[rank], y_float[rank]

    current = result      # the result whose biases are corrected for the plan accepted so far

    def measure(plan, base=None) -> tuple[bytes, np.ndarray]:
        tflite = tfquant.to_tflite(base or current, plan=plan)
        return tflite, _flatbuffer_outputs(tflite, x).reshape(y_float.shape)

    def figures(y, part=None) -> tuple[Optional[float], float]:
        ref = y_float if part is None else y_float[part]
        y = y if part is None else y[part]
        return agreement(ref, y), sqnr_db(ref, y)

    def met(agree, db) -> bool:
        return (target_agreement is None or (agree is not None and agree >= target_agreement)) and \
            (target_sqnr_db is None or db >= target_sqnr_db)

    plan = result.plan.copy()
    int8_tflite, y = measure(plan)
    tflite, y_best = int8_tflite, y
    int8_agree, int8_db = figures(y)
    acc_agree, acc_db = figures(y, accept)
    int8_ms = None
    weights = set(plan.weight_specs)
    candidates = [q for q in plan.calibrated_ids() if q not in weights and q not in plan.non_int8()]
    gain, cost = float_gains(result.graph, plan, candidates, x_rank, y_rank)
    ranked = sorted(candidates, key=lambda q: -(gain[q] - db_per_mb * cost[q] / 1e6))
    ranked = [q for q in ranked if gain[q] - db_per_mb * cost[q] / 1e6 > 0]
    floats: list[str] = []
    int16: list[str] = []
    trials: list[Trial] = []
    tried, refused = 1, 0
    stopped = "all candidates tried"

    def trial(q, entries, precision, tfl, y_c, accepted, reason, ms, noise) -> None:
        a, d = figures(y_c, accept)
        trials.append(Trial("+".join(entries), precision, gain[q], cost[q] if precision == "float" else 0, d, a,
                            len(tfl), ms, accepted, reason, noise))

    def worth(tfl, y_c) -> tuple[float, float, str]:
        d = figures(y_c, accept)[1]
        paid = d - acc_db - db_per_mb * (len(tfl) - len(tflite)) / 1e6
        noise = gain_noise_db(y_float[accept], y_best[accept], y_c[accept], group[accept])
        return paid, noise, f"({paid:+.2f} dB after size)"

    def attempt(q, precision):
        """Export and measure `plan` with q in `precision`: (accepted, flatbuffer, outputs, result)."""
        nonlocal tried, int8_ms
        entries = int16_entries(result.graph, plan, q) if precision == "int16" else [q]
        try:
            plan.set_precision(entries, precision)
            cand, y_c = measure(plan)
        except TFQuantError:          # not int16-able here, nothing int8 left, or a converter refusal
            plan.set_precision(entries, "int8")
            return False, None, None, None, entries
        tried += 1
        paid, noise, why = worth(cand, y_c)
        need = max(min_gain_db, noise_z * noise)
        corrected = current
        # the biases were corrected for the all-int8 model and over-correct around a float
        # tensor: re-run the correction for this plan unless the candidate is far off anyway
        if result.layerwise_state is not None and paid >= need - recorrect_margin_db:
            corrected = result.bias_corrected_for(plan)
            cand, y_c = measure(plan, corrected)
            tried += 1
            paid, noise, why = worth(cand, y_c)
            need = max(min_gain_db, noise_z * noise)
            why += " (biases re-corrected)"
        ok = paid >= need
        if not ok:
            why += f" (needs +{need:.2f} dB)"
        ms = None
        if measure_latency:           # beside the all-int8 flatbuffer, for every candidate
            timed = latencies_ms({"int8": int8_tflite, "candidate": cand})
            int8_ms, ms = timed["int8"], timed["candidate"]
            if ok and max_latency_ratio is not None and ms > max_latency_ratio * int8_ms:
                ok, why = False, f"(latency {ms / int8_ms:.2f}x > {max_latency_ratio}x)"
        trial(q, entries, precision, cand, y_c, ok, why, ms, noise)
        if not ok:
            plan.set_precision(entries, "int8")
        return ok, cand, y_c, corrected, entries

    for q in ranked:
        if met(acc_agree, acc_db):
            stopped = "target met on the acceptance part"
            break
        if len(floats) + len(int16) >= max_float:
            stopped = f"max_float={max_float} reached"
            break
        if refused >= patience:
            stopped = f"{patience} candidates in a row refused"
            break
        for precision in precisions:
            ok, cand, y_c, corrected, entries = attempt(q, precision)
            if ok:
                break
        if not ok:
            refused += 1
            continue
        refused = 0
        current = corrected
        (floats if precision == "float" else int16).extend(entries)
        tflite, y_best = cand, y_c
        acc_agree, acc_db = figures(y_c, accept)
    else:
        if met(acc_agree, acc_db):
            stopped = "target met on the acceptance part"
    agree, db = figures(y_best)
    final_ms = None
    if measure_latency:
        timed = latencies_ms({"int8": int8_tflite, "mixed": tflite})
        int8_ms, final_ms = timed["int8"], timed["mixed"]
    return MixedPrecisionResult(plan=plan, result=current.with_plan(plan), tflite=tflite, agreement=agree,
                                sqnr_db=db, int8_agreement=int8_agree, int8_sqnr_db=int8_db, floats=floats,
                                met=met(agree, db), tried=tried, trials=trials, int8_size=len(int8_tflite),
                                int8_latency_ms=int8_ms, latency_ms=final_ms, stopped=stopped, int16=int16)
