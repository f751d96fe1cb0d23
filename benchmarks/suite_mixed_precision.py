"""Automatic mixed precision on photos neither the calibration nor the search saw: EfficientNet-Lite0.

    python -m benchmarks.suite_mixed_precision                   # per-channel and per-tensor
    python -m benchmarks.suite_mixed_precision --quick           # small sets (a smoke run)
    python -m benchmarks.run --suites=mixed_precision --update   # its section of BENCHMARKS.md

The held-out protocol of benchmarks/suite_generalization.py (the same photo split, the same 64
calibration crops of the 12 calibration photos, the same 180 evaluation crops of the 30 other
photos) with one more set: `search` crops, further crops of the calibration photos that the
ranges were not calibrated on, which `tfquant.debug.mixed_precision` searches on. PTQ: bias
correction + AdaRound (200 iterations, lr 0.01), per-channel and per-tensor; each int8 result,
then its mixed-precision plan (target 98% top-1 agreement, at most 8 float tensors, no
candidate slower than 1.2x the int8 model). Figures on
the evaluation crops: agreement with the float Keras model and logit SQNR with 95% bootstrap
intervals over evaluation photos, the tensors that are not int8 (`tfquant.inspect`), size, and
latency beside the converter's int8 model (one thread, default kernels, timed side by side).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Row  # noqa: E402
from benchmarks.suite_generalization import CONVERTER, sizes  # noqa: E402

TARGET = 0.98
MAX_FLOAT = 8
MAX_LATENCY = 1.2     # the latency target: a candidate slower than this x the int8 model is refused
PTQ_OPTIONS = dict(steps=("bias_correction", "adaround"), adaround_iterations=200, adaround_lr=0.01)
ROUTES = [("per-channel", dict(per_channel=True)), ("per-tensor", dict(per_channel=False))]
COLUMNS = ["route", "agreement", "agreement_ci", "sqnr_db", "sqnr_ci", "latency_ms", "size_kb",
           "quant_seconds", "note"]


def search_crops(quick: bool) -> int:
    """How many further crops of the calibration photos the search gets."""
    return 16 if quick else 64


def run(quick: bool, routes_: Sequence[Tuple[str, dict]] = ROUTES,
        calibration_search: bool = False) -> Tuple[List[Row], str]:
    """All rows and the BENCHMARKS.md section. `calibration_search` adds, for comparison, the
    search run on the calibration crops themselves (what fits them)."""
    import tfquant
    import tfquant.debug
    from benchmarks.data.photos import evaluation_set, photo_bootstrap
    from benchmarks.models import efficientnet_lite0 as E
    from benchmarks.peers.converter_ptq import converter_ptq, float_tflite, run_tflite

    started = time.perf_counter()
    n_cal, per_photo, _ = sizes(quick)
    n_search = search_crops(quick)
    options = dict(PTQ_OPTIONS, adaround_iterations=20) if quick else dict(PTQ_OPTIONS)
    # one seeded stream: its first n_cal crops are suite_generalization's calibration crops
    data = evaluation_set(n_cal + n_search, per_photo, size=E.input_size("lite0"))
    cal, search = E.preprocess(data.calibration[:n_cal]), E.preprocess(data.calibration[n_cal:])
    evaluation = E.preprocess(data.evaluation)
    model = E.load_efficientnet_lite("lite0")
    float_logits = model.predict(evaluation, batch_size=30, verbose=0)
    models: Dict[str, bytes] = {}

    def row(route: str, tflite: bytes, **extra) -> Row:
        b = photo_bootstrap(float_logits, run_tflite(tflite, evaluation), data.sources)
        models[route] = tflite
        return harness.announce(Row(route=route, agreement=b.agreement, agreement_ci=b.agreement_ci,
                                    sqnr_db=b.sqnr_db, sqnr_ci=b.sqnr_ci, size_kb=len(tflite) / 1024, **extra))

    rows = [row("float TFLite", float_tflite(model))]
    tfl, secs = harness.timed(converter_ptq, model, cal, per_channel=True)
    rows.append(row(CONVERTER, tfl, quant_seconds=secs))
    saved_model = E.cached_saved_model("lite0")
    trial_lines = []
    for name, granularity in routes_:
        sim, secs = harness.timed(tfquant.ptq, saved_model, cal, progress=False, **granularity, **options)
        base = f"tfquant bias correction + AdaRound {name}"
        rows.append(row(base, sim.to_tflite(), quant_seconds=secs))
        searches = [("held-out calibration-photo crops", search)]
        if calibration_search:
            searches.append(("the calibration crops", cal))
        for label, x in searches:
            mp, secs = harness.timed(tfquant.debug.mixed_precision, sim, x, target_agreement=TARGET,
                                     max_float=MAX_FLOAT, max_latency_ratio=MAX_LATENCY)
            non_int8 = len(tfquant.inspect(mp.tflite).non_int8_tensors)
            route = f"{base} + automatic mixed precision (search on {label})"
            rows.append(row(route, mp.tflite, quant_seconds=secs, note=(
                f"{len(mp.floats)} activation(s) float, {non_int8} non-int8 tensors; search data: "
                f"{100 * (mp.agreement or 0):.1f}% / {mp.sqnr_db:.1f} dB, target "
                f"{'met' if mp.met else 'not met'}, {mp.tried} flatbuffers; {mp.stopped}")))
            trial_lines.append(f"**{route}**: {mp.summary()}\n\n```\n"
                               + "\n".join(str(t) for t in mp.trials) + "\n```\n")
            print(trial_lines[-1], flush=True)
    harness.fill_latencies(rows, models)
    table = harness.markdown_table(rows, COLUMNS, ratios={"converter int8": rows[1].latency_ms})
    text = (f"## Automatic mixed precision: EfficientNet-Lite0 on photos the search never saw\n\n"
            f"The generalization suite's split: {n_cal} calibration crops of "
            f"{len(data.calibration_photos)} photos (the ranges, bias correction and AdaRound), "
            f"{n_search} further crops of the same photos for `tfquant.debug.mixed_precision` "
            f"(target {100 * TARGET:.0f}% top-1 agreement, at most {MAX_FLOAT} float tensors, each candidate at most "
            f"{MAX_LATENCY}x the int8 model's latency; it "
            f"ranks candidates on half of them in the simulation and accepts them by flatbuffer SQNR "
            f"on the other half, paying 1 dB per MB of float weights), and {len(evaluation)} "
            f"evaluation crops of {len(data.evaluation_photos)} other photos for every figure "
            f"below (95% intervals resample evaluation photos; default XNNPACK kernels). *quantize "
            f"s*: tfquant.ptq, or the search alone.\n\n{table}\n\n"
            f"<details><summary>Every candidate the searches tried (SQNR on the search crops' "
            f"acceptance half, flatbuffer size, latency)</summary>\n\n" + "\n".join(trial_lines)
            + f"\n</details>\n\nSuite wall time: {time.perf_counter() - started:.0f} s.\n")
    return rows, text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite_mixed_precision",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets (a smoke run)")
    parser.add_argument("--granularity", default="per-channel,per-tensor",
                        help="comma-separated subset of per-channel,per-tensor")
    parser.add_argument("--calibration-search", action="store_true",
                        help="also search on the calibration crops themselves, for comparison")
    args = parser.parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    chosen = [g.strip() for g in args.granularity.split(",") if g.strip()]
    routes_ = [r for r in ROUTES if r[0] in chosen]
    if len(routes_) != len(chosen):
        parser.error(f"--granularity: choose from {', '.join(n for n, _ in ROUTES)}")
    _, text = run(args.quick, routes_, args.calibration_search)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
