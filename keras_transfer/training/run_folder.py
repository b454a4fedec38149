"""What a training folder (`workdir`) holds, and whether a new run may use it.

A `workdir` of `train` (and of each stage of `fine_tune` / `train_from_folder`) keeps
`best.keras` (the best epoch so far), the crash backup `backup/` of
`keras.callbacks.BackupAndRestore`, and `checkpoint.json`, the record of the run that
wrote them:

- `data`: a fingerprint of the training and validation data (arrays: shapes, dtypes
  and a strided sample of the values with every label; a `tf.data.Dataset`: its
  element spec and length, as its contents cannot be read without running it),
- `model`: a fingerprint of the model (input and output shapes, the shape and dtype
  of every weight), `num_classes`,
- `monitor` and `best`: the monitored quantity and the best value `best.keras` has.

A new run into the folder compares its own description with the record and says what
it does:

- **resumed** (the same data and model, a crash backup): `BackupAndRestore` resumes;
- **trained again** (the same data and model, no backup): a new run whose
  `ModelCheckpoint` starts from the recorded best (`initial_value_threshold`), so
  `best.keras` is only replaced by a better epoch;
- **started fresh** (another data set, model, class count or monitor, or no record):
  the folder is moved aside to `<workdir>.stale` (`.stale2`, ...), nothing is loaded
  into the new model and nothing of the old run is lost;
- **refused** (a crash backup that cannot be read, e.g. truncated by a full disk):
  a `ValueError` naming the file and what to do, before any training.

Stage 1 of `fine_tune` (`head.weights.h5`) is reused only when the record of its
stage folder matches the data and model of the new run.
"""

import hashlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

from keras_transfer.utils import files

RECORD = "checkpoint.json"
_BACKUP_FILES = ("latest.weights.h5", "training_metadata.json")


