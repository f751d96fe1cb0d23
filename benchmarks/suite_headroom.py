"""How far W8A8 can go on EfficientNet-Lite: the int8 activation ceiling, and float islands.

    python -m benchmarks.suite_headroom                     # both parts, Lite0/1/2
    python -m benchmarks.suite_headroom --quick             # small sets (a smoke run)
    python -m benchmarks.run --suites=headroom --update     # its section of BENCHMARKS.md

*The activation ceiling* (the generalization suite's protocol: its calibration crops, its
evaluation crops of 30 other photos): each model with int8 activations and float weights (no PTQ
step; min-max, then MSE activation ranges), in the simulation, beside the default pipeline (all
int8, the same simulation; bit-exact with the TFLite reference kernels). What the first rows
leave is the error of the activation grids alone: no choice of weight rounding removes it; only
what corrects activation error can (the default's empirical bias correction on quantized
activations does, in part).

*Float islands* (the mixed-precision suite's split of those photos: candidates ranked on its
search photos, figures on the crops of the other 20): EfficientNet-Lite0, default pipeline
per-channel, with the k activation tensors whose float precision gains most in the simulation
(`tfquant.debug.mixed_precision.float_gains` on the search crops) kept in float, biases
re-corrected for each plan (`PTQResult.bias_corrected_for`); flatbuffer figures in the
interpreter (default kernels), the tensors that are not int8 (`tfquant.inspect`), size, and
latency timed side by side with the all-int8 flatbuffer. This is the upper end of what
`tfquant.debug.mixed_precision` can pick (it accepts a candidate only when the gain is above the
noise); int16 activations are not in the curve: TF 2.21 cannot run ADD in int16 from a FakeQuant
graph, so EfficientNet's residual blocks stay int8 (see README, mixed precision).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks import harness  # noqa: E402
from benchmarks.harness import Row  # noqa: E402
from benchmarks.suite_generalization import MODELS, TITLES, models_main, sizes  # noqa: E402

CEILING_ROUTES = [
    # (row, tfquant.ptq options, weights kept float in the simulation)
    ("int8 activations only (weights float), min-max ranges", dict(steps=()), True),
    ("int8 activations only (weights float), MSE ranges", dict(steps=(), activation_ranges="mse"), True),
    ("tfquant default pipeline per-channel, all int8", dict(per_channel=True), False),
    ("tfquant default pipeline per-tensor, all int8", dict(per_channel=False), False),
]
CEILING_COLUMNS = ["route", "agreement", "agreement_ci", "sqnr_db", "sqnr_ci", "quant_seconds"]
ISLANDS = (1, 2, 3, 5, 8, 12, 20)       # float tensors kept, most helpful first
ISLAND_COLUMNS = ["route", "agreement", "agreement_ci", "sqnr_db", "sqnr_ci", "latency_ms", "size_kb", "note"]
RANK_CROPS = 24                         # search crops the simulation ranks candidates on


def ceiling(variant: str, quick: bool) -> Tuple[List[Row], str]:
    """The activation-ceiling rows of one model and their table."""
    import tfquant
    from benchmarks.data.photos import evaluation_set, photo_bootstrap
    from benchmarks.models import efficientnet_lite0 as E
    from tfquant.debug import PTQSubject

    n_cal, per_photo, _ = sizes(quick)
    data = evaluation_set(n_cal, per_photo, size=E.input_size(variant))
    cal, evaluation = E.preprocess(data.calibration), E.preprocess(data.evaluation)
    float_logits = E.load_efficientnet_lite(variant).predict(evaluation, batch_size=30, verbose=0)
    saved_model = E.cached_saved_model(variant)
    rows = []
    for route, options, weights_float in CEILING_ROUTES:
        if quick:
            options = dict(options, adaround_iterations=20)
        sim, secs = harness.timed(tfquant.ptq, saved_model, cal, progress=False, **options)
        subject = PTQSubject(sim, batch_size=30)
        y = subject.run(evaluation, floats=subject.weight_entries() if weights_float else ())
        b = photo_bootstrap(float_logits, y, data.sources)
        rows.append(harness.announce(Row(route=f"{TITLES[variant]}: {route}", agreement=b.agreement,
                                         agreement_ci=b.agreement_ci, sqnr_db=b.sqnr_db, sqnr_ci=b.sqnr_ci,
                                         quant_seconds=secs)))
    return rows, harness.markdown_table(rows, CEILING_COLUMNS)


def islands(quick: bool) -> Tuple[List[Row], str]:
    """The float-islands rows (EfficientNet-Lite0 per-channel) and their table."""
    import numpy as np

    import tfquant
    from benchmarks.data.photos import evaluation_set, photo_bootstrap
    from benchmarks.models import efficientnet_lite0 as E
    from benchmarks.peers.converter_ptq import run_tflite
    from benchmarks.suite_mixed_precision import search_crops, search_set, search_split
    from tfquant.debug import PTQSubject
    from tfquant.debug.mixed_precision import float_gains

    n_cal, per_photo, _ = sizes(quick)
    data = evaluation_set(n_cal, per_photo, size=E.input_size("lite0"))
    search_photos, evaluation_photos = search_split(data.evaluation_photos)
    keep = np.array([s in evaluation_photos for s in data.sources])
    sources = [s for s, k in zip(data.sources, keep) if k]
    cal, evaluation = E.preprocess(data.calibration), E.preprocess(data.evaluation[keep])
    search_u8, _ = search_set(search_photos, search_crops(quick), E.input_size("lite0"))
    search = E.preprocess(search_u8)[:RANK_CROPS]
    model = E.load_efficientnet_lite("lite0")
    float_logits = model.predict(evaluation, batch_size=30, verbose=0)
    options = dict(adaround_iterations=20) if quick else {}
    result = tfquant.ptq(E.cached_saved_model("lite0"), cal, progress=False, per_channel=True, **options)
    plan = result.plan
    y_search = PTQSubject(result).reference_run(search)
    candidates = [q for q in plan.calibrated_ids() if q not in plan.weight_specs]
    gain, _ = float_gains(result.graph, plan, candidates, search, y_search)
    ranked = sorted(candidates, key=lambda q: -gain[q])
    models: Dict[str, bytes] = {}
    rows = []

    def row(route: str, tflite: bytes, note: str) -> None:
        b = photo_bootstrap(float_logits, run_tflite(tflite, evaluation), sources)
        models[route] = tflite
        non_int8 = len(tfquant.inspect(tflite).non_int8_tensors)
        rows.append(harness.announce(Row(route=route, agreement=b.agreement, agreement_ci=b.agreement_ci,
                                         sqnr_db=b.sqnr_db, sqnr_ci=b.sqnr_ci, size_kb=len(tflite) / 1024,
                                         note=f"{non_int8} non-int8 tensors{note}")))

    row("all int8", result.to_tflite(), "")
    for k in ISLANDS[:3] if quick else ISLANDS:
        mixed = plan.copy()
        mixed.set_precision(ranked[:k], "float")
        row(f"{k} activation(s) float", tfquant.to_tflite(result.bias_corrected_for(mixed), plan=mixed),
            f"; simulation gain of the last one on the search crops {gain[ranked[k - 1]]:+.2f} dB")
    harness.fill_latencies(rows, models)
    return rows, harness.markdown_table(rows, ISLAND_COLUMNS, ratios={"all int8": rows[0].latency_ms})


def run(quick: bool, models: Optional[Sequence[str]] = None) -> Tuple[List[Row], str]:
    """All rows and the BENCHMARKS.md section."""
    started = time.perf_counter()
    n_cal, per_photo, _ = sizes(quick)
    all_rows: List[Row] = []
    parts = []
    for variant in models or MODELS:
        rows, table = ceiling(variant, quick)
        all_rows += rows
        parts.append(f"### {TITLES[variant]}: the activation ceiling\n\n{table}\n")
    rows, table = islands(quick)
    all_rows += rows
    parts.append("### EfficientNet-Lite0 per-channel: float islands\n\n" + table + "\n")
    text = ("## Headroom: the int8 activation ceiling and float islands (EfficientNet-Lite0/1/2)\n\n"
            + " ".join(__doc__.split("\n\n")[2:4]).replace("\n", " ") + f" ({n_cal} calibration crops; "
            f"{per_photo} evaluation crops per photo; 95% intervals resample evaluation photos.)\n\n"
            + "\n".join(parts) + f"\nSuite wall time: {time.perf_counter() - started:.0f} s.\n")
    return all_rows, text


def main(argv: Optional[Sequence[str]] = None) -> int:
    return models_main(argv, "benchmarks.suite_headroom", __doc__, run)


if __name__ == "__main__":
    sys.exit(main())
