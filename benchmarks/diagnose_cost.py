"""Time and peak memory of `tfquant.debug.diagnose` on EfficientNet-Lite0 (issue 12's defect).

    python -m benchmarks.diagnose_cost --samples 32          # per-channel PTQ, default pipeline steps
    python -m benchmarks.diagnose_cost --samples 8 --steps=  # PTQ without steps (quicker to set up)

The PTQ result comes from the cached SavedModel and 64 calibration crops of the calibration photos;
diagnose runs on one crop of each evaluation photo (at most 30 samples). Peak RSS is sampled from
/proc every 0.2 s while diagnose runs; "start" is the RSS before it. Before the fix (one tf.function
per plan: two per layer) 8 samples passed 14 GB within 8 minutes; see the issue's report.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.diagnose_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--steps", default=None, help="comma-separated PTQ steps ('' for none; default: the pipeline's)")
    parser.add_argument("--per_tensor", action="store_true")
    args = parser.parse_args(argv)
    import tfquant
    import tfquant.debug
    from benchmarks.data.photos import evaluation_set
    from benchmarks.models import efficientnet_lite0 as E

    data = evaluation_set(64, 1, size=E.input_size("lite0"))
    cal, x = E.preprocess(data.calibration), E.preprocess(data.evaluation)[:args.samples]
    options = {} if args.steps is None else dict(steps=tuple(s for s in args.steps.split(",") if s))
    started = time.perf_counter()
    result = tfquant.ptq(E.cached_saved_model("lite0"), cal, progress=False, per_channel=not args.per_tensor, **options)
    print(f"ptq: {time.perf_counter() - started:.0f} s", flush=True)
    peak, done = [_rss()], threading.Event()
    start_rss = peak[0]

    def watch():
        while not done.wait(0.2):
            peak[0] = max(peak[0], _rss())

    threading.Thread(target=watch, daemon=True).start()
    started = time.perf_counter()
    d = tfquant.debug.diagnose(result, x)
    done.set()
    print(d.summary())
    print(f"diagnose: {len(x)} samples, {len(d.layers)} layers, {time.perf_counter() - started:.0f} s, "
          f"peak RSS {peak[0] / 1e9:.2f} GB (start {start_rss / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
