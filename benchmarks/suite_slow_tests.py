"""The test suites marked `slow` (real models, the tutorials' long notebooks, whole-network
coverage), run from the benchmarks since the default test run leaves them out.

    python -m benchmarks.suite_slow_tests                        # every slow test
    python -m benchmarks.suite_slow_tests tests/test_tutorials.py
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(quick: bool, paths: tuple[str, ...] = ("tests",)) -> tuple[dict, str]:
    """Run `pytest -m slow` on `paths`; returns (counts, a markdown section). A --quick
    benchmark run takes the tutorials only."""
    if quick:
        paths = ("tests/test_tutorials.py",)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "slow", "-q", "-p", "no:cacheprovider", *paths],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.time() - started
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|error|errors|skipped|deselected)", tail)}
    failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    lines = ["## Slow test suites", "", f"`pytest -m slow {' '.join(paths)}`: {tail} ({seconds:.0f} s)."]
    if failed:
        lines += ["", "Failures:", ""] + [f"- `{line}`" for line in failed]
    print(f"[benchmarks] slow tests: {tail} in {seconds:.0f} s", flush=True)
    return counts, "\n".join(lines) + "\n"


def main() -> int:
    counts, text = run(False, tuple(sys.argv[1:]) or ("tests",))
    print(text)
    return 0 if counts.get("passed", 0) and not (counts.get("failed") or counts.get("error") or counts.get("errors")) else 1


if __name__ == "__main__":
    sys.exit(main())
