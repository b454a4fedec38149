"""Layer-by-layer weight transfer from a source model to a target model, with a report."""

import dataclasses
import re
import warnings

import keras
import numpy as np


def weighted_layers(model):
    """Returns `{name: layer}` for every layer with weights, looking inside nested models.

    Nested `keras.Model`s (e.g. a backbone inside a classifier) are opened; any other
    layer is one unit, whatever sub-layers it has. A name used twice (two nested models
    each with a `dense`) is qualified with the path of its model: `backbone/dense`.

    Example:

    >>> import keras_transfer
    >>> model = keras_transfer.build_classifier("mnist_mlp", 10, weights=None)
    >>> list(keras_transfer.weighted_layers(model))
    ['fc1', 'predictions']
    """
    found = []

    def visit(container, prefix):
        for layer in container.layers:
            if isinstance(layer, keras.Model):
                visit(layer, f"{prefix}{layer.name}/")
            elif layer.weights:
                found.append((f"{prefix}{layer.name}", layer))

    visit(model, "")
    counts = {}
    for path, layer in found:
        counts[layer.name] = counts.get(layer.name, 0) + 1
    return {(layer.name if counts[layer.name] == 1 else path): layer for path, layer in found}


@dataclasses.dataclass
class TransferRow:
    """One target layer's outcome: `copied`, `skipped` (with why) or `excluded`."""

    target: str
    source: str
    status: str
    params: int
    reason: str = ""


@dataclasses.dataclass
class TransferReport:
    """What `transfer_weights` copied and what it did not.

    Attributes:
        rows: list of `TransferRow`, one per weighted target layer, in model order.
        unused_source: list of str. Source layers with weights that no target layer took.
        unmatched_exclude: list of str. `exclude` patterns that matched no target layer
            (a typo excludes nothing).

    `print(report)` shows a table; `report.copied` / `report.skipped` list layer names;
    `report.params_copied` counts the parameters copied.
    """

    rows: list
    unused_source: list
    unmatched_exclude: list = dataclasses.field(default_factory=list)

    @property
    def copied(self):
        return [row.target for row in self.rows if row.status == "copied"]

    @property
    def skipped(self):
        return [row.target for row in self.rows if row.status != "copied"]

    @property
    def params_copied(self):
        return sum(row.params for row in self.rows if row.status == "copied")

    @property
    def params_total(self):
        return sum(row.params for row in self.rows)

    def summary(self):
        return (
            f"{len(self.copied)}/{len(self.rows)} layers copied, "
            f"{self.params_copied:,}/{self.params_total:,} target parameters "
            f"({self.params_copied / max(self.params_total, 1):.1%})"
        )

    def __str__(self):
        header = ("target layer", "source layer", "status", "params", "reason")
        lines = [header] + [
            (r.target, r.source or "-", r.status, f"{r.params:,}", r.reason) for r in self.rows
        ]
        widths = [max(len(line[i]) for line in lines) for i in range(4)]
        text = [
            "  ".join(cell.ljust(width) for cell, width in zip(line[:4], widths)) + "  " + line[4]
            for line in lines
        ]
        text.insert(1, "  ".join("-" * width for width in widths) + "  " + "-" * 6)
        if self.unused_source:
            text.append(f"unused source layers: {', '.join(self.unused_source)}")
        if self.unmatched_exclude:
            text.append(f"exclude patterns that matched no layer: {', '.join(self.unmatched_exclude)}")
        text.append(self.summary())
        return "\n".join(line.rstrip() for line in text)


@dataclasses.dataclass
class LayerPair:
    """A weighted target layer and the source layer it pairs with (`pair_layers`).

    Attributes:
        target: str. The target layer's name (as `weighted_layers` spells it).
        target_layer: `keras.layers.Layer`.
        source: str. The source layer's name, or `""` when there is none.
        source_layer: `keras.layers.Layer` or `None`.
        status: str. `"paired"` (equal weight shapes: `transfer_weights` copies it),
            `"excluded"`, `"missing"` (no source layer) or `"mismatch"` (shapes differ).
        reason: str. Why a layer is not paired.
    """

    target: str
    target_layer: object
    source: str
    source_layer: object
    status: str
    reason: str = ""

    @property
    def source_shapes(self):
        return [tuple(w.shape) for w in self.source_layer.weights] if self.source_layer is not None else []

    @property
    def target_shapes(self):
        return [tuple(w.shape) for w in self.target_layer.weights]