def _digest(payload):
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _array_summary(array, sample=65536):
    array = np.asarray(array)
    flat = array.reshape(-1)
    step = max(1, flat.size // sample)
    values = np.ascontiguousarray(flat[::step])
    return [list(array.shape), str(array.dtype), hashlib.sha256(values.tobytes()).hexdigest()[:16]]


def data_fingerprint(*datasets):
    """A short hash identifying training (and validation) data.

    Arrays (`(x, y)`): shapes, dtypes, a strided sample of at most 65536 values of each
    array (a copy of other images differs); a `tf.data.Dataset`: its element spec and
    cardinality; `None`: none.

    Example:

    >>> import numpy as np
    >>> from keras_transfer.training import run_folder
    >>> x, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    >>> run_folder.data_fingerprint((x, y)) == run_folder.data_fingerprint((x.copy(), y))
    True
    >>> run_folder.data_fingerprint((x, y)) == run_folder.data_fingerprint((x + 1, y))
    False
    """
    parts = []
    for data in datasets:
        if data is None:
            parts.append(None)
        elif isinstance(data, tf.data.Dataset):
            parts.append(["dataset", str(data.element_spec), int(data.cardinality())])
        elif isinstance(data, (tuple, list)):
            parts.append([_array_summary(a) for a in data])
        else:
            parts.append(_array_summary(data))
    return _digest(parts)


def model_fingerprint(model):
    """A short hash of a model's structure: input and output shapes, the shape and dtype
    of each weight (not the values, which training changes; not the layer names, which
    Keras numbers per process)."""
    weights = [[list(w.shape), str(w.dtype)] for w in model.weights]
    return _digest([str(model.input_shape), str(model.output_shape), weights])


def describe(model, train_data, validation_data=None):
    """What `checkpoint.json` records of a run: `data`, `model`, `num_classes`."""
    return {
        "data": data_fingerprint(train_data, validation_data),
        "model": model_fingerprint(model),
        "num_classes": int(model.output.shape[-1]),
    }


def read_record(workdir):
    """The `checkpoint.json` of `workdir` as a dict; `None` without one, `{}` if unreadable."""
    path = os.path.join(workdir, RECORD)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def write_record(workdir, record):
    """Writes `checkpoint.json` atomically (on the chief only)."""
    with files.atomic_path(os.path.join(workdir, RECORD)) as staging:
        with open(staging, "w") as handle:
            json.dump(record, handle, indent=2)


def _differences(previous, description, monitor):
    """Why a recorded run is another one, as readable phrases (empty: the same)."""
    if previous is None:
        return [f"no {RECORD} records what trained it"]
    if not previous:
        return [f"its {RECORD} cannot be read"]
    why = []
    if previous.get("num_classes") != description["num_classes"]:
        why.append(f"classes {previous.get('num_classes')} -> {description['num_classes']}")
    elif previous.get("model") != description["model"]:
        why.append("another model (weight shapes differ)")
    if previous.get("data") != description["data"]:
        why.append("other data")
    if previous.get("monitor") != monitor:
        why.append(f"monitor {previous.get('monitor')!r} -> {monitor!r}")
    return why


def _backup_problem(path):
    """Why the backup file `path` cannot be read, or `None`."""
    if path.endswith(".json") or path.endswith(".json.bkp"):
        try:
            with open(path) as handle:
                int(json.load(handle)["epoch"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"not a training_metadata.json with an epoch ({type(error).__name__})"
        return None
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            list(handle.keys())
    except (OSError, ValueError) as error:
        return " ".join(str(error).split())[:160] or type(error).__name__
    return None


def check_backup(backup_dir, *, hint=None):
    """Refuses a crash backup that `BackupAndRestore` could not load.

    Keras keeps the previous backup (`*.bkp`) and falls back to it when the latest is
    damaged, so a backup is refused only when a file and its `.bkp` fallback are both
    unreadable (or the fallback is missing).

    Raises:
        ValueError: naming the damaged file and what to do.
    """
    if not os.path.isdir(backup_dir):
        return
    for name in _BACKUP_FILES:
        path = os.path.join(backup_dir, name)
        if not os.path.exists(path):
            continue
        problem = _backup_problem(path)
        if problem is None:
            continue
        fallback = path + ".bkp"
        if os.path.exists(fallback) and _backup_problem(fallback) is None:
            continue
        raise ValueError(
            f"The crash backup {path} is damaged ({problem}), so the interrupted run cannot "
            f"resume from it: delete the folder {backup_dir} to start that stage again"
            + (f", or {hint}" if hint else "")
            + "."
        )


def prepare_workdir(workdir, description, monitor, log=None):
    """Decides what a run does with `workdir` (see the module docstring), says it
    through `log`, records the run, and returns the best `monitor` value `best.keras`
    holds (`None` when there is none to beat)."""
    log = log or (lambda line: None)
    best_path = os.path.join(workdir, "best.keras")
    backup_dir = os.path.join(workdir, "backup")
    state = [p for p in (best_path, backup_dir) if os.path.exists(p)]
    previous = read_record(workdir)
    best = None
    if state:
        why = _differences(previous, description, monitor)
        if why:
            aside = stale_name(workdir)
            if files.is_chief():
                os.replace(workdir, aside)
            log(
                f"Started fresh in {workdir}: its checkpoints are from another run ({'; '.join(why)}), "
                f"so nothing of it is loaded; moved it to {aside}."
            )
        else:
            check_backup(backup_dir)
            best = previous.get("best")
            kept = (
                f"best.keras ({monitor} {best:.5g}) is replaced only by a better epoch"
                if best is not None
                else "best.keras is replaced by this run's best epoch"
            )
            if os.path.isdir(backup_dir):
                epoch = _backup_epoch(backup_dir)
                log(
                    f"Resumed the interrupted run in {workdir} (same data and model) from its crash "
                    f"backup{'' if epoch is None else f' after epoch {epoch}'}; {kept}."
                )
            else:
                log(f"Training again in {workdir} (same data and model, a finished run): {kept}.")
    if files.is_chief():
        os.makedirs(workdir, exist_ok=True)
    write_record(workdir, {**description, "monitor": monitor, "best": best})
    return best


def _backup_epoch(backup_dir):
    try:
        with open(os.path.join(backup_dir, "training_metadata.json")) as handle:
            return int(json.load(handle)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stale_name(path):
    """`path.stale`, or `path.stale2`, ... : the first that does not exist."""
    base = os.fspath(path).rstrip(os.sep)
    aside, suffix = base + ".stale", 1
    while os.path.exists(aside):
        suffix += 1
        aside = f"{base}.stale{suffix}"
    return aside


def stage_one_mismatch(head_path, stage_dir, model, train_data, validation_data=None):
    """Why the stage-1 weights `head_path` must not be reused for this run (other data,
    another model or class count, no record), or `None` when they may."""
    why = _differences(read_record(stage_dir), describe(model, train_data, validation_data), None)
    why = [w for w in why if not w.startswith("monitor")]
    return "; ".join(why) or None


class BestCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint(save_best_only=True)` that writes atomically and keeps the
    record: each improvement replaces `best.keras` in one rename (a crash never leaves
    half a file) and updates `best` in the folder's `checkpoint.json`.

    Args:
        filepath: str. The `.keras` file (in `workdir`).
        monitor: str. Defaults to `"val_loss"`.
        initial_value_threshold: float. The best value to beat (that of a previous run
            in the folder). Defaults to `None`.
    """

    def __init__(self, filepath, monitor="val_loss", initial_value_threshold=None, **kwargs):
        kwargs.setdefault("save_best_only", True)
        super().__init__(filepath, monitor=monitor, initial_value_threshold=initial_value_threshold, **kwargs)

    def _save_model(self, epoch, batch, logs):
        final, before = self.filepath, self.best
        try:
            with files.atomic_path(final) as staging:
                self.filepath = staging
                super()._save_model(epoch, batch, logs)
                if not os.path.exists(staging) and files.is_chief():
                    raise _NotSaved
        except _NotSaved:
            pass
        finally:
            self.filepath = final
        if self.best is not None and self.best != before:
            workdir = os.path.dirname(final)
            record = read_record(workdir) or {}
            write_record(workdir, {**record, "monitor": self.monitor, "best": float(self.best)})


class _NotSaved(Exception):
    """No improvement: the staging file was not written and nothing is renamed."""
