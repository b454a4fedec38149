"""Atomic writes of model artefacts, once per `tf.distribute` cluster.

`atomic_path` is how the package writes a file or folder that something else may read
(`model.keras`, a SavedModel version, a `.tflite` file, a `tflite/<version>/` folder):
the writer fills a staging path next to the final one, which is renamed into place only
when the write has succeeded, so a reader never sees a partial artefact and a failed
write leaves nothing behind.

In a multi-worker run (`TF_CONFIG` set, e.g. for `tf.distribute.MultiWorkerMirroredStrategy`)
every worker must still run the save, because saving may involve collective ops, but
only the chief's copy is kept: `is_chief` tells which process that is, and on the other
workers `atomic_path` hands out a throw-away temporary location that is deleted
afterwards (the pattern of the Keras and TensorFlow multi-worker guides).

Pure Python: TensorFlow is not imported.
"""

import contextlib
import json
import os
import shutil
import tempfile
import uuid


def is_chief():
    """Whether this process is the one of its `tf.distribute` cluster that writes files.

    Read from the `TF_CONFIG` environment variable, with the rule of
    `tf.distribute`: the task of type `"chief"` is the chief, or, in a cluster without
    a `"chief"` job, the `"worker"` of index 0. An `"evaluator"` runs on its own,
    outside the training cluster, so it counts as a chief too (as for TensorFlow).
    Without `TF_CONFIG` (or without a `"task"` in it) the process runs alone and is
    the chief.

    Returns:
        bool.

    Raises:
        ValueError: `TF_CONFIG` is not a JSON object, or its `"task"` has no string
            `"type"` or no integer `"index"`.

    Example:

    >>> import json, os
    >>> from keras_transfer.utils import files
    >>> previous = os.environ.pop("TF_CONFIG", None)
    >>> files.is_chief()
    True
    >>> cluster = {"worker": ["host1:2222", "host2:2222"]}
    >>> try:
    ...     os.environ["TF_CONFIG"] = json.dumps(
    ...         {"cluster": cluster, "task": {"type": "worker", "index": 1}})
    ...     second_worker = files.is_chief()
    ... finally:
    ...     _ = os.environ.pop("TF_CONFIG")
    ...     if previous is not None:
    ...         os.environ["TF_CONFIG"] = previous
    >>> second_worker
    False
    """
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return True
    try:
        config = json.loads(raw)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object. Received: TF_CONFIG={raw!r}")
    task = config.get("task")
    if not task:
        return True
    task_type = task.get("type") if isinstance(task, dict) else None
    index = task.get("index", 0) if isinstance(task, dict) else None
    if not isinstance(task_type, str) or isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(
            'The "task" of TF_CONFIG must have a string "type" and an integer "index". '
            f"Received: TF_CONFIG={raw!r}"
        )
    if task_type in ("chief", "evaluator"):
        return True
    cluster = config.get("cluster") or {}
    return task_type == "worker" and index == 0 and "chief" not in cluster


@contextlib.contextmanager
def atomic_path(final_path, *, is_dir=False):
    """Yields a staging path to write `final_path` into; renames it into place on success.

    The staging path is in the same folder as `final_path` (so the rename stays on
    one file system and is atomic), under a unique hidden name that keeps the final
    name's extensions, which some writers check: `.model.tmp-<uuid>.keras` for
    `model.keras`, `.1.tmp-<uuid>` for a folder `1`. Missing parent folders are
    created.

    - When the block succeeds, the staging path is renamed to `final_path` with
      `os.replace`: an existing file is replaced atomically. For a folder
      (`is_dir=True`) whose `final_path` exists already, each entry of the staging
      folder is moved into it with `os.replace` instead (replacing entries of the
      same name, keeping the others), so that folder is updated entry by entry, not
      as a whole.
    - When the block raises (any exception, `KeyboardInterrupt` included), the
      staging file or folder is removed, as are the parent folders this call
      created if they are empty, and the exception propagates: `final_path` is as
      it was before.
    - On a worker that is not the chief of its `tf.distribute` cluster (see
      `is_chief`), the staging path is in a new temporary folder instead, deleted
      when the block ends, whether it succeeds or not: the worker runs the save
      (which may involve collective ops) but writes nothing at `final_path`; only
      the chief's copy is kept.

    Args:
        final_path: str or path-like. The file or folder to write.
        is_dir: bool. Whether the artefact is a folder. If `True`, the staging folder
            is created (empty, with the umask's mode); a file is left for the writer
            to create. Defaults to `False`.

    Yields:
        str. The staging path to write to.

    Raises:
        ValueError: `final_path` is empty or names no file (e.g. ends with a
            separator).

    Example:

    >>> import os, tempfile
    >>> from keras_transfer.utils import files
    >>> folder = tempfile.mkdtemp()
    >>> path = os.path.join(folder, "labels.txt")
    >>> with files.atomic_path(path) as staging:
    ...     with open(staging, "w") as handle:
    ...         _ = handle.write("cat\\ndog\\n")
    ...     os.path.exists(path)
    False
    >>> os.listdir(folder), open(path).read().split()
    (['labels.txt'], ['cat', 'dog'])
    >>> try:
    ...     with files.atomic_path(path) as staging:
    ...         with open(staging, "w") as handle:
    ...             _ = handle.write("half a fi")
    ...         raise OSError("disk full")
    ... except OSError:
    ...     pass
    >>> os.listdir(folder), open(path).read().split()
    (['labels.txt'], ['cat', 'dog'])
    """
    final_path = os.fspath(final_path)
    name = os.path.basename(final_path)
    if not name or name in (".", ".."):
        raise ValueError(f"final_path must name a file or folder. Received: final_path={final_path!r}")
    if not is_chief():
        scratch = tempfile.mkdtemp(prefix="keras_transfer_not_chief_")
        try:
            staging = os.path.join(scratch, name)
            if is_dir:
                os.mkdir(staging)
            yield staging
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return

    parent = os.path.dirname(os.path.abspath(final_path))
    created = _missing_folders(parent)
    os.makedirs(parent, exist_ok=True)
    stem, dot, extensions = name.partition(".")
    if not stem:  # a hidden name: no extension to keep
        stem, dot, extensions = name, "", ""
    staging = os.path.join(parent, f".{stem}.tmp-{uuid.uuid4().hex}{dot}{extensions}")
    try:
        if is_dir:
            os.mkdir(staging)
        yield staging
        if is_dir and os.path.isdir(final_path):
            for entry in os.listdir(staging):
                os.replace(os.path.join(staging, entry), os.path.join(final_path, entry))
            os.rmdir(staging)
        else:
            os.replace(staging, final_path)
    except BaseException:
        _remove(staging)
        for folder in created:  # deepest first
            try:
                os.rmdir(folder)
            except OSError:
                break  # not empty (something else writes there) or gone
        raise


def _missing_folders(folder):
    """The folders of `folder`'s path that do not exist yet, deepest first."""
    missing = []
    while folder and not os.path.exists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _remove(path):
    """Removes a file or a folder tree if it exists; never raises."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass
