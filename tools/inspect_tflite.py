"""tfquant-inspect: print what a TFLite flatbuffer really holds.

    tfquant-inspect model.tflite           # table: ops, tensor types, scales, float ops
    tfquant-inspect model.tflite --json    # the same as JSON
"""
from __future__ import annotations

import sys

from absl import app, flags

from tools import quiet_unless_asked, show_flags_in_help

FLAGS = flags.FLAGS
flags.DEFINE_bool("json", False, "Print the report as JSON instead of a table.")


def main(argv: list[str]) -> int:
    quiet_unless_asked()
    from tfquant.errors import ModelFileError
    from tfquant.export import inspect

    if len(argv) != 2:
        print("usage: tfquant-inspect MODEL.tflite [--json]", file=sys.stderr)
        return 2
    try:
        report = inspect(argv[1])
    except ModelFileError as e:
        print(f"tfquant-inspect: {e}", file=sys.stderr)
        return 1
    print(report.to_json() if FLAGS.json else report.table())
    return 0


def run() -> None:
    show_flags_in_help(__name__)
    app.run(main)


if __name__ == "__main__":
    run()