def pair_layers(source, target, *, name_map=None, exclude=None, match="name"):
    """Pairs each weighted layer of `target` with a layer of `source`, as
    `transfer_weights` does (which copies the `"paired"` ones), without changing either.

    The one place that decides which target weights "come from" the source: weight
    transfer copies them, and the forgetting regularisers (`L2SP`, `EWC`) anchor them.
    Arguments as `transfer_weights`'s.

    Returns:
        list of `LayerPair`, one per weighted target layer, in model order; an excluded
        layer still names the source layer it would have paired with.

    Example:

    >>> import keras_transfer
    >>> from keras_transfer.weight_transfer import pair_layers
    >>> source = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    >>> target = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    >>> [(p.target, p.status) for p in pair_layers(source, target)]
    [('conv1', 'paired'), ('conv2', 'paired'), ('fc1', 'paired'), ('predictions', 'mismatch')]
    """
    if match not in ("name", "order"):
        raise ValueError(f"match must be 'name' or 'order'. Received: match={match!r}")
    patterns = [exclude] if isinstance(exclude, str) else list(exclude or [])
    source_layers = weighted_layers(source)
    target_layers = weighted_layers(target)

    if match == "order":
        names = dict(zip(target_layers, source_layers))
    else:
        renamed = {t: s for s, t in (name_map or {}).items()}
        unknown = [s for s in renamed.values() if s not in source_layers]
        unknown += [t for t in renamed if t not in target_layers]
        if unknown:
            raise ValueError(
                f"name_map names layers that do not exist: {unknown}. Received: name_map={name_map!r}"
            )
        names = {t: renamed.get(t, t) for t in target_layers}

    pairs = []
    for target_name, layer in target_layers.items():
        source_name = names.get(target_name)
        source_layer = source_layers.get(source_name)
        if any(re.fullmatch(p, target_name) for p in patterns):
            pairs.append(
                LayerPair(target_name, layer, source_name or "", source_layer, "excluded", "excluded")
            )
            continue
        if source_layer is None:
            pairs.append(LayerPair(target_name, layer, "", None, "missing", "not in source"))
            continue
        pair = LayerPair(target_name, layer, source_name, source_layer, "paired")
        if pair.source_shapes != pair.target_shapes:
            pair.status = "mismatch"
            pair.reason = f"shape mismatch: {pair.source_shapes} -> {pair.target_shapes}"
        pairs.append(pair)
    return pairs


def transfer_weights(
    source, target, *, name_map=None, exclude=None, match="name", strict=False, verbose=False
):
    """Copies weights from `source` to `target` layer by layer and reports what happened.

    Layers are paired by name (inside nested models too), or in order with
    `match="order"` for models whose layer names were generated. A pair whose weight
    shapes all agree is copied with `set_weights`; anything else is skipped with the
    reason (typically a head with another class count). Follows timm's rules: match by
    name, copy equal shapes, report what was missing rather than silently succeeding.

    Args:
        source: `keras.Model`. Where the weights come from.
        target: `keras.Model`. Where they go (modified in place).
        name_map: dict. `{source_layer_name: target_layer_name}` for renamed layers.
        exclude: str, list of str. Regular expressions (`re.fullmatch`) of target layer
            names never to copy, e.g. `"predictions"`.
        match: str. `"name"` (default) or `"order"`: pair the i-th weighted layer of
            each model.
        strict: bool. Raise instead of skipping when a shape differs, a target layer
            has no source, a source layer is left unused or an `exclude` pattern
            matches no layer. Every pair is checked before any weight is copied, so
            on failure `target` is unchanged. Defaults to `False`.
        verbose: bool. Print the report. Defaults to `False`.

    Returns:
        `TransferReport`.

    An `exclude` pattern that matches no target layer is listed in the report's
    `unmatched_exclude` and warned about (`UserWarning`).

    Raises:
        ValueError: in strict mode, naming the layers and both shapes (or the unused
            source layers, or the `exclude` patterns that matched nothing); nothing
            has been copied then.

    Example:

    >>> import keras_transfer
    >>> source = keras_transfer.build_classifier("mnist_cnn", 10, weights=None)
    >>> target = keras_transfer.build_classifier("mnist_cnn", 5, weights=None)
    >>> report = keras_transfer.transfer_weights(source, target)
    >>> report.copied
    ['conv1', 'conv2', 'fc1']
    >>> report.skipped
    ['predictions']
    """
    pairs = pair_layers(source, target, name_map=name_map, exclude=exclude, match=match)
    patterns = [exclude] if isinstance(exclude, str) else list(exclude or [])
    unmatched = [p for p in patterns if not any(re.fullmatch(p, pair.target) for pair in pairs)]
    rows, problems, copies = [], [], []
    for pair in pairs:
        params = sum(int(np.prod(w.shape)) for w in pair.target_layer.weights)
        if pair.status == "excluded":
            rows.append(TransferRow(pair.target, "", "excluded", params, "excluded"))
            continue
        if pair.source_layer is None:
            rows.append(TransferRow(pair.target, "", "skipped", params, "not in source"))
            problems.append(f"target layer {pair.target!r} has no source layer")
            continue
        if pair.status != "paired":
            rows.append(TransferRow(pair.target, pair.source, "skipped", params, pair.reason))
            problems.append(
                f"source layer {pair.source!r} has weight shapes {pair.source_shapes} but "
                f"target layer {pair.target!r} has {pair.target_shapes}"
            )
            continue
        copies.append(pair)
        rows.append(TransferRow(pair.target, pair.source, "copied", params))

    used = {pair.source for pair in pairs if pair.source}
    source_layers = weighted_layers(source)
    unused = [name for name in source_layers if name not in used]
    if strict:
        # Every pair is checked before anything is copied: a failure leaves `target` as it was.
        problems += [f"source layer {name!r} was not used" for name in unused]
        problems += [f"exclude pattern {p!r} matched no target layer" for p in unmatched]
        if problems:
            raise ValueError(
                "Strict weight transfer failed (nothing was copied):\n  " + "\n  ".join(problems)
            )
    if unmatched:
        warnings.warn(
            f"exclude patterns matched no target layer, so they exclude nothing: {unmatched}. "
            f"Target layers: {[pair.target for pair in pairs]}. Received: exclude={exclude!r}",
            stacklevel=2,
        )
    for pair in copies:
        pair.target_layer.set_weights(pair.source_layer.get_weights())
    report = TransferReport(rows=rows, unused_source=unused, unmatched_exclude=unmatched)
    if verbose:
        print(report)
    return report
