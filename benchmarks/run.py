"""Runs every benchmark and prints each figure, its ratio and goal, then `N/M goals met`.

    python benchmarks/run.py            # the full suite (under 45 minutes on 2 slow cores)
    python benchmarks/run.py --smoke    # seconds per script: checks that they run
    python benchmarks/run.py --only mlp cnn

Each script runs in its own process (precision settings and peak memory stay its own)
and also runs alone: `python benchmarks/mlp.py`. The PyTorch figures need the optional
extra (`pip install -e ".[benchmarks]"`); without it they are reported as skipped and
count as not met.

A real (not `--smoke`) run writes its figures and the machine to
`benchmarks/results/<kind>.json` (`common.machine()["kind"]`, e.g. `amd-avx512-f25`,
`intel-amx`): one file per kind of machine, committed. A partial run (`--only`) replaces
only the figures of the scripts it ran and keeps the others, each with its date.
"""

import argparse
import dataclasses
import datetime
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
    "import_cost",
    "scaling",
    "onednn",
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


def results_path(info):
    return os.path.join(common.RESULTS_DIR, f"{info['kind']}.json")


def save_results(path, info, by_script):
    """Merges `{script: (figures, seconds)}` into the results file at `path` (written
    atomically): the scripts run now replace their earlier figures, the others stay."""
    previous = {}
    if os.path.exists(path):
        with open(path) as handle:
            previous = json.load(handle).get("scripts", {})
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    scripts = dict(previous)
    for name, (figures, seconds) in by_script.items():
        scripts[name] = {
            "date": today,
            "seconds": round(seconds, 1),
            "machine": info,
            "figures": [dict(dataclasses.asdict(f), met=f.met) for f in figures],
        }
    ordered = {name: scripts[name] for name in SCRIPTS if name in scripts}
    ordered.update({name: value for name, value in scripts.items() if name not in ordered})
    common.write_json(path, {"machine": info, "updated": today, "scripts": ordered})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="seconds-long runs; figures mean nothing")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these scripts")
    args = parser.parse_args(argv)
    info = common.machine()
    print("Machine: " + common.describe_machine(info), flush=True)
    print(
        "Versions: "
        + ", ".join(f"{k} {info[k]}" for k in ("python", "tensorflow", "keras", "numpy", "torch"))
    )
    figures, failed, by_script = [], [], {}
    for name in args.only or SCRIPTS:
        print(f"\n=== {name}.py{' --smoke' if args.smoke else ''} ===", flush=True)
        result, seconds = run_script(name, args.smoke)
        if result is None:
            failed.append(name)
            print(f"{name}.py FAILED after {seconds:.0f}s", flush=True)
        else:
            figures.extend(result)
            by_script[name] = (result, seconds)
            print(f"({name}.py: {seconds:.0f}s)", flush=True)
    print("\n=== Summary" + (" (smoke run: the figures mean nothing)" if args.smoke else "") + " ===")
    for figure in figures:
        print(figure.line())
    for name in failed:
        print(f"{name}.py failed: its figures are missing")
    print("Seconds per script: " + ", ".join(f"{n} {s:.0f}" for n, (_, s) in by_script.items()))
    if by_script and not args.smoke:
        path = results_path(info)
        save_results(path, info, by_script)
        print(f"Figures and machine written to {os.path.relpath(path, os.path.dirname(HERE))}")
    met = sum(f.met for f in figures)
    total = len(figures) + len(failed)
    print(f"{met}/{total} goals met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
