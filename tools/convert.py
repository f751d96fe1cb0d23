"""tfquant-convert: a SavedModel or a Keras model file to an int8 TFLite flatbuffer with tfquant's
PTQ pipeline.

    tfquant-convert --saved_model DIR --output model.tflite \\
        [--calibration images_dir_or.npy] [--per_tensor] [--steps cle,bias_absorption,bias_correction]
    tfquant-convert --saved_model model.keras --output model.tflite --input_range=-1,1   # data-free

Everything it does is `tfquant.ptq(...)`; it parses flags, prints the pipeline's report and what
the flatbuffer holds, and turns a tfquant error into a one-line message and exit status 1.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

from tools import quiet_unless_asked, show_flags_in_help

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel directory to quantize, or a Keras model file "
                    "(.keras, or .h5 that Keras 3 can load).")
flags.DEFINE_string("signature", "serving_default", "Signature of the SavedModel to quantize.")
flags.DEFINE_string("output", None, "Where to write the int8 .tflite flatbuffer.")
flags.DEFINE_string("calibration", None, "Folder of images, or a .npy array [N, ...] of preprocessed "
                    "samples. Without it the pipeline is data-free (needs --input_range).")
flags.DEFINE_boolean("per_tensor", False, "Per-tensor weights (default: per output channel).")
flags.DEFINE_list("steps", None, "PTQ steps, comma separated, from: cle, bias_absorption, "
                  "bias_correction, adaround; 'none' for none. Default: the standard pipeline.")
flags.DEFINE_enum("ranges", None, ["minmax", "mse"], "Range estimator for weights and activations.")
flags.DEFINE_enum("activation_ranges", None, ["minmax", "mse", "percentile", "bn"],
                  "Activation range estimator (overrides --ranges).")
flags.DEFINE_enum("weight_ranges", None, ["minmax", "mse"], "Weight range estimator (overrides --ranges).")
flags.DEFINE_list("input_range", None, "min,max of the model input (required without calibration data).")
flags.DEFINE_list("image_size", None, "height,width that calibration images from a folder are resized to "
                  "(needed when the model's input size is not fixed).")
flags.DEFINE_float("image_mean", 127.5, "Images from a folder become (pixel - mean) / std.")
flags.DEFINE_float("image_std", 127.5, "Images from a folder become (pixel - mean) / std.")
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
                 "adaround_iterations"):
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
        report = tfquant.inspect(FLAGS.output)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report.op_counts().items()))
        print(f"wrote {FLAGS.output}: {report.size_bytes} bytes; ops: {counts}; float ops: {len(report.float_ops)}")
        if FLAGS.verify:
            print(sim.verify(samples, kernels=("reference",)).table())
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
