"""Benchmarks on real models and data, side by side with the peers.

    python -m benchmarks.run            # full run, writes BENCHMARKS.md and benchmarks/plots/*.png
    python -m benchmarks.run --quick    # small sets, fewer epochs: under 10 minutes
    python -m benchmarks.run --suites=generalization   # one suite (here Lite0/1/2, new photos)
    python -m benchmarks.run --suites=scale --update   # rewrite only that suite's section in place

The generalization and mixed_precision suites need the photo cache of scripts/fetch_photos.sh; a
--quick run leaves them, the scale suite and the slow test suites (tutorials included) out unless --suites names them.

Every figure in BENCHMARKS.md comes from this harness, in one run; a full run of both suites also
rewrites README.md's headline block from it (benchmarks/readme_figures.py).
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Small sets and short training (for CI and smoke runs).")
flags.DEFINE_string("output", "BENCHMARKS.md", "Markdown file to write.")
flags.DEFINE_string("plots_dir", "benchmarks/plots", "Folder for the PNG plots.")
flags.DEFINE_list("suites", ["efficientnet", "generalization", "mixed_precision", "ablation", "headroom",
                            "fashion_mnist",
                            "keras_applications", "scale", "slow_tests"], "Suites to run.")
flags.DEFINE_bool("update", False, "Replace only the sections of the suites run in the existing --output "
                  "(each section then names the run that wrote it), keeping the others.")
flags.DEFINE_string("keras_applications_rows", "", "JSON file where the Keras applications sweep keeps each "
                    "model's rows as it finishes, and skips the models already in it (a resumable sweep).")
flags.DEFINE_bool("keras_applications_from_rows", False, "Write the Keras applications section from "
                  "--keras_applications_rows alone, running no model (the models it lacks are named).")
flags.DEFINE_string("readme", "README.md", "README whose headline block a run of any suite it quotes "
                    "(HEADLINE_SUITES) rewrites from the new BENCHMARKS.md ('' for none).")

# the suites whose sections README.md's headline block is written from (benchmarks/readme_figures.py)
HEADLINE_SUITES = frozenset({"generalization", "keras_applications", "fashion_mnist"})


def _update_readme(quick: bool) -> None:
    """Rewrite README.md's headline block from --output when a suite it quotes was run."""
    if not FLAGS.readme or quick or not set(FLAGS.suites) & HEADLINE_SUITES:
        return
    from benchmarks import readme_figures

    try:
        readme_figures.update_readme(FLAGS.output, FLAGS.readme)
        logging.info("wrote the headline figures of %s", FLAGS.readme)
    except readme_figures.FiguresError as e:
        logging.warning("%s: headline block not rewritten: %s", FLAGS.readme, e)


def _plot(rows, metric: str, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    named = [(r.route, getattr(r, metric)) for r in rows if getattr(r, metric) is not None]
    if not named:
        return
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(named) + 1.2))
    intervals = [getattr(r, metric + "_ci", None) for r in rows if getattr(r, metric) is not None]
    xerr = None
    if all(ci is not None for ci in intervals):   # error bars: the rows' 95% intervals
        xerr = np.array([[100 * (v - ci[0]), 100 * (ci[1] - v)]
                         for (_, v), ci in zip(named, intervals)])[::-1].T
    ax.barh([n for n, _ in named][::-1], [100 * v for _, v in named][::-1], color="#4878a8",
            xerr=xerr, ecolor="#333333", capsize=2)
    ax.set_xlabel("%")
    ax.set_xlim(0, 100)
    ax.set_title(title, loc="left", fontsize=10)
    for i, (_, v) in enumerate(named[::-1]):
        ax.text(1, i, f"{100 * v:.1f}", va="center", fontsize=8, color="white")   # clear of the bars
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_sections(document: str, sections: list[str]) -> str:
    """`document` with each of `sections` (markdown starting "## Title") in place of the section of
    the same title, or added before the closing wall-time line; the other sections kept as they are.

        >>> update_sections("# B\\n\\n## A\\n\\nold\\n\\n## C\\n\\nc\\n", ["## A\\n\\nnew\\n"])
        '# B\\n\\n## A\\n\\nnew\\n\\n## C\\n\\nc\\n'
    """
    head, *parts = document.split("\n## ")
    parts = ["## " + p for p in parts]
    title = lambda text: text.split("\n", 1)[0]   # noqa: E731
    tail = ""
    if parts and "\nTotal benchmark wall time" in parts[-1]:
        last, _, total = parts[-1].partition("\nTotal benchmark wall time")
        parts[-1], tail = last, "Total benchmark wall time" + total
    for new in sections:
        same = [i for i, p in enumerate(parts) if title(p) == title(new)]
        if same:
            parts[same[0]] = new
        else:
            parts.append(new)
    body = [head.rstrip("\n") + "\n"] + [p.rstrip("\n") + "\n" for p in parts]
    return "\n".join(body) + ("\n" + tail if tail else "")


