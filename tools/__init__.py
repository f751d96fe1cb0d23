"""tfquant's command-line programs (absl): tfquant-convert, tfquant-inspect."""
import os
import sys
import warnings

from absl import flags, logging

# TensorFlow's C++ start-up lines (CUDA probing, oneDNN) stay out of the user's terminal; --verbosity
# brings the Python-side logs back (quiet_unless_asked).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def show_flags_in_help(module_name: str) -> None:
    """Make `--help` list this module's flags when it runs as a console script: absl's --help
    shows the key flags of the module named by sys.argv[0], which for an installed entry point
    is the wrapper script, not the module that defines the flags."""
    for flag in flags.FLAGS.get_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def quiet_unless_asked() -> None:
    """Keep TensorFlow's and the converter's log lines (absl WARNINGs such as the
    from_concrete_functions deprecation, the converter's UserWarnings) out of the output unless
    --verbosity was given."""
    if flags.FLAGS["verbosity"].present:
        return
    logging.set_verbosity(logging.ERROR)
    warnings.filterwarnings("ignore", module="tensorflow")
    # TF 2.21's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL: import it with stderr muted.
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
