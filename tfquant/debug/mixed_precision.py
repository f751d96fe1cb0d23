"""Automatic mixed precision: the fewest float tensors that meet a target, checked on the flatbuffer.

    >>> mp = tfquant.debug.mixed_precision(result, x_val, target_agreement=0.98)
    >>> mp.plan.non_int8(), mp.agreement, mp.tflite      # the plan, what it reaches, its flatbuffer

Candidates are the activation quantizers, ranked by what leaving each one in float gains in the
simulation (the debugger's "all but this layer" sensitivity). They are tried one at a time, in
that order: each time the plan is exported and the flatbuffer is run in the interpreter on the
held-out data, a candidate that does not improve the flatbuffer is put back to int8, and the
search stops as soon as the target is met there (or after `max_float` tensors).

When the PTQ pipeline ran the empirical bias correction, an accepted candidate gets it re-run
for the mixed plan (`PTQResult.bias_corrected_for`: the float layer's bias uncorrected, the int8
layers after it corrected for what now reaches them, on the pipeline's own calibration samples)
and is measured again; the corrections made for the all-int8 model would over-correct, which
fits the held-out data the search measures on but not other images.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from tfquant.debug.subjects import PTQSubject
from tfquant.export.verify import sqnr_db, top1_agreement as agreement
from tfquant.errors import SpecError, TFQuantError


@dataclasses.dataclass
class MixedPrecisionResult:
    plan: object                     # the QuantPlan found
    result: object                   # the PTQ result to export it with (biases corrected for it)
    tflite: bytes
    agreement: Optional[float]       # top-1 agreement with float, flatbuffer on the held-out data
    sqnr_db: float
    int8_agreement: Optional[float]  # the same for the all-int8 flatbuffer
    int8_sqnr_db: float
    floats: list[str]                # quantizer ids kept in float, in the order they were added
    met: bool
    tried: int                       # flatbuffers exported and run

    def summary(self) -> str:
        a = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        return (f"mixed precision: {len(self.floats)} tensor(s) in float {self.floats}: agreement "
                f"{a(self.int8_agreement)} -> {a(self.agreement)}, SQNR {self.int8_sqnr_db:.1f} -> "
                f"{self.sqnr_db:.1f} dB ({'target met' if self.met else 'target NOT met'}, "
                f"{self.tried} flatbuffers tried)")


def _flatbuffer_outputs(tflite: bytes, x: np.ndarray) -> np.ndarray:
    from tfquant.export.interpreter import TFLiteRunner

    return np.asarray(TFLiteRunner(tflite, kernels="default").run([x])[0])


def mixed_precision(result, data, *, target_agreement: Optional[float] = None,
                    target_sqnr_db: Optional[float] = None, max_float: int = 8,
                    max_samples: int = 256) -> MixedPrecisionResult:
    """Keep the fewest activation tensors of a `tfquant.ptq` result in float that bring the
    exported flatbuffer to the target (top-1 agreement with float, or output SQNR in dB)."""
    if target_agreement is None and target_sqnr_db is None:
        raise SpecError("mixed_precision needs a target: target_agreement (e.g. 0.98) or target_sqnr_db.")
    if not hasattr(result, "with_plan"):
        raise SpecError("mixed_precision works on a tfquant.ptq result.")
    import tfquant

    x = np.asarray(data, np.float32)[:max_samples]
    subject = PTQSubject(result)
    y_float = subject.reference_run(x)    # the model as given, not the bias-corrected float graph

    current = result      # the result whose biases are corrected for the plan accepted so far

    def measure(plan, base=None) -> tuple[bytes, Optional[float], float]:
        tflite = tfquant.to_tflite(base or current, plan=plan)
        y = _flatbuffer_outputs(tflite, x).reshape(y_float.shape)
        return tflite, agreement(y_float, y), sqnr_db(y_float, y)

    def met(agree, db) -> bool:
        return (target_agreement is None or (agree is not None and agree >= target_agreement)) and \
            (target_sqnr_db is None or db >= target_sqnr_db)

    plan = result.plan.copy()
    tflite, agree, db = measure(plan)
    int8_agree, int8_db = agree, db
    weights = set(plan.weight_specs)
    candidates = [q for q in plan.calibrated_ids() if q not in weights]
    base = sqnr_db(y_float, subject.run(x))
    ranked = sorted(candidates, key=lambda q: -(sqnr_db(y_float, subject.run(x, [q])) - base))
    floats: list[str] = []
    tried = 1
    score = lambda a, d: (a if target_agreement is not None and a is not None else 0.0, d)  # noqa: E731
    for q in ranked[:max(4 * max_float, max_float + 8)]:
        if met(agree, db) or len(floats) >= max_float:
            break
        plan.set_precision(q, "float")
        try:
            candidate = measure(plan)
        except TFQuantError:          # nothing int8 left to export, or a converter refusal
            plan.set_precision(q, "int8")
            continue
        tried += 1
        if score(*candidate[1:]) <= score(agree, db):   # no better on the flatbuffer: keep it int8
            plan.set_precision(q, "int8")
            continue
        if result.layerwise_state is not None:          # bias correction re-run for this plan
            corrected = result.bias_corrected_for(plan)
            candidate = measure(plan, corrected)
            tried += 1
            if score(*candidate[1:]) <= score(agree, db):
                plan.set_precision(q, "int8")
                continue
            current = corrected
        floats.append(q)
        tflite, agree, db = candidate
    return MixedPrecisionResult(plan=plan, result=current.with_plan(plan), tflite=tflite, agreement=agree, sqnr_db=db, int8_agreement=int8_agree,
                                int8_sqnr_db=int8_db, floats=floats, met=met(agree, db), tried=tried)
