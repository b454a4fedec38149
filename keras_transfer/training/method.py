"""The one extension point of training: `TransferMethod`.

A transfer method is what makes a training run a particular transfer strategy: which
layers it prepares (frozen, wrapped, injected), which model is actually fitted and on
what data (the frozen backbone's cached features, a distiller around teacher and
student, ...), which callbacks join the run, how the run is scheduled (two stages), and
which model is saved and exported at the end. `train(..., method=)`, `fine_tune`,
`train_from_folder(method=)` and `keras-transfer train --method NAME[:key=value,...]`
all take one, or a list that composes.

A new method is one module (a subclass of `TransferMethod` with `name` and `summary`,
the hooks it needs, `get_config`, and `@register_method` above it) plus its line in
`BUILTIN_MODULES`. It must pass `tests/testing.py::run_method_contract`.

Example:

>>> from keras_transfer.training import method
>>> {"feature_cache", "fine_tune"} <= {name for name, _ in method.list_methods()}
True
>>> method.get_method("fine_tune:epochs=3,learning_rate=1e-4")
FineTune(epochs=3, learning_rate=0.0001)
"""

import dataclasses
import importlib

import keras

_REGISTRY = {}


def register_method(cls):
    """Class decorator: lists the method under `cls.name` and registers it with Keras
    serialisation (package `keras_transfer`), so its config survives a `.keras` file
    and a run folder's `run.json`."""
    if not (isinstance(cls, type) and issubclass(cls, TransferMethod)):
        raise TypeError(f"register_method takes a TransferMethod subclass. Received: {cls!r}")
    if not cls.name or not isinstance(cls.name, str):
        raise ValueError(f"{cls.__name__} needs a `name` (a string) to be registered.")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(
            f"A transfer method named {cls.name!r} is already registered: {_REGISTRY[cls.name]}."
        )
    _REGISTRY[cls.name] = cls
    return keras.saving.register_keras_serializable(package="keras_transfer", name=cls.__name__)(cls)


# The registry of built-in methods: the module of each (importing it registers its
# methods). A new method is one module plus one line here.
BUILTIN_MODULES = (
    "keras_transfer.training.feature_cache",
    "keras_transfer.training.fine_tuning",
    "keras_transfer.parameter_efficient.bias_only",
    "keras_transfer.distillation.distill",
    "keras_transfer.compression.pruning",
    "keras_transfer.parameter_efficient.lora",
    "keras_transfer.parameter_efficient.adapters",
    "keras_transfer.layerwise",
    "keras_transfer.forgetting",
    "keras_transfer.adaptation",
)


def _load_builtins():
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def list_methods():
    """`[(name, one-line summary)]` of every registered method, sorted by name."""
    _load_builtins()
    return sorted((name, cls.summary) for name, cls in _REGISTRY.items())


