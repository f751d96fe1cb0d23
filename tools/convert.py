"""tfquant-convert: a SavedModel or a Keras model file to an int8 TFLite flatbuffer with tfquant's
PTQ pipeline.

    tfquant-convert --saved_model DIR --output model.tflite \\
        [--calibration images_dir, .npy or .tfrecord] [--per_tensor] [--steps cle,bias_absorption,bias_correction]
    tfquant-convert --saved_model model.keras --output model.tflite --input_range=-1,1   # data-free

Everything it does is `tfquant.ptq(...)`; it parses flags, prints the pipeline's report and what
the flatbuffer holds, and turns a tfquant error into a one-line message and exit status 1.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Optional

from absl import app, flags

from tools import quiet_unless_asked, show_flags_in_help

if TYPE_CHECKING:
    from tfquant.export.inspector import ModelReport
    from tfquant.export.verify import VerificationResult

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel directory to quantize, or a Keras model file "
                    "(.keras, or .h5 that Keras 3 can load).")
flags.DEFINE_string("signature", "serving_default", "Signature of the SavedModel to quantize.")
flags.DEFINE_string("output", None, "Where to write the int8 .tflite flatbuffer.")
flags.DEFINE_string("calibration", None, "Folder of images, a .npy array [N, ...] of preprocessed samples, or a "
                    ".tfrecord / .tfrecords file of serialized tf.train.Example (see --tfrecord_feature). "
                    "Without it the pipeline is data-free (needs --input_range).")
flags.DEFINE_string("tfrecord_feature", None, "The feature of the TFRecord's examples to calibrate with (default: "
                    "the only one): encoded images (bytes; resized to the input or --image_size, then "
                    "normalised with --image_mean / --image_std), raw int64 pixels (normalised the same "
                    "way) or preprocessed floats, reshaped to the model's input.")
flags.DEFINE_boolean("per_tensor", False, "Per-tensor weights (default: per output channel).")
flags.DEFINE_list("steps", None, "PTQ steps, comma separated, from: cle, bias_absorption, "
                  "bias_correction, adaround; 'none' for none. Default: bias_correction,adaround with "
                  "--calibration, cle,bias_absorption,bias_correction without (data-free).")
flags.DEFINE_enum("ranges", None, ["minmax", "mse"], "Range estimator for weights and activations.")
flags.DEFINE_enum("activation_ranges", None, ["minmax", "mse", "percentile", "bn"],
                  "Activation range estimator (overrides --ranges).")
flags.DEFINE_enum("weight_ranges", None, ["minmax", "mse"], "Weight range estimator (overrides --ranges).")
flags.DEFINE_list("input_range", None, "min,max of the model input (required without calibration data).")
flags.DEFINE_list("image_size", None, "height,width that calibration images (a folder, a TFRecord) are resized to "
                  "(needed when the model's input size is not fixed).")
flags.DEFINE_float("image_mean", 127.5, "Calibration images become (pixel - mean) / std.")
flags.DEFINE_float("image_std", 127.5, "Calibration images become (pixel - mean) / std.")
flags.DEFINE_integer("max_calibration_samples", None, "Calibration samples to read.")
flags.DEFINE_integer("adaround_iterations", None, "AdaRound iterations per layer.")
flags.DEFINE_string("saved_model_output", None, "Also write the transformed float model here.")
flags.DEFINE_boolean("int8_io", False, "int8 inputs and outputs (default: float, quantized inside).")
flags.DEFINE_boolean("verify", False, "Verify the flatbuffer against the simulation on calibration samples.")
flags.DEFINE_boolean("progress", True, "Show progress bars.")
flags.DEFINE_string("report", None, "Write the debugger's report (report.md and PNG plots) to this folder, "
                    "from up to 64 calibration samples.")
flags.DEFINE_list("keep_float", None, "Plan entries, tensors or fnmatch patterns to keep in float "
                  "(e.g. q17 or '*/block3_*'); see the plan table (--plan_output).")
flags.DEFINE_float("target_agreement", None, "Automatic mixed precision: keep the fewest tensors in float "
                   "that bring top-1 agreement with float to this fraction (on calibration samples).")
flags.DEFINE_string("plan", None, "Export with this QuantPlan JSON (from --plan_output) instead of the "
                    "ranges tfquant.ptq computes.")
flags.DEFINE_string("plan_output", None, "Write the QuantPlan (JSON) the flatbuffer was exported with.")


def _fail(message: str) -> int:
    print(f"tfquant-convert: error: {message}", file=sys.stderr)
    return 1


def _output_problem(path: str, directory: bool = False):
    """Why `path` (a file, or a folder to create) cannot be written, or None."""
    path = os.path.abspath(path)
    if not directory and os.path.isdir(path):
        return f"--output {path!r} is a directory; give a file name such as model.tflite."
    if directory and os.path.exists(path) and not os.path.isdir(path):
        return f"{path!r} is a file; the output there is a folder."
    folder = os.path.dirname(path)
    probe = folder
    while not os.path.exists(probe):            # the folder is created on write: check its first existing parent
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        return f"cannot write {path!r}: {probe!r} is not a writable folder."
    return None


def _load_model_file(path: str):
    """A .keras / .h5 file as a Keras model (tfquant.ptq takes Keras models)."""
    from tfquant.errors import ModelFileError, cause_text

    if not path.endswith((".keras", ".h5", ".hdf5")):
        raise ModelFileError(f"{path!r} is a file: give a SavedModel directory or a .keras / .h5 Keras model.")
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for unreadable files
        raise ModelFileError(f"Keras could not load {path!r} ({type(e).__name__}: {cause_text(e)}). A Keras 2 "
                             "(tf_keras) model: export it as a SavedModel (model.export(dir)) and pass the "
                             "directory.") from None


def config_overrides() -> dict:
    """PTQConfig fields from the flags (only those given)."""
    options: dict = {"per_channel": not FLAGS.per_tensor, "progress": FLAGS.progress,
                     "image_mean": FLAGS.image_mean, "image_std": FLAGS.image_std}
    if FLAGS.steps is not None:
        options["steps"] = tuple(s for s in FLAGS.steps if s and s.lower() != "none")
    for name in ("ranges", "activation_ranges", "weight_ranges", "max_calibration_samples",
                 "adaround_iterations", "tfrecord_feature"):
        if getattr(FLAGS, name) is not None:
            options[name] = getattr(FLAGS, name)
    for name, kind, what in (("image_size", int, "two integers height,width"),
                             ("input_range", float, "two numbers min,max")):
        values = getattr(FLAGS, name)
        if values is not None:
            try:
                a, b = (kind(v) for v in values)
            except ValueError:
                raise ValueError(f"--{name} must be {what}, got {','.join(values)!r}.") from None
            options[name] = (a, b)
    return options


WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def summary_table(path: str, report: "ModelReport", verification: Optional["VerificationResult"] = None) -> str:
    """The table printed at the end of a successful run: what the written flatbuffer holds (from
    `tfquant.inspect`) and, after --verify, how close it is to float and to the simulation.

        >>> print(summary_table("m.tflite", tfquant.inspect("m.tflite"), sim.verify(x)))
    """
    counts = report.op_counts()
    float_ops = report.float_ops
    acts = report.activation_tensors
    int8 = len(acts) - len(report.non_int8_tensors)
    weights = [(op, report.tensors[op.inputs[1]]) for op in report.ops
               if op.op in WEIGHTED_OPS and len(op.inputs) > 1 and op.inputs[1] >= 0
               and report.tensors[op.inputs[1]].is_constant]
    per_channel = sum(t.per_channel for _, t in weights)
    per_tensor = sorted({op.op for op, t in weights if not t.per_channel})
    dtypes = sorted({t.dtype for _, t in weights})
    rows = [("output", f"{path}, {report.size_bytes} bytes"),
            ("ops", f"{len(report.ops)} (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"),
            ("float ops left", f"{len(float_ops)}" +
             (" (" + ", ".join(f"#{o.index} {o.op}" for o in float_ops) + ")" if float_ops else "")),
            ("int8 activations", f"{int8}/{len(acts)} ({100.0 * int8 / max(len(acts), 1):.1f}%)"),
            ("weights", (f"per-channel {per_channel}/{len(weights)}" +
                         (f" (per-tensor: {', '.join(per_tensor)})" if per_tensor else "") +
                         (f", {'/'.join(dtypes)}" if dtypes else "")) if weights else "none")]
    if verification is None:
        rows.append(("fidelity", "not measured (add --verify)"))
    else:
        ref = verification.for_kernels("reference") or verification.outputs
        top1 = [o.top1_vs_float for o in ref if o.top1_vs_float is not None]
        sqnr = [o.sqnr_vs_float_db for o in ref if o.sqnr_vs_float_db is not None]
        rows += [("top-1 vs float", f"{100 * min(top1):.2f}% ({verification.samples} samples)" if top1 else "-"),
                 ("SQNR vs float", f"{min(sqnr):.1f} dB" if sqnr else "-"),
                 ("sim=TFLite exact", f"{100 * verification.exact_fraction:.2f}% (reference kernels)")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["summary"] + [f"  {k:<{width}}  {v}" for k, v in rows])


def main(argv) -> int:
    quiet_unless_asked()
    if len(argv) > 1:
        return _fail(f"unexpected arguments {argv[1:]}; see --help.")
    if not FLAGS.saved_model or not FLAGS.output:
        return _fail("--saved_model and --output are required.")
    import numpy as np

    import tfquant
    from tfquant.errors import TFQuantError

    try:
        options = config_overrides()
    except ValueError as e:
        return _fail(str(e))
    problem = _output_problem(FLAGS.output) or (FLAGS.plan_output and _output_problem(FLAGS.plan_output)) \
        or (FLAGS.saved_model_output and _output_problem(FLAGS.saved_model_output, directory=True)) \
        or (FLAGS.report and _output_problem(FLAGS.report, directory=True))
    if problem:                       # before any work: nothing half-done, nothing written
        return _fail(problem)
    try:
        model = _load_model_file(FLAGS.saved_model) if os.path.isfile(FLAGS.saved_model) else FLAGS.saved_model
        sim = tfquant.ptq(model, FLAGS.calibration, signature=FLAGS.signature,
                          saved_model_output=FLAGS.saved_model_output, **options)
        print(sim.report.summary())
        samples = None
        if FLAGS.calibration is not None:
            from tfquant.ptq import Calibration

            samples = Calibration.of(FLAGS.calibration, sim.graph.inputs[0], sim.config).take(64).astype(np.float32)
        needs_data = [f"--{n}" for n in ("report", "target_agreement", "verify") if getattr(FLAGS, n)]
        if needs_data and samples is None:
            return _fail(f"{', '.join(needs_data)} need(s) --calibration samples to run.")
        plan = tfquant.QuantPlan.load(FLAGS.plan) if FLAGS.plan else sim.plan.copy()
        if FLAGS.keep_float:
            print(f"kept in float: {plan.set_precision(FLAGS.keep_float, 'float')}")
        if FLAGS.target_agreement is not None:
            import tfquant.debug

            mp = tfquant.debug.mixed_precision(sim.with_plan(plan), samples, target_agreement=FLAGS.target_agreement)
            print(mp.summary())
            sim, plan = mp.result, mp.plan      # its biases are corrected for the mixed plan
        sim = sim.with_plan(plan)
        sim.to_tflite(FLAGS.output, int8_io=FLAGS.int8_io)
        if FLAGS.plan_output:
            plan.save(FLAGS.plan_output)
        if FLAGS.report:
            import tfquant.debug

            path = tfquant.debug.diagnose(sim, samples).write_report(FLAGS.report)
            print(f"wrote {path}")
        verification = None
        if FLAGS.verify:
            verification = sim.verify(samples, kernels=("reference",))
            print(verification.table())
        print(summary_table(FLAGS.output, tfquant.inspect(FLAGS.output), verification))
    except TFQuantError as e:
        return _fail(str(e))
    except OSError as e:             # disk full, permissions changed under us: the writes are atomic
        return _fail(f"could not write {e.filename or 'an output'}: {e.strerror or e}; nothing half-written was left.")
    return 0


def _main_interruptible(argv) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:                 # Ctrl-C: outputs are atomic, nothing half-written
        print("tfquant-convert: interrupted; nothing was written.", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point (tfquant-convert)."""
    show_flags_in_help(__name__)
    app.run(_main_interruptible)


if __name__ == "__main__":
    run()
