"""tfquant's command-line programs (absl): tfquant-convert, tfquant-inspect."""
import sys

from absl import flags


def show_flags_in_help(module_name: str) -> None:
    """Make `--help` list this module's flags when it runs as a console script: absl's --help
    shows the key flags of the module named by sys.argv[0], which for an installed entry point
    is the wrapper script, not the module that defines the flags."""
    for flag in flags.FLAGS.get_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