def _parse_value(text):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_method(text):
    """`"name"` or `"name:key=value,key=value"` -> `(name, {key: value})`; values are
    read as bool, None, int, float or else str."""
    name, _, arguments = text.strip().partition(":")
    kwargs = {}
    for item in filter(None, (part.strip() for part in arguments.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Method arguments are key=value pairs separated by commas. Received: {text!r}")
        kwargs[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return name.strip(), kwargs


def get_method(method):
    """A `TransferMethod` from a method, a registered name (`"fine_tune:epochs=3"`), a
    config dict (`{"name": ..., "config": {...}}`) or a list of these (`Compose`)."""
    _load_builtins()
    if isinstance(method, TransferMethod):
        return method
    if isinstance(method, (list, tuple)):
        methods = [get_method(m) for m in method]
        return methods[0] if len(methods) == 1 else Compose(methods)
    if isinstance(method, dict):
        name, kwargs = method.get("name"), dict(method.get("config") or {})
    elif isinstance(method, str):
        name, kwargs = parse_method(method)
    else:
        raise ValueError(f"method must be a TransferMethod, a name, a config or a list. Received: {method!r}")
    if name == Compose.name:
        return Compose.from_config(kwargs)
    if name not in _REGISTRY:
        raise ValueError(f"Unknown transfer method {name!r}. Known: {', '.join(sorted(_REGISTRY))}.")
    cls = _REGISTRY[name]
    try:
        return cls.from_config(kwargs)
    except TypeError as error:
        raise ValueError(f"Method {name!r} does not take these arguments: {error}") from None


def method_config(method):
    """`{"name": ..., "config": {...}}`: what `get_method` rebuilds the method from."""
    return {"name": method.name, "config": method.get_config()}


@dataclasses.dataclass
class FitContext:
    """What `train` hands a method's `fit_setup`: the user's model and data as given."""

    model: keras.Model
    train_data: object
    validation_data: object
    batch_size: int
    seed: int | None
    augment: object
    verbose: int


@dataclasses.dataclass
class FitSetup:
    """The model `fit` actually runs on and its pipelines. With `wrap_callbacks`, every
    callback (checkpoints, early stopping, backups) still sees the user's model."""

    model: keras.Model
    train: object
    validation: object = None
    wrap_callbacks: bool = True


class TransferMethod:
    """Base class of every transfer method. Each hook has a default that does nothing.

    `model = method.build(model)` comes first (a method that changes the model's
    structure, e.g. inserts adapters, returns a new model; `train` refuses a model
    that `build` would change). `train` calls, in order: `prepare(model)` (freeze,
    wrap or inject layers), then
    `fit_setup(context)` (the fitted model and data, or `None` for `model` on the data as
    given), `optimizer(model, learning_rate)` (what it compiles with, or `None` for
    Adam), `callbacks(model)` (extra Keras callbacks), `penalties(model)` (extra loss
    terms), and after `fit`,
    `finalize(model)` (the model to save and export). `run(model, data, ...)` is the whole
    run: one `train` call by default; a method that schedules stages (`FineTune`)
    overrides it. `trainable_weights(model)` names the weights the method trains: the
    contract test checks that exactly those change.

    Subclasses set `name` and `summary`, take their settings as keyword arguments and
    return them from `get_config`.
    """

    name = None
    summary = ""

    def build(self, model):
        """The model to train: a method that changes the model's structure returns a new
        one (default: `model`). Call `model = method.build(model)` before `train`."""
        return model

    def prepare(self, model):
        """Changes `model` in place before training (default: nothing)."""

    def fit_setup(self, context):
        """`FitSetup` to fit instead of `context.model` on its data, or `None`."""
        return None

    def callbacks(self, model):
        """Extra Keras callbacks for the run (default: none)."""
        return []

    def optimizer(self, model, learning_rate):
        """The optimizer `train` compiles `model` with, for the run's `learning_rate` (a
        float or a schedule), or `None` for Adam (default)."""
        return None

    def penalties(self, model):
        """Extra terms of the training loss: callables of no arguments, each returning a
        scalar from the model's weights (e.g. a pull toward the source weights), added
        to the loss of every step (`losses.WithPenalties`). Default: none."""
        return []

    def finalize(self, model):
        """The model to save and export after training (default: `model` itself)."""
        return model

    def trainable_weights(self, model):
        """The weights this method trains (default: `model.trainable_weights`)."""
        return list(model.trainable_weights)

    def run(self, model, train_data, validation_data=None, **train_kwargs):
        """Trains `model` with this method: `train(model, ..., method=self)`. Returns
        the history."""
        from keras_transfer.training.fit import train

        return train(model, train_data, validation_data, method=self, **train_kwargs)

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = None


def _overrides(method, hook):
    return getattr(type(method), hook) is not getattr(TransferMethod, hook)


@keras.saving.register_keras_serializable(package="keras_transfer")
class Compose(TransferMethod):
    """Several methods in one run: each one's `build`, `prepare`, `callbacks` and
    `finalize` in order. At most one may schedule the run (`run`, e.g. `FineTune`), at
    most one may choose what is fitted (`fit_setup`, e.g. `FeatureCache`) and at most one
    may choose the optimizer (`optimizer`, e.g. `DiscriminativeLR`): two of any cannot be
    combined, and saying so is the constructor's job."""

    name = "compose"
    summary = "several methods in one run"

    def __init__(self, methods):
        self.methods = [get_method(m) for m in methods]
        for hook, what in (
            ("run", "schedules the run"),
            ("fit_setup", "chooses the fitted model"),
            ("optimizer", "chooses the optimizer"),
        ):
            owners = [m.name for m in self.methods if _overrides(m, hook)]
            if len(owners) > 1:
                raise ValueError(f"Methods {owners} cannot be combined: each {what}. Use one of them.")

    def build(self, model):
        for method in self.methods:
            model = method.build(model)
        return model

    def prepare(self, model):
        for method in self.methods:
            method.prepare(model)

    def fit_setup(self, context):
        for method in self.methods:
            setup = method.fit_setup(context)
            if setup is not None:
                return setup
        return None

    def optimizer(self, model, learning_rate):
        return next(
            (o for o in (m.optimizer(model, learning_rate) for m in self.methods) if o is not None), None
        )

    def callbacks(self, model):
        return [callback for method in self.methods for callback in method.callbacks(model)]

    def penalties(self, model):
        return [penalty for method in self.methods for penalty in method.penalties(model)]

    def finalize(self, model):
        for method in self.methods:
            model = method.finalize(model)
        return model

    def trainable_weights(self, model):
        ids = None
        for method in self.methods:
            weights = {id(w): w for w in method.trainable_weights(model)}
            ids = weights if ids is None else {k: v for k, v in ids.items() if k in weights}
        return list((ids or {}).values())

    def run(self, model, train_data, validation_data=None, **train_kwargs):
        scheduler = next((m for m in self.methods if _overrides(m, "run")), None)
        if scheduler is None:
            return super().run(model, train_data, validation_data, **train_kwargs)
        rest = [m for m in self.methods if m is not scheduler]
        if rest:
            train_kwargs["method"] = rest[0] if len(rest) == 1 else Compose(rest)
        return scheduler.run(model, train_data, validation_data, **train_kwargs)

    def get_config(self):
        return {"methods": [method_config(m) for m in self.methods]}
