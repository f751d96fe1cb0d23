"""Automatic mixed precision on photos neither the calibration nor the search saw: EfficientNet-Lite0.

    python -m benchmarks.suite_mixed_precision                   # per-channel and per-tensor
    python -m benchmarks.suite_mixed_precision --quick           # small sets (a smoke run)
    python -m benchmarks.run --suites=mixed_precision --update   # its section of BENCHMARKS.md

The held-out protocol of benchmarks/suite_generalization.py (the same photo split, the same 64
calibration crops of the 12 calibration photos) with the 30 evaluation photos split once more, by
photo (seeded): `SEARCH_PHOTOS` of them are *search* photos, whose crops
`tfquant.debug.mixed_precision` searches on (ranking on half of the search photos, accepting on
the other half, the noise of each gain estimated by resampling those photos), and the other 20
photos' crops (the generalization suite's evaluation crops of those photos) give every figure.
The search data is thus as hard as the evaluation data: new photos, not further crops of the
calibration photos (where int8 already agrees 98%, and a search finds nothing that carries over;
`--calibration-search` adds that search for comparison). PTQ: bias correction + AdaRound (200
iterations, lr 0.01), per-channel and per-tensor; each int8 result, then its mixed-precision plan
(target 98% top-1 agreement, at most 8 non-int8 candidates, int16 activations tried before float
for each, no candidate slower than 1.2x the int8 model). Figures on the evaluation crops:
agreement with the float Keras model and logit SQNR with 95% bootstrap intervals over evaluation
photos, the tensors that are not int8 (`tfquant.inspect`), size, and latency beside the
converter's int8 model (one thread, default kernels, timed side by side).
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


SEARCH_PHOTOS = 10         # of the 30 evaluation photos; the other 20 are the evaluation
SEARCH_SEED = 29


def search_crops(quick: bool) -> int:
    """How many crops of each search photo the search gets (and further calibration-photo crops
    for `--calibration-search`: this times SEARCH_PHOTOS)."""
    return 2 if quick else 12


def search_split(evaluation_photos: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(search photos, evaluation photos): the evaluation photos split by photo, seeded."""
    import numpy as np

    order = np.random.default_rng(SEARCH_SEED).permutation(len(evaluation_photos))
    search = sorted(evaluation_photos[i] for i in order[:SEARCH_PHOTOS])
    return search, [p for p in evaluation_photos if p not in search]


def search_set(photos: Sequence[str], per_photo: int, size: int):
    """uint8 crops of `photos` (`per_photo` each, seeded apart from the other sets) and the photo
    of each."""
    from benchmarks.data import photos as P

    images = P.load_photos(list(photos))
    specs = P.draw_crop_specs(per_photo * len(photos), {n: images[n].shape[:2] for n in photos}, seed=SEARCH_SEED)
    return P.render_crops(images, specs, size), [s.photo for s in specs]


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
    import numpy as np

    n_cal, per_photo, _ = sizes(quick)
    per_search_photo = search_crops(quick)
    n_cal_search = per_search_photo * SEARCH_PHOTOS
    options = dict(PTQ_OPTIONS, adaround_iterations=20) if quick else dict(PTQ_OPTIONS)
    # one seeded stream: its first n_cal crops are suite_generalization's calibration crops
    data = evaluation_set(n_cal + n_cal_search, per_photo, size=E.input_size("lite0"))
    search_photos, evaluation_photos = search_split(data.evaluation_photos)
    keep = np.array([s in evaluation_photos for s in data.sources])
    sources = [s for s, k in zip(data.sources, keep) if k]
    cal, cal_search = E.preprocess(data.calibration[:n_cal]), E.preprocess(data.calibration[n_cal:])
    search_u8, search_sources = search_set(search_photos, per_search_photo, E.input_size("lite0"))
    search = E.preprocess(search_u8)
    evaluation = E.preprocess(data.evaluation[keep])
    model = E.load_efficientnet_lite("lite0")
    float_logits = model.predict(evaluation, batch_size=30, verbose=0)
    models: Dict[str, bytes] = {}

    def row(route: str, tflite: bytes, **extra) -> Row:
        b = photo_bootstrap(float_logits, run_tflite(tflite, evaluation), sources)
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
        searches = [(f"crops of {SEARCH_PHOTOS} held-out photos", search, search_sources)]
        if calibration_search:
            searches.append(("further calibration-photo crops", cal_search, None))
        for label, x, groups in searches:
            mp, secs = harness.timed(tfquant.debug.mixed_precision, sim, x, target_agreement=TARGET,
                                     max_float=MAX_FLOAT, max_latency_ratio=MAX_LATENCY, groups=groups)
            non_int8 = len(tfquant.inspect(mp.tflite).non_int8_tensors)
            route = f"{base} + automatic mixed precision (search on {label})"
            rows.append(row(route, mp.tflite, quant_seconds=secs, note=(
                f"{len(mp.floats)} activation(s) float, {len(mp.int16)} int16, {non_int8} non-int8 tensors; search data: "
                f"{100 * (mp.agreement or 0):.1f}% / {mp.sqnr_db:.1f} dB, target "
                f"{'met' if mp.met else 'not met'}, {mp.tried} flatbuffers; {mp.stopped}")))
            trial_lines.append(f"**{route}**: {mp.summary()}\n\n```\n"
                               + "\n".join(str(t) for t in mp.trials) + "\n```\n")
            print(trial_lines[-1], flush=True)
    harness.fill_latencies(rows, models)
    table = harness.markdown_table(rows, COLUMNS, ratios={"converter int8": rows[1].latency_ms})
    text = (f"## Automatic mixed precision: EfficientNet-Lite0 on photos the search never saw\n\n"
            f"The generalization suite's calibration crops ({n_cal} crops of "
            f"{len(data.calibration_photos)} photos: the ranges, bias correction and AdaRound); its "
            f"{len(data.evaluation_photos)} evaluation photos split by photo: {per_search_photo} crops of each of "
            f"{len(search_photos)} search photos for `tfquant.debug.mixed_precision` (target {100 * TARGET:.0f}% "
            f"top-1 agreement, at most {MAX_FLOAT} non-int8 candidates, int16 activations tried before "
            f"float, each candidate at most {MAX_LATENCY}x the int8 model's latency; it ranks candidates "
            f"in the simulation on half of the search photos and accepts them by flatbuffer SQNR on the "
            f"other half, paying 1 dB per MB of float weights, when the gain is at least 0.1 dB and 2 "
            f"standard deviations of its bootstrap over those photos), and the generalization suite's "
            f"{len(evaluation)} evaluation crops of the other {len(evaluation_photos)} photos for every "
            f"figure below (95% intervals resample evaluation photos; default XNNPACK kernels). *quantize "
            f"s*: tfquant.ptq, or the search alone.\n\n{table}\n\n"
            f"<details><summary>Every candidate the searches tried (SQNR on the search data's "
            f"acceptance photos, flatbuffer size, latency)</summary>\n\n" + "\n".join(trial_lines)
            + f"\n</details>\n\nSuite wall time: {time.perf_counter() - started:.0f} s.\n")
    return rows, text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite_mixed_precision",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets (a smoke run)")
    parser.add_argument("--granularity", default="per-channel,per-tensor",
                        help="comma-separated subset of per-channel,per-tensor")
    parser.add_argument("--calibration-search", action="store_true",
                        help="also search on further crops of the calibration photos, for comparison")
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
