"""The benchmark runner works end to end (`--smoke`: seconds, figures mean nothing).

Benchmarks are never timed tests: this only checks that every script runs and reports
every figure of the issue's table, with its goal, and the final `N/M goals met` line.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_runner_smoke_reports_every_figure():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "run.py"), "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.split("=== Summary", 1)[1]
    lines = [line for line in summary.splitlines() if "goal " in line]
    assert len(lines) == 10, summary
    for words in ("MLP", "textbook", "PyTorch", "CNN", "demo", "feature cache", "matmul peak",
                  "bf16", "image-folder", "peak RSS", "keras-transfer --help"):
        assert words.lower() in summary.lower(), words
    final = result.stdout.strip().splitlines()[-1]
    met, total = map(int, re.fullmatch(r"(\d+)/(\d+) goals met", final).groups())
    assert total == 10 and 0 <= met <= total
