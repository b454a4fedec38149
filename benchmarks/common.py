"""What every benchmark script shares: figures, timing, fresh-process rounds, the
machine, the measured matmul peak, and the command line.

A benchmark script defines `run(smoke) -> list[Figure]` and ends with
`common.main(run)`. Training contenders run in fresh processes (`fresh_rounds`): the
script calls itself as `python benchmarks/<script>.py --contender NAME --options PATH
--json OUT`, and `common.main(run, worker=work)` hands that to `work(name, options)`.
TensorFlow's and PyTorch's thread pools slow each other down in one process, so each
round of each contender gets a process of its own, the contenders alternate
(A B C A B C ...) so a busy machine slows them alike, and each figure reports the best,
median and worst of the rounds. `--smoke` shrinks the work to seconds: the figures are
then printed but mean nothing.
"""

import argparse
import dataclasses
import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as `python benchmarks/x.py` from a source checkout
    sys.path.insert(0, ROOT)
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


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
        value = f"{self.value:.2f}" if self.value == 0 or abs(self.value) >= 0.01 else f"{self.value:.1e}"
        text = f"{self.name}: {value}{self.unit} ({verdict}; {goal})"
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


# Fresh-process rounds.


@dataclasses.dataclass
class Spread:
    """The rounds of one contender: `values` (one per round: higher is better, e.g.
    samples/s, or lower when `lower_is_better`, e.g. seconds) and `last`, the whole
    result dict of the last round (loss, accuracy...)."""

    values: list
    last: dict = dataclasses.field(default_factory=dict)
    lower_is_better: bool = False
    rounds: list = dataclasses.field(default_factory=list)  # every round's result dict

    @property
    def best(self):
        return min(self.values) if self.lower_is_better else max(self.values)

    @property
    def median(self):
        return statistics.median(self.values)

    @property
    def worst(self):
        return max(self.values) if self.lower_is_better else min(self.values)

    def text(self, unit="samples/s"):
        """`"best 61.2k, median 58.0k, worst 55.1k samples/s over 5 rounds"`."""
        rounds = len(self.values)
        if rounds == 1:
            return f"{_short(self.best)} {unit} (1 round)"
        return (
            f"best {_short(self.best)}, median {_short(self.median)}, worst {_short(self.worst)} "
            f"{unit} over {rounds} rounds"
        )


