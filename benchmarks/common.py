"""What every benchmark script shares: figures, timing, the machine, and the command line.

A benchmark script defines `run(smoke) -> list[Figure]` and ends with
`common.main(run)`. Every ratio it reports is measured side by side in the same process
and run (the two contenders alternate), so a busy machine slows both alike. `--smoke`
shrinks the work to seconds: the figures are then printed but mean nothing.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as `python benchmarks/x.py` from a source checkout
    sys.path.insert(0, ROOT)


@dataclasses.dataclass
class Figure:
    """One benchmark figure: the measured `value` against its `goal`.

    `comparison` is `">="` (a speed-up or a fraction, higher is better), `"<="`
    (a cost such as memory) or `"<"` (a strict bound, such as a start-up time). `detail`
    says what was measured on each side. A figure that could not be measured has
    `value=None` and says why in `skipped`.
    """

    name: str
    value: float | None
    goal: float
    unit: str = "x"
    comparison: str = ">="
    detail: str = ""
    skipped: str = ""

    @property
    def met(self):
        if self.value is None:
            return False
        if self.comparison == ">=":
            return self.value >= self.goal
        if self.comparison == "<":
            return self.value < self.goal
        return self.value <= self.goal

    def line(self):
        goal = f"goal {self.comparison} {self.goal:g}{self.unit}"
        if self.value is None:
            return f"{self.name}: skipped ({self.skipped}); {goal}"
        verdict = "met" if self.met else "NOT met"
        text = f"{self.name}: {self.value:.2f}{self.unit} ({verdict}; {goal})"
        return text + (f"\n    {self.detail}" if self.detail else "")


def skipped(name, goal, reason, unit="x", comparison=">="):
    return Figure(name, None, goal, unit=unit, comparison=comparison, skipped=reason)


def import_torch():
    """`torch`, or `None` when the optional benchmark extra is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


TORCH_MISSING = 'PyTorch is not installed: pip install -e ".[benchmarks]"'


def alternate(contenders, repeats=3):
    """Times each callable in `contenders` (a dict) `repeats` times, alternating
    between them, and returns the best seconds of each: side by side in one run."""
    best = {name: float("inf") for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def cpu_name():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine():
    """The machine and the versions a result depends on."""
    import keras
    import tensorflow as tf

    from keras_transfer import performance

    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "amx": performance.has_amx(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }
    torch = import_torch()
    info["torch"] = torch.__version__ if torch is not None else None
    return info


def main(run, description=None):
    """The command line of a benchmark script: `[--smoke] [--json PATH]`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run; figures mean nothing")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    start = time.time()
    figures = run(smoke=args.smoke)
    for figure in figures:
        print(figure.line(), flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {"figures": [dataclasses.asdict(f) for f in figures], "seconds": time.time() - start},
                handle,
                indent=2,
            )
    return figures
