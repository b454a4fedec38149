"""Runs every benchmark and prints each figure, its ratio and goal, then `N/M goals met`.

    python benchmarks/run.py            # the full suite (about 20 minutes on 2 cores)
    python benchmarks/run.py --smoke    # seconds per script: checks that they run
    python benchmarks/run.py --only mlp cnn

Each script runs in its own process (precision settings and peak memory stay its own)
and also runs alone: `python benchmarks/mlp.py`. The PyTorch figures need the optional
extra (`pip install -e ".[benchmarks]"`); without it they are reported as skipped and
count as not met.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

# In the order of the table of goals.
SCRIPTS = (
    "mlp",
    "cnn",
    "demo_pipeline",
    "feature_cache",
    "resnet50",
    "image_pipeline",
    "cli_startup",
    "scaling",
)


def run_script(name, smoke):
    """Runs `benchmarks/<name>.py`, streaming its output; returns its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "figures.json")
        command = [sys.executable, os.path.join(HERE, f"{name}.py"), "--json", out]
        if smoke:
            command.append("--smoke")
        start = time.time()
        process = subprocess.run(command, cwd=os.path.dirname(HERE))
        seconds = time.time() - start
        if process.returncode != 0 or not os.path.exists(out):
            return None, seconds
        with open(out) as handle:
            figures = [common.Figure(**f) for f in json.load(handle)["figures"]]
        return figures, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long runs; figures mean nothing")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    args = parser.parse_args(argv)
    info = common.machine()
    print("Machine: " + ", ".join(f"{key} {value}" for key, value in info.items()), flush=True)
    figures, failed = [], []
    for name in args.only or SCRIPTS:
        print(f"\n=== {name}.py{' --smoke' if args.smoke else ''} ===", flush=True)
        result, seconds = run_script(name, args.smoke)
        if result is None:
            failed.append(name)
            print(f"{name}.py FAILED after {seconds:.0f}s", flush=True)
        else:
            figures.extend(result)
            print(f"({name}.py: {seconds:.0f}s)", flush=True)
    print("\n=== Summary" + (" (smoke run: the figures mean nothing)" if args.smoke else "") + " ===")
    for figure in figures:
        print(figure.line())
    for name in failed:
        print(f"{name}.py failed: its figures are missing")
    met = sum(f.met for f in figures)
    total = len(figures) + len(failed)
    print(f"{met}/{total} goals met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
