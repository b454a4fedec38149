"""The `keras-transfer demo` pipeline against the same pipeline in plain PyTorch,
and the demo's peak memory.

    python benchmarks/demo_pipeline.py [--smoke | --full] [--json PATH]

Both pipelines run once each, back to back, each in its own fresh process (so imports,
thread pools and peak memory are their own): first `python -m keras_transfer.cli demo
--output <tmp> --sources cnn --seeds 0 --budgets 1,5,10` (exactly what `keras-transfer
demo` runs with those options), then `benchmarks/torch_demo.py` with the same options
(the same data splits and few-shot samples, architectures, recipe, runs, table, plots;
see its docstring).

By default both sides run the demo's documented lighter selection `DEMO_OPTIONS`,
`--sources cnn --seeds 0 --budgets 1,5,10`: the CNN source (the MLP's runs are a small
part of the time), one seed, the three few-shot budgets (k=1, 5, 10 labelled examples per
class: 400 steps each), every method and both targets, each run exactly as in the full
demo (the same recipe, steps and learning rates). That keeps `run.py` within 45 minutes
on a slow 2-core machine; the full demo (both sources, seeds 0 and 1, and "all") costs
about 4x as much on each side and runs with `--full`. `--smoke` runs both in the demo's
smoke mode (`keras-transfer demo --smoke`: 1 source, 1 seed, k=1 and 5, 20 steps).

Figure 1, "demo pipeline vs plain PyTorch", is PyTorch seconds / toolkit seconds for
the part both sides do alike: **training and evaluation** (the source model, every
scratch / frozen / fine-tune run and its test accuracy, from the first model built to
the last accuracy), as each pipeline times it itself (`results.json` "timings" of the
demo and of `torch_demo.py`). Everything else is reported beside it, not hidden: each
process's wall time end to end (start-up, imports, data loading, training, plots,
export), the data, plots and export phases, and the end-to-end ratio. The export phases
are not equivalent: the toolkit writes a SavedModel with a serving signature and labels,
converts TFLite float32 and int8 (calibrated) and evaluates each file; the PyTorch side
only saves a `state_dict` and a traced TorchScript file and checks its accuracy. That is
why they are left out of the ratio.

Figure 2 is the peak resident memory of that same `keras-transfer demo` process
(`os.wait4`'s `ru_maxrss`), so the demo runs once for both figures.

The machine may be shared: the two processes run back to back and are exposed alike to
other load, but one run of each is one sample. Without PyTorch, figure 1 is skipped and
the demo still runs for figure 2.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402

SPEED = "demo pipeline: plain PyTorch / keras-transfer demo (training + evaluation)"
MEMORY = "peak RSS of keras-transfer demo"
MEMORY_GOAL_GB = 2.0
SPEED_GOAL = 1.2
# `keras-transfer demo` options both sides run with (see the docstring); `--full`: none.
DEMO_OPTIONS = ("--sources", "cnn", "--seeds", "0", "--budgets", "1,5,10")


def _run(command, label, log_path):
    """Runs `command`, streaming its output (prefixed) and keeping it in `log_path`;
    returns (wall seconds, peak RSS in bytes, return code)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command,
            cwd=common.ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for line in process.stdout:
            log.write(line)
            print(f"[{label}] {line}", end="", flush=True)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    return seconds, usage.ru_maxrss * 1024, process.returncode


# The per-run lines both pipelines print (`evaluation.learning_curves`' log line, and
# `torch_demo.py`'s copy of it): "  <target> [<backbone>] k=<k> seed <s> <method>: <acc>
# (<seconds>s)", and the source model's "source <backbone>: ... (<seconds>s)".
_RUN_LINE = re.compile(
    r"^\s+(?P<target>.+?) (?P<budget>k=\d+|all) seed (?P<seed>\d+) (?P<method>[\w-]+): "
    r"[\d.]+ \((?P<seconds>[\d.]+)s\)$"
)
_SOURCE_LINE = re.compile(r"^source (?P<backbone>\S+): .*\((?P<seconds>[\d.]+)s\)$")


def per_run_seconds(log_path):
    """{(target, budget, seed, method) or ("source", backbone): seconds} from a log."""
    runs = {}
    with open(log_path) as handle:
        for line in handle:
            line = line.rstrip("\n")
            match = _RUN_LINE.match(line)
            if match:
                key = tuple(match.group(k) for k in ("target", "budget", "seed", "method"))
                runs[key] = float(match.group("seconds"))
                continue
            match = _SOURCE_LINE.match(line)
            if match:
                runs[("source", match.group("backbone"))] = float(match.group("seconds"))
    return runs


def run_spread(keras_runs, torch_runs):
    """Per kind of run (the source model, each method): how many runs both logs have,
    each side's seconds per run (lowest-highest) and the PyTorch / toolkit ratio of the
    kind's total; `None` when the logs share no run."""
    kinds = {}
    for key, seconds in keras_runs.items():
        if key in torch_runs:
            kind = "source" if key[0] == "source" else key[3]
            kinds.setdefault(kind, []).append((seconds, torch_runs[key]))
    if not kinds:
        return None
    parts = []
    for kind, pairs in kinds.items():
        ours, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
        parts.append(
            f"{kind} ({len(pairs)} run{'s' if len(pairs) > 1 else ''}): "
            f"toolkit {min(ours):.1f}-{max(ours):.1f} s, "
            f"PyTorch {min(theirs):.1f}-{max(theirs):.1f} s, {sum(theirs) / sum(ours):.2f}x"
        )
    return "; ".join(parts)