def main(argv) -> int:
    del argv
    from benchmarks import harness
    from tfquant.io_utils import write_bytes_atomic

    quick = FLAGS.quick
    logging.set_verbosity(logging.WARNING)
    started = time.time()
    load_at_start = os.getloadavg()[0]        # other work on the machine inflates the wall times
    sections = []
    command = "python -m benchmarks.run" + (" --quick" if quick else "")
    sections.append("# Benchmarks\n\nWritten by `" + command + "`; every figure below comes from that "
                    "one run (nothing typed by hand). Machine: " + harness.machine() + ".\n")
    sections.append(
        "Columns: *top-1 agreement* (with its 95% interval) and *logit SQNR* compare the TFLite model's "
        "logits with the float Keras model's; *TFLite accuracy* is on the labelled test set; *sim=TFLite "
        "exact* / *within 1 LSB* compare a route's own simulation with its flatbuffer's int8 outputs under "
        "TFLite's reference kernels (only routes that have a simulation); *latency* is the median of "
        "repeated batch-1 runs on one thread with the default (XNNPACK) kernels, every model of a table "
        "timed in turn, round after round, beside the baselines it is divided by; *quantize s* is the "
        "wall time of the quantization itself.\n")
    if "efficientnet" in FLAGS.suites:
        from benchmarks import suite_efficientnet

        rows, text = suite_efficientnet.run(quick)
        sections.append(text)
        _plot(rows, "agreement", "EfficientNet-Lite0: top-1 agreement with float",
              os.path.join(FLAGS.plots_dir, "efficientnet_agreement.png"))
    if "generalization" in FLAGS.suites and (not quick or FLAGS["suites"].present):
        from benchmarks import suite_generalization

        _, text = suite_generalization.run(quick, ["lite0"] if quick else None)
        sections.append(text)
    if "mixed_precision" in FLAGS.suites and (not quick or FLAGS["suites"].present):
        from benchmarks import suite_mixed_precision

        _, text = suite_mixed_precision.run(quick)
        sections.append(text)
    if "ablation" in FLAGS.suites and (not quick or FLAGS["suites"].present):
        from benchmarks import suite_ablation

        _, text = suite_ablation.run(quick, ["lite0"] if quick else None)
        sections.append(text)
    if "headroom" in FLAGS.suites and (not quick or FLAGS["suites"].present):
        from benchmarks import suite_headroom

        _, text = suite_headroom.run(quick, ["lite0"] if quick else None)
        sections.append(text)
    if "fashion_mnist" in FLAGS.suites:
        from benchmarks import suite_fashion_mnist

        rows, text = suite_fashion_mnist.run(quick)
        sections.append(text)
        _plot(rows, "accuracy", "Fashion-MNIST: test accuracy in TFLite",
              os.path.join(FLAGS.plots_dir, "fashion_mnist_accuracy.png"))
    if "slow_tests" in FLAGS.suites and (not quick or FLAGS["suites"].present):
        from benchmarks import suite_slow_tests

        _, text = suite_slow_tests.run(quick)
        sections.append(text)
    if "keras_applications" in FLAGS.suites and (not quick or FLAGS["suites"].present):
        from benchmarks import suite_keras_applications

        _, text = suite_keras_applications.run(quick, rows_file=FLAGS.keras_applications_rows or None,
                                               measure=not FLAGS.keras_applications_from_rows)
        sections.append(text)
    if "scale" in FLAGS.suites and (not quick or FLAGS["suites"].present):
        from benchmarks import suite_scale

        _, text = suite_scale.run(quick)
        sections.append(text)
    if FLAGS.update:
        stamp = f"*Section written by `{command} --suites={','.join(FLAGS.suites)} --update` on " \
                f"{time.strftime('%Y-%m-%d')} ({time.time() - started:.0f} s; load average at the start " \
                f"{load_at_start:.1f} on {os.cpu_count()} cores).*\n"
        with open(FLAGS.output) as f:
            text = update_sections(f.read(), [s.rstrip("\n") + "\n\n" + stamp for s in sections[2:]])
        text = text.replace("every figure below comes from that one run (", "every figure below comes from "
                            "that one run, except in the sections stamped with the later run that rewrote them (")
        write_bytes_atomic(FLAGS.output, text.encode())
        logging.info("updated %d section(s) of %s", len(sections) - 2, FLAGS.output)
        _update_readme(quick)
        return 0
    sections.append(f"Total benchmark wall time: {time.time() - started:.0f} s.\n")
    write_bytes_atomic(FLAGS.output, "\n".join(sections).encode())
    logging.info("wrote %s", FLAGS.output)
    _update_readme(quick)
    return 0


if __name__ == "__main__":
    app.run(main)