def _short(value):
    return f"{value / 1e3:.1f}k" if value >= 1e4 else f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def fresh_rounds(
    script,
    contenders,
    rounds,
    options=None,
    *,
    key="samples_per_second",
    measure_peak=False,
    timeout=1800,
    envs=None,
):
    """Runs each contender of `script` in a new process, `rounds` times, alternating.

    Round r runs `python <script> --contender NAME --options <json of options> --json
    OUT` for every name of `contenders` in turn (A B C A B C ...); the script's
    `common.main(run, worker=work)` calls `work(NAME, options)`, which does one round
    (its own warm-up, then the timed work) and returns a JSON-able dict with `key`.

    Args:
        script: str. Path of the benchmark script.
        contenders: iterable of str. Contender names `work` knows.
        rounds: int. Rounds per contender.
        options: dict, JSON-able. Passed to every `work` call (data path, epochs...).
        key: str. The entry of each result that is compared (higher is better).
        measure_peak: bool. Before each round, one more pass of `matmul_peak_flops`
            in this process (no contender running), so the peak is a best of N too.
        timeout: float. Seconds one process may take.
        envs: dict. `{name: {VARIABLE: value}}`: environment variables of one
            contender's processes (e.g. `TF_ENABLE_ONEDNN_OPTS`).

    Returns:
        `{name: Spread}`.

    Example:

    >>> spreads = fresh_rounds("benchmarks/mlp.py", ["toolkit", "torch1"], 3, {"epochs": 1})
    ...                                                              # doctest: +SKIP
    >>> spreads["toolkit"].best / spreads["torch1"].best  # doctest: +SKIP
    """
    contenders = list(contenders)
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1. Received: rounds={rounds}")
    results = {name: [] for name in contenders}
    env = dict(
        os.environ,
        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        options_path = os.path.join(tmp, "options.json")
        with open(options_path, "w") as handle:
            json.dump(options or {}, handle)
        for r in range(rounds):
            if measure_peak:
                matmul_peak_flops(refresh=True)
            for name in contenders:
                out = os.path.join(tmp, f"{name}-{r}.json")
                command = [
                    sys.executable,
                    script,
                    "--contender",
                    name,
                    "--options",
                    options_path,
                    "--json",
                    out,
                ]
                start = time.perf_counter()
                process = subprocess.run(
                    command,
                    cwd=ROOT,
                    env=dict(env, **(envs or {}).get(name, {})),
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
                if process.returncode != 0 or not os.path.exists(out):
                    raise RuntimeError(
                        f"{os.path.basename(script)} --contender {name} failed (exit code "
                        f"{process.returncode}): {process.stderr[-3000:]}"
                    )
                with open(out) as handle:
                    result = json.load(handle)
                results[name].append(result)
                print(
                    f"  round {r + 1}/{rounds} {name}: {result[key]:,.1f} {key} "
                    f"({time.perf_counter() - start:.0f}s in a fresh process)",
                    flush=True,
                )
    return {name: Spread([r[key] for r in runs], runs[-1], rounds=runs) for name, runs in results.items()}


# The machine.

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")


def _cpuinfo():
    fields = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_name():
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def machine_kind(vendor, flags, family=None):
    """A short label for the kind of machine: `"intel-amx"`, `"intel-avx512"`,
    `"amd-avx512-f25"`, `"amd-avx2-f23"`, `"x86-avx2"`, ... (results are kept per kind).

    An AMD label ends with the CPU family of `/proc/cpuinfo` (`cpu family`): AMD
    EPYCs of one flag set differ in their cores (family 25, Zen 3/4, runs 512-bit
    instructions as two 256-bit halves; `benchmarks/results/amd-avx512.json`, of a
    machine whose family was not recorded, measured more than twice the fp32 matmul
    peak on its 2 cores). Intel's family is 6 for every core of these years: not in
    its label.

    Example:

    >>> machine_kind("AuthenticAMD", {"avx2", "avx512f"}, family=25)
    'amd-avx512-f25'
    """
    if "amx_bf16" in flags:
        return "intel-amx"
    simd = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else None
    prefix = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(vendor)
    if simd is None:
        return prefix or platform.machine().lower() or "unknown"
    suffix = f"-f{family}" if prefix == "amd" and family is not None else ""
    return f"{prefix or 'x86'}-{simd}{suffix}"


def _family(cpu):
    try:
        return int(cpu.get("cpu family", ""))
    except ValueError:
        return None


def machine():
    """The machine and the versions a result depends on."""
    # keras_transfer before TensorFlow: its oneDNN default then holds here and in children.
    importlib.import_module("keras_transfer")
    import keras
    import tensorflow as tf

    from keras_transfer import performance

    cpu = _cpuinfo()
    flags = set(cpu.get("flags", cpu.get("Features", "")).split())
    info = {
        "kind": machine_kind(cpu.get("vendor_id"), flags, _family(cpu)),
        "cpu": cpu_name(),
        "vendor": cpu.get("vendor_id"),
        "cpu_family": _family(cpu),
        "cpu_model": cpu.get("model"),
        "cores": os.cpu_count(),
        "flags": [flag for flag in FLAGS if flag in flags],
        "amx": performance.has_amx(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "onednn": performance._onednn_enabled(),
        "onednn_choice": performance.onednn_choice(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }
    torch = import_torch()
    info["torch"] = torch.__version__ if torch is not None else None
    return info


def describe_machine(info):
    return (
        f"{info['kind']}: {info['cpu']}, {info['cores']} cores, flags {' '.join(info['flags']) or '-'}, "
        f"oneDNN {'on' if info['onednn'] else 'off'} (TF_ENABLE_ONEDNN_OPTS="
        f"{info['TF_ENABLE_ONEDNN_OPTS'] or 'unset'})"
    )


# The measured matmul peak.


def matmul_peak_timer(sizes, dtype, repeats=3):
    """A function measuring the best GFLOP/s of `tf.linalg.matmul` over square `sizes`
    (each size called `repeats` times: short calls, several tries so one finds the cores
    free); warmed up. Call it several times (alternating with other work) and keep the
    best."""
    import tensorflow as tf

    operands = {}
    for n in sizes:
        a = tf.random.uniform((n, n), dtype=tf.float32)
        operands[n] = (tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype))
    matmul = tf.function(tf.linalg.matmul)
    for a, b in operands.values():
        matmul(a, b).numpy()  # warm up

    def one_pass():
        best = 0.0
        for n, (a, b) in operands.items():
            for _ in range(repeats):
                start = time.perf_counter()
                matmul(a, b).numpy()
                best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
        return best

    return one_pass


_PEAK = {}


def matmul_peak_flops(refresh=False, sizes=(1024, 2048)):
    """The machine's measured fp32 matmul peak in FLOP/s: the best pass over the `sizes`
    so far in this process (the first call measures 3 passes, a few seconds).

    The denominator of "fraction of the measured fp32 peak": what TensorFlow's own
    matmul kernel reaches on this machine, not a datasheet figure. On a shared machine
    one pass can land on a busy moment, so `fresh_rounds(..., measure_peak=True)` calls
    this with `refresh=True` before every round (one more pass, under a second) and the
    best pass counts, as the best round does.

    Example:

    >>> peak = matmul_peak_flops()  # doctest: +SKIP
    >>> peak / 1e9  # GFLOP/s  # doctest: +SKIP
    """
    if "pass" not in _PEAK:
        import tensorflow as tf

        _PEAK["pass"] = matmul_peak_timer(sizes, tf.float32)
        _PEAK["best"] = max(_PEAK["pass"]() for _ in range(3)) * 1e9
    elif refresh:
        _PEAK["best"] = max(_PEAK["best"], _PEAK["pass"]() * 1e9)
    return _PEAK["best"]


def peak_fraction(samples_per_second, flops_per_sample, peak):
    """'0.12 of the measured fp32 peak (166 GFLOP/s)': training FLOP/s over the peak."""
    fraction = samples_per_second * flops_per_sample / peak
    return f"{fraction:.2f} of the measured fp32 peak ({peak / 1e9:.0f} GFLOP/s)"


# Writing results.


def write_json(path, payload):
    """Writes `payload` as JSON to `path` atomically (a temporary file, then a rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=2)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def main(run, description=None, worker=None, flags=()):
    """The command line of a benchmark script: `[--smoke] [--json PATH]`, and, for
    scripts with a `worker`, the fresh-process entry `--contender NAME --options PATH
    --json OUT` that `fresh_rounds` calls (writes `worker(NAME, options)` to OUT).
    `flags`: `(name, help)` pairs of further on/off options, passed to `run` by name."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="seconds-long run; figures mean nothing")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    for flag, text in flags:
        parser.add_argument(f"--{flag.replace('_', '-')}", dest=flag, action="store_true", help=text)
    if worker is not None:
        parser.add_argument("--contender", help="(internal) run one round of this contender")
        parser.add_argument("--options", help="(internal) JSON file of the round's options")
    args = parser.parse_args()
    if worker is not None and args.contender:
        options = {}
        if args.options:
            with open(args.options) as handle:
                options = json.load(handle)
        result = worker(args.contender, options)
        if args.json:
            write_json(args.json, result)
        else:
            print(json.dumps(result))
        return result
    start = time.time()
    figures = run(smoke=args.smoke, **{flag: getattr(args, flag) for flag, _ in flags})
    for figure in figures:
        print(figure.line(), flush=True)
    if args.json:
        write_json(
            args.json,
            {"figures": [dataclasses.asdict(f) for f in figures], "seconds": time.time() - start},
        )
    return figures