def _table(path):
    with open(path) as handle:
        return handle.read().rstrip()


def _largest_gap(keras_results, torch_results):
    gaps = []
    for row, cells in keras_results.items():
        for cell, value in cells.items():
            other = torch_results.get(row, {}).get(cell)
            if other is not None:
                gaps.append((abs(value - other), f"{row} {cell}"))
    return max(gaps) if gaps else (float("nan"), "-")


def run(smoke, full=False):
    torch = common.import_torch()
    figures = []
    options = [] if (full or smoke) else list(DEMO_OPTIONS)
    mode = "--smoke" if smoke else " ".join(options) or "(full demo)"
    with tempfile.TemporaryDirectory() as tmp:
        keras_dir = os.path.join(tmp, "keras")
        command = [sys.executable, "-m", "keras_transfer.cli", "demo", "--output", keras_dir, *options]
        if smoke:
            command.append("--smoke")
        keras_wall, keras_rss, code = _run(command, "keras-transfer", os.path.join(tmp, "keras.log"))
        if code != 0:
            raise RuntimeError(f"keras-transfer demo failed with exit code {code}")
        with open(os.path.join(keras_dir, "demo", "results.json")) as handle:
            keras_summary = json.load(handle)
        keras_timings = keras_summary.get("timings", {})
        gb = keras_rss / 1e9
        figures.append(
            common.Figure(
                MEMORY,
                gb,
                MEMORY_GOAL_GB,
                unit=" GB",
                comparison="<=",
                detail=f"ru_maxrss of the `keras-transfer demo {mode}` process "
                f"({keras_rss / 2**30:.2f} GiB), the run timed in the figure above",
            )
        )

        if torch is None:
            figures.insert(0, common.skipped(SPEED, SPEED_GOAL, common.TORCH_MISSING))
            return figures
        torch_dir = os.path.join(tmp, "torch")
        torch_json = os.path.join(tmp, "torch.json")
        command = [
            sys.executable,
            os.path.join(HERE, "torch_demo.py"),
            "--output",
            torch_dir,
            "--json",
            torch_json,
            "--threads",
            "auto",
            *options,
        ]
        if smoke:
            command.append("--smoke")
        torch_wall, torch_rss, code = _run(command, "pytorch", os.path.join(tmp, "torch.log"))
        if code != 0:
            raise RuntimeError(f"torch_demo.py failed with exit code {code}")
        with open(torch_json) as handle:
            torch_summary = json.load(handle)
        torch_timings = torch_summary["timings"]

        print("\nkeras-transfer demo:\n" + _table(os.path.join(keras_dir, "demo", "results.txt")))
        print(
            "\nplain PyTorch:\n" + _table(os.path.join(torch_dir, "demo", "results.txt"))
            if os.path.exists(os.path.join(torch_dir, "demo", "results.txt"))
            else ""
        )
        gap, where = _largest_gap(keras_summary["results"], torch_summary["results"])
        spread = run_spread(
            per_run_seconds(os.path.join(tmp, "keras.log")), per_run_seconds(os.path.join(tmp, "torch.log"))
        )
        keras_train = keras_timings.get("train_eval")
        if keras_train is None:
            raise RuntimeError("The demo's results.json has no timings.train_eval")
        torch_train = torch_timings["train_eval"]

        def phases(timings):
            return ", ".join(
                f"{k} {timings[k]:.1f}s" for k in ("data", "train_eval", "plots", "export") if k in timings
            )

        figures.insert(
            0,
            common.Figure(
                SPEED,
                torch_train / keras_train,
                SPEED_GOAL,
                detail=(
                    f"training + evaluation: PyTorch {torch_train:.1f}s vs keras-transfer "
                    f"{keras_train:.1f}s, both sides `{mode}`. End to end (process wall, "
                    f"incl. start-up, imports, data, plots, export): PyTorch {torch_wall:.1f}s vs "
                    f"keras-transfer {keras_wall:.1f}s = {torch_wall / keras_wall:.2f}x. Phases: "
                    f"keras-transfer {phases(keras_timings)} (export = SavedModel + TFLite float32 "
                    f"and int8, each evaluated); PyTorch {phases(torch_timings)} (export = state_dict "
                    f"+ TorchScript only). PyTorch {torch.__version__}, float32, "
                    f"{torch_summary.get('threads')} thread(s) (the faster of 2 and 1 at start), "
                    f"peak RSS {torch_rss / 1e9:.2f} GB. Largest accuracy gap between the two tables: "
                    f"{gap:.3f} ({where}). Per run (training + its test accuracy, as each log "
                    f"prints it), by kind: {spread or 'the two logs share no run'}."
                ),
            ),
        )
    return figures


if __name__ == "__main__":
    common.main(
        run,
        __doc__.splitlines()[0],
        flags=[("full", "the whole default demo on both sides (about 4x the default selection)")],
    )
