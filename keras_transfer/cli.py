"""The `keras-transfer` command."""

import argparse
import contextlib
import os
import sys
import tempfile

# Nothing heavy here: `--help` answers before TensorFlow is imported.
import keras_transfer
from keras_transfer.utils import choices

VERBOSE_ENV = "KERAS_TRANSFER_VERBOSE"


def _budgets(text):
    values = []
    for item in text.split(","):
        item = item.strip()
        if item == "all":
            values.append("all")
        elif item.isdigit() and int(item) > 0:
            values.append(int(item))
        else:
            raise argparse.ArgumentTypeError(f"budgets are positive integers or 'all': {item!r}")
    return tuple(values)


def _seeds(text):
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds are integers separated by commas: {text!r}") from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-transfer",
        description="Transfer learning for Keras 3 / TensorFlow.",
        epilog=f"TensorFlow's own log lines are hidden unless --verbose or {VERBOSE_ENV}=1.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"show TensorFlow's log lines and warnings (or set {VERBOSE_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # `--verbose` works after the command too; SUPPRESS keeps the global value otherwise.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show TensorFlow's log lines and warnings",
    )
    _add_parser = commands.add_parser

    def add_parser(*args, **kwargs):
        return _add_parser(*args, parents=[common], **kwargs)

    commands.add_parser = add_parser

    demo = commands.add_parser(
        "demo",
        help="few-shot transfer: MNIST 0-4 -> MNIST 5-9 and -> UCI digits (offline)",
        description=(
            "Trains a CNN (and an MLP) on MNIST digits 0-4, then compares training from "
            "scratch, feature extraction and fine-tuning on MNIST 5-9 and on the UCI digits "
            "with 1, 5, 10 labels per class and all data. Prints the table, writes plots "
            "and results to OUTPUT/demo/ and exports the best target models as SavedModels."
        ),
    )
    demo.add_argument(
        "table",
        nargs="?",
        choices=("budgets", "methods", "forgetting", "adaptation"),
        default="budgets",
        help="budgets (default): scratch / frozen / fine-tune over label budgets; methods: every "
        "transfer method (bias-only, LoRA, adapters, pruning, distillation, ...) from one CNN "
        "source at 10 labels per class and the whole pool, with trained parameters, time and "
        "exported size (OUTPUT/demo/methods.json); forgetting: naive fine-tuning against L2-SP, "
        "EWC, LwF and replay on MNIST 0-4 -> 5-9, with the source task re-measured after transfer "
        "(OUTPUT/demo/forgetting.json); adaptation: source only vs DANN vs CORAL "
        "from labelled MNIST to the unlabelled UCI digits and an MNIST-M-style domain, over "
        "--seeds (default 0,1,2) (OUTPUT/demo/adaptation.json)",
    )
    demo.add_argument("--output", default="saved_models", help="output folder (default: saved_models)")
    demo.add_argument("--sources", default="cnn,mlp", help="source models: cnn, mlp (default: cnn,mlp)")
    demo.add_argument(
        "--budgets",
        type=_budgets,
        default=None,
        help="labels per class, comma-separated, 'all' for the whole pool (default: 1,5,10,all; "
        "10,all for the methods table)",
    )
    demo.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help="seeds to average over (default: 0,1; 0,1,2 for adaptation)",
    )
    demo.add_argument(
        "--recipe",
        choices=choices.DEMO_RECIPES,
        default="default",
        help="training recipe: the tuned default (augmentation, label smoothing, "
        "cosine decay) or the plain Keras-guide one (Adam 1e-3, no "
        "augmentation), for a side-by-side comparison (default: default)",
    )
    demo.add_argument(
        "--steps",
        type=int,
        default=None,
        help="the recipe's min_steps: optimizer steps of a few-shot run (default: 400)",
    )
    demo.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs over the whole pool for the source and the 'all' budget (default: 10 and 20)",
    )
    demo.add_argument("--smoke", action="store_true", help="a seconds-long run for tests")

    commands.add_parser("backbones", help="list the backbone registry names")
    commands.add_parser("methods", help="list the transfer methods, each with a one-line summary")
    _add_train(commands)
    _add_evaluate(commands)
    _add_export(commands)
    _add_predict(commands)
    _add_lr_find(commands)
    return parser


def _kinds(text):
    kinds = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    bad = [k for k in kinds if k not in choices.TFLITE_KINDS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"TFLite kinds are {', '.join(choices.TFLITE_KINDS)} or none: {text!r}"
        )
    return kinds


def _image_size(text):
    try:
        values = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"image size is N or HxW, e.g. 224 or 160x200: {text!r}")
    return values[0] if len(values) == 1 else values


def _add_train(commands):
    train = commands.add_parser(
        "train",
        help="fine-tune a backbone on a class-per-folder image directory, evaluate, export",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Trains an image classifier on DATA/<class name>/<images> with the recipe for\n"
            "its backbone (--recipe): for an ImageNet backbone, the new head on the frozen\n"
            "backbone, then the top of the backbone unfrozen (BatchNorm frozen) at a lower\n"
            "learning rate; for a small source model (mnist_cnn, your own .keras), every\n"
            "layer at once. Cosine decay, label smoothing, and at least 400 steps per stage\n"
            "on a small folder. Corrupt images are skipped and listed. Early stopping keeps\n"
            "the best weights; checkpoints and crash backups\n"
            "go to OUTPUT/NAME/train/, so rerunning the same command resumes. Then it\n"
            "writes model.keras, a classification report, confusion matrix and learning\n"
            "curves there, and exports OUTPUT/NAME/<version>/ for TF Serving.\n\n"
            "example:\n"
            "  keras-transfer train --data flowers/ --backbone resnet50 --weights imagenet\n"
            "  keras-transfer train --data digits/ --backbone mnist_cnn --weights none --tflite float32,int8"
        ),
    )
    train.add_argument("--data", required=True, metavar="DIR", help="class-per-folder image directory")
    train.add_argument(
        "--backbone",
        default="resnet50",
        help="registry name (see `keras-transfer backbones`), hub:<handle>, your own "
        "source model as a .keras file, or a SavedModel folder (default: resnet50)",
    )
    train.add_argument(
        "--weights",
        default="imagenet",
        metavar="imagenet|none|PATH",
        help="registry backbone weights: imagenet, none (random, trained in one stage "
        "for --epochs) or a .weights.h5 file for that backbone (default: imagenet)",
    )
    train.add_argument("--name", help="model name under OUTPUT (default: the data folder's name)")
    train.add_argument("--output", default="saved_models", help="output folder (default: saved_models)")
    train.add_argument(
        "--test-data", metavar="DIR", help="separate test folder to report on (default: the validation split)"
    )
    train.add_argument("--image-size", type=_image_size, help="N or HxW (default: the backbone's size)")
    train.add_argument(
        "--validation-split", type=float, default=0.2, help="held out per class (default: 0.2)"
    )
    train.add_argument("--batch-size", type=int, default=32, help="(default: 32)")
    train.add_argument(
        "--recipe",
        choices=("auto", *choices.RECIPE_NAMES),
        default="auto",
        help="training recipe: small (a source model trained here: every layer "
        "at 3e-3 in one stage), pretrained (an ImageNet backbone: the head at "
        "1e-3, then the top 25%% at 1e-5), auto (by the backbone; default). "
        "Both: cosine decay, label smoothing 0.1, at least 400 steps per stage",
    )
    train.add_argument("--head-epochs", type=int, help="stage 1 epochs, 0 to skip (default: the recipe's)")
    train.add_argument(
        "--epochs", type=int, help="stage 2 epochs, or all epochs with --weights none (default: the recipe's)"
    )
    train.add_argument("--head-lr", type=float, help="stage 1 peak learning rate (default: the recipe's)")
    train.add_argument(
        "--lr",
        type=float,
        help="stage 2 peak learning rate, or the rate with --weights none (default: the recipe's)",
    )
    train.add_argument(
        "--unfreeze-fraction",
        type=float,
        help="share of backbone layers unfrozen in stage 2, from the top (default: the recipe's)",
    )
    train.add_argument(
        "--min-steps",
        type=int,
        help="optimizer steps each stage runs at least: a small folder repeats "
        "(0: an epoch is one pass; default: the recipe's, 400)",
    )
    train.add_argument(
        "--patience", type=int, default=3, help="early stopping patience, 0 for none (default: 3)"
    )
    train.add_argument(
        "--no-augment",
        action="store_true",
        help="no augmentation (colour: flip/rotation/zoom/contrast; one channel: shift/rotation/zoom)",
    )
    train.add_argument(
        "--tflite",
        type=_kinds,
        default=(),
        metavar="KINDS",
        help="also export TFLite: float32, int8 or float32,int8 (default: none)",
    )
    train.add_argument("--seed", type=int, default=0, help="(default: 0)")
    train.add_argument(
        "--strategy",
        choices=("mirrored", "multi-worker"),
        default=None,
        help="tf.distribute: mirrored (this machine's devices) or multi-worker (the machines of "
        "TF_CONFIG: run the same command on each; see the README). Default: one device",
    )
    train.add_argument(
        "--method",
        action="append",
        default=[],
        metavar="NAME[:KEY=VALUE,...]",
        help="a transfer method to train with (repeat to combine; `keras-transfer methods` "
        "lists them), e.g. fine_tune:epochs=3,learning_rate=1e-4. The recipe flags above "
        "set the fine_tune method's fields (default: fine_tune with the recipe)",
    )
    train.add_argument(
        "--precision",
        default="float32",
        choices=choices.PRECISIONS,
        help="numeric precision: onednn_bfloat16 or mixed_bfloat16 on CPUs with AMX, "
        "mixed_float16/mixed_bfloat16 on GPUs (default: float32)",
    )


def _add_evaluate(commands):
    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy, classification report and confusion matrix on an image folder",
        description="Evaluates a trained model (model.keras or its training folder) on "
        "DATA/<class name>/<images>; writes report.txt, metrics.json and "
        "confusion.png to --output (default: an evaluation/ folder beside the model).",
    )
    evaluate.add_argument("model", help="model.keras or a training folder (OUTPUT/NAME/train)")
    evaluate.add_argument("--data", required=True, metavar="DIR", help="class-per-folder image directory")
    evaluate.add_argument("--output", help="folder for the report and plot")


def _add_export(commands):
    export = commands.add_parser(
        "export",
        help="export a trained model for TF Serving and TFLite (float32, int8)",
        description="Exports a trained model to OUTPUT/NAME/<version>/ (SavedModel: "
        "signatures serving_default on encoded image bytes, serve on float "
        "pixels, serve_uint8) and TFLite files to OUTPUT/NAME/tflite/<version>/. "
        "int8 needs images to calibrate on: --data; with --data, the accuracy of "
        "the Keras model and of each TFLite file on those images is printed.",
    )
    export.add_argument("model", help="model.keras or a training folder (OUTPUT/NAME/train)")
    export.add_argument("--name", help="model name under OUTPUT (default: the training folder's name)")
    export.add_argument("--output", default="saved_models", help="output folder (default: saved_models)")
    export.add_argument(
        "--tflite",
        type=_kinds,
        default=None,
        metavar="KINDS",
        help="float32, int8 (needs --data), float32,int8 or none "
        "(default: float32, plus int8 when --data is given)",
    )
    export.add_argument(
        "--data", metavar="DIR", help="labelled image folder: int8 calibration and the accuracy check"
    )
    export.add_argument("--version", type=int, help="version number (default: the next one)")


def _add_predict(commands):
    predict = commands.add_parser(
        "predict",
        help="top classes of image files",
        description="Prints the top classes of each image file, using a model.keras (or "
        "training folder), a SavedModel version folder, or a .tflite file. A folder "
        "stands for every image file under it (recursively).",
    )
    predict.add_argument("model", help="model.keras, training folder, SavedModel folder or .tflite")
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, GIF, BMP) or folders of them")
    predict.add_argument("--top", type=int, default=3, help="classes per image (default: 3)")


def _add_lr_find(commands):
    lr_find = commands.add_parser(
        "lr-find",
        help="learning-rate finder: loss against an exponential ramp of the rate, a suggestion",
        description="Builds the model `keras-transfer train` would train on DATA (same "
        "backbone, weights, image size, split and method), runs an exponential ramp of "
        "the learning rate on the training split, prints the suggested rate (steepest "
        "descent of the smoothed loss, as fastai) beside the recipe's, and writes the plot.",
    )
    lr_find.add_argument("--data", required=True, metavar="DIR", help="class-per-folder image directory")
    lr_find.add_argument("--backbone", default="resnet50", help="as for train (default: resnet50)")
    lr_find.add_argument(
        "--weights", default="imagenet", metavar="imagenet|none|PATH", help="as for train (default: imagenet)"
    )
    lr_find.add_argument("--image-size", type=_image_size, help="N or HxW (default: the backbone's size)")
    lr_find.add_argument("--validation-split", type=float, default=0.2, help="held out (default: 0.2)")
    lr_find.add_argument("--batch-size", type=int, help="(default: the recipe's, 32)")
    lr_find.add_argument("--recipe", choices=("auto", *choices.RECIPE_NAMES), default="auto")
    lr_find.add_argument(
        "--method", action="append", default=[], metavar="NAME[:KEY=VALUE,...]", help="as for train"
    )
    lr_find.add_argument("--steps", type=int, default=100, help="steps of the ramp (default: 100)")
    lr_find.add_argument("--min-lr", type=float, default=1e-7, help="(default: 1e-7)")
    lr_find.add_argument("--max-lr", type=float, default=10.0, help="(default: 10)")
    lr_find.add_argument("--plot", default="lr_find.png", help="plot file (default: lr_find.png)")
    lr_find.add_argument("--seed", type=int, default=0, help="(default: 0)")


def _verbose(args):
    return bool(getattr(args, "verbose", False)) or os.environ.get(VERBOSE_ENV, "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
        "off",
    )


def _quiet_tensorflow():
    """Before TensorFlow is imported: its C++ log level, unless the user chose one."""
    if keras_transfer._USER_TF_CPP_MIN_LOG_LEVEL is None and "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"


def _quiet_python_logs():
    """TensorFlow / Keras / absl Python loggers and warnings (retracing, deprecations)."""
    import logging
    import warnings

    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(tensorflow|keras|absl|tf_keras|h5py|google)(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        pass


@contextlib.contextmanager
def _native_stderr_hidden():
    """Sends what native code writes to fd 2 (TensorFlow's C++ logs, the TFLite
    converter, libjpeg) to a temporary file; Python's `sys.stderr` keeps the terminal.

    Yields the file, so a caller can replay it when the command fails unexpectedly.
    """
    try:
        python_on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        python_on_fd2 = False
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except OSError:  # no fd 2 at all: nothing to hide
        yield None
        return
    capture = tempfile.TemporaryFile()
    os.dup2(capture.fileno(), 2)
    previous = sys.stderr
    if python_on_fd2:
        sys.stderr = open(os.dup(saved), "w", buffering=1, encoding=previous.encoding, errors=previous.errors)
    replay = False
    try:
        yield capture
    except KeyboardInterrupt:
        raise
    except SystemExit as exit_:
        replay = exit_.code not in (0, None)
        raise
    except BaseException:
        replay = True  # an unexpected failure: the native log may say why
        raise
    finally:
        if python_on_fd2:
            sys.stderr.close()
            sys.stderr = previous
        os.dup2(saved, 2)
        os.close(saved)
        if replay:
            _replay(capture)
        capture.close()


def _replay(capture):
    """Prints the hidden native log (after an unexpected failure)."""
    if capture is None:
        return
    capture.seek(0)
    text = capture.read().decode("utf-8", "replace").strip()
    if text:
        print("keras-transfer: TensorFlow's log (hidden unless --verbose):\n" + text, file=sys.stderr)


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__


def main(argv=None):
    args = build_parser().parse_args(argv)
    if _verbose(args):
        return _dispatch(args)
    _quiet_tensorflow()
    with _native_stderr_hidden():
        _quiet_python_logs()
        return _dispatch(args)


class _BadArgument(Exception):
    """A command-line argument refused before any work (exit code 2, as argparse)."""


def _bad(flag, value, expected):
    raise _BadArgument(f"{flag} must be {expected}. Received: {flag} {value}")


def _check_int(flag, value, minimum):
    if value is not None and value < minimum:
        _bad(flag, value, "a positive integer" if minimum == 1 else f"an integer >= {minimum}")


def _check_rate(flag, value):
    if value is not None and not (value > 0 and value < float("inf")):
        _bad(flag, value, "a positive learning rate (a number > 0)")


def _check_fraction(flag, value, *, high_open=False):
    if value is not None and not (0.0 <= value and (value < 1.0 if high_open else value <= 1.0)):
        _bad(flag, value, f"a fraction in [0, 1{')' if high_open else ']'}")


def _check_data_dir(flag, path):
    """A class-per-folder directory: exists, is a folder, has a sub-folder."""
    if path is None:
        return
    if not os.path.exists(path):
        raise _BadArgument(f"{flag} {path}: no such folder (expected DIR/<class name>/<images>).")
    if not os.path.isdir(path):
        raise _BadArgument(
            f"{flag} {path} is a file: {flag} takes a folder with one sub-folder per class "
            "(DIR/<class name>/<images>)."
        )
    if not any(entry.is_dir() for entry in os.scandir(path)):
        raise _BadArgument(
            f"{flag} {path} has no class folders: expected one sub-folder per class "
            "(DIR/<class name>/<images>)."
        )


def _check_weights(value):
    if value is None or str(value).lower() in ("imagenet", "none", "random"):
        return
    if not os.path.exists(value):
        raise _BadArgument(
            f"--weights {value}: no such file. --weights takes imagenet, none, or a .weights.h5 "
            "file saved from that backbone."
        )


def _check_name(value):
    if value is None:
        return
    from keras_transfer.utils import checks

    try:
        checks.safe_name("--name", value)
    except ValueError:
        raise _BadArgument(
            "--name must be a plain folder name inside --output (no '/' or '\\', not '..', not "
            f"absolute, not empty). Received: --name {value!r}"
        ) from None


def _check_output(value):
    if value is not None and os.path.exists(value) and not os.path.isdir(value):
        raise _BadArgument(f"--output {value} is a file: it must be a folder (created if missing).")


def _check_arguments(args):
    """Refuses bad arguments of `train`, `lr-find`, `evaluate`, `export`, `predict`
    before any work (a `_BadArgument` with one line)."""
    command = args.command
    if command in ("train", "lr-find", "evaluate"):
        _check_data_dir("--data", args.data)
    if command in ("train", "lr-find"):
        _check_weights(args.weights)
        _check_fraction("--validation-split", args.validation_split, high_open=True)
        _check_int("--batch-size", args.batch_size, 1)
    if command == "train":
        _check_data_dir("--test-data", args.test_data)
        _check_output(args.output)
        _check_name(args.name)
        _check_int("--head-epochs", args.head_epochs, 0)
        if args.epochs is not None and args.epochs < 1 and not (args.epochs == 0 and args.head_epochs):
            _bad(
                "--epochs",
                args.epochs,
                "a positive integer (0 only with --head-epochs N for a pretrained backbone: the head alone)",
            )
        _check_rate("--lr", args.lr)
        _check_rate("--head-lr", args.head_lr)
        _check_fraction("--unfreeze-fraction", args.unfreeze_fraction)
        _check_int("--min-steps", args.min_steps, 0)
        _check_int("--patience", args.patience, 0)
        _check_backups(args)
    if command == "lr-find":
        _check_int("--steps", args.steps, 1)
        _check_rate("--min-lr", args.min_lr)
        _check_rate("--max-lr", args.max_lr)
        if args.max_lr <= args.min_lr:
            _bad("--max-lr", args.max_lr, f"above --min-lr {args.min_lr}")
    if command == "export":
        _check_output(args.output)
        _check_name(args.name)
        _check_data_dir("--data", args.data)
        _check_int("--version", args.version, 1)
        if args.version is not None:
            from keras_transfer import workflows

            name = args.name or workflows.default_name(args.model)
            _check_name(name)
            path = os.path.join(args.output, name, str(args.version))
            if os.path.exists(path):
                raise _BadArgument(
                    f"--version {args.version}: {path} exists already (an export is never "
                    "overwritten): pass another --version, or none for the next one."
                )
    if command == "predict":
        _check_int("--top", args.top, 1)


def _check_backups(args):
    """A damaged crash backup in the run folder is refused before the folder scan."""
    from keras_transfer import workflows

    name = args.name or os.path.basename(os.path.normpath(os.path.abspath(args.data)))
    run_dir = os.path.join(args.output, name, "train")
    try:
        workflows.check_run_folder(run_dir, name_given=args.name is not None)
    except ValueError as error:
        raise _BadArgument(_one_line(error).replace("name= (--name)", "--name")) from None


def _dispatch(args):
    try:
        _check_arguments(args)
    except _BadArgument as error:
        print(f"keras-transfer {args.command}: error: {error}", file=sys.stderr)
        return 2
    if args.command == "methods":
        from keras_transfer.training import method

        for name, summary in method.list_methods():
            print(f"{name:<16} {summary}")
        return 0
    if args.command == "backbones":
        from keras_transfer import backbones

        for name in backbones.list_backbones():
            spec = backbones.get_backbone_spec(name)
            print(
                f"{name:<22} {spec.default_size:>4}px  min {spec.min_size:>3}px  "
                f"{spec.channels} ch  {'imagenet' if spec.pretrained else 'no weights'}"
            )
        return 0
    if args.command == "demo":
        from keras_transfer import demo

        settings = demo.SETTINGS[args.recipe].replace(
            min_steps=args.steps,
            epochs=args.epochs,
            source_epochs=args.epochs,
        )
        log = lambda line: print(line, flush=True)  # noqa: E731
        if args.table == "forgetting":
            from keras_transfer import demo_forgetting

            demo_forgetting.run_forgetting_demo(
                args.output,
                budgets=args.budgets or ("all", 10),
                seeds=args.seeds or (0, 1),
                settings=settings,
                smoke=args.smoke,
                log=log,
            )
            return 0
        if args.table == "adaptation":
            from keras_transfer import demo_adaptation

            demo_adaptation.run_adaptation_demo(
                args.output,
                seeds=args.seeds or (0, 1, 2),
                settings=demo_adaptation.AdaptationSettings(
                    **({"epochs": args.epochs} if args.epochs else {})
                ),
                smoke=args.smoke,
                log=log,
            )
            return 0
        if args.table == "methods":
            from keras_transfer import demo_methods

            demo_methods.run_methods_demo(
                args.output,
                budgets=args.budgets or (10, "all"),
                seeds=args.seeds or (0, 1),
                settings=settings,
                smoke=args.smoke,
                log=log,
            )
            return 0
        demo.run_demo(
            args.output,
            sources=tuple(s.strip() for s in args.sources.split(",")),
            budgets=args.budgets or (1, 5, 10, "all"),
            seeds=args.seeds or (0, 1),
            settings=settings,
            smoke=args.smoke,
            # A comparison run reports beside the default one and exports nothing.
            report_name="demo" if args.recipe == "default" else f"demo_{args.recipe}",
            export_models=args.recipe == "default",
            log=log,
        )
        return 0
    try:
        return _run_workflow(args)
    except (OSError, ValueError, RuntimeError) as error:
        # FileNotFoundError, PermissionError, WeightsUnavailableError, ... : one line.
        print(f"keras-transfer {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1


def _train_method(args):
    """The `--method`s, with the recipe flags set on the fine_tune method (one is made
    when no `--method` names it)."""
    from keras_transfer import training

    flags = {
        "head_epochs": args.head_epochs,
        "epochs": args.epochs,
        "head_learning_rate": args.head_lr,
        "learning_rate": args.lr,
        "unfreeze_fraction": args.unfreeze_fraction,
        "min_steps": args.min_steps,
        "batch_size": args.batch_size,
        "patience": args.patience or None,
        "augment": False if args.no_augment else None,
    }
    recipe = None if args.recipe == "auto" else args.recipe
    methods = [training.get_method(text) for text in args.method]
    fine = next((m for m in methods if isinstance(m, training.FineTune)), None)
    if fine is None:
        methods.insert(0, training.FineTune(recipe, **flags))
    else:
        given = {key: value for key, value in flags.items() if value is not None}
        merged = training.FineTune(recipe or fine.recipe, fine.backbone, **{**fine.overrides, **given})
        methods[methods.index(fine)] = merged
    return methods[0] if len(methods) == 1 else methods


def _run_workflow(args):
    from keras_transfer import workflows

    log = lambda line: print(line, flush=True)  # noqa: E731
    if args.command == "train":
        if args.precision != "float32":
            from keras_transfer import performance

            performance.set_precision(args.precision)
            log(f"precision: {args.precision}")
        result = workflows.train_from_folder(
            args.data,
            backbone=args.backbone,
            weights=args.weights,
            method=_train_method(args),
            name=args.name,
            output=args.output,
            image_size=args.image_size,
            validation_split=args.validation_split,
            test_dir=args.test_data,
            seed=args.seed,
            export=args.tflite or True,
            log=log,
            strategy=args.strategy,
        )
        if result.evaluation is not None:
            log(f"accuracy {result.evaluation.accuracy:.4f}; model in {result.run_dir}")
        return 0
    if args.command == "lr-find":
        from keras_transfer import training

        recipe = None if args.recipe == "auto" else args.recipe
        methods = [training.get_method(text) for text in args.method]
        if args.batch_size is not None or recipe is not None:
            fine = next((m for m in methods if isinstance(m, training.FineTune)), None)
            merged = training.FineTune(
                recipe or (fine.recipe if fine else None),
                **{**(fine.overrides if fine else {}), "batch_size": args.batch_size},
            )
            methods = [m for m in methods if m is not fine]
            methods.insert(0, merged)
        result = workflows.find_learning_rate_from_folder(
            args.data,
            backbone=args.backbone,
            weights=args.weights,
            method=(methods[0] if len(methods) == 1 else methods) or None,
            image_size=args.image_size,
            validation_split=args.validation_split,
            seed=args.seed,
            steps=args.steps,
            min_lr=args.min_lr,
            max_lr=args.max_lr,
            plot=args.plot,
            log=log,
        )
        log(f"suggested learning rate: {result.suggestion:.3g}" if result.suggestion else "no suggestion")
        return 0
    if args.command == "evaluate":
        workflows.evaluate_model(args.model, args.data, output=args.output, log=log)
        return 0
    if args.command == "export":
        model, class_names = workflows.load_trained(args.model)
        name = args.name or workflows.default_name(args.model)
        calibration = eval_data = None
        kinds = args.tflite
        if kinds is None:
            kinds = ("float32", "int8") if args.data else ("float32",)
            if not args.data:
                log("TFLite int8 skipped: it needs --data DIR (images to calibrate on); exporting float32.")
        if args.data:
            eval_data = workflows.load_labelled_folder(args.data, model, class_names, log=log)
            calibration = eval_data
        elif "int8" in kinds:
            raise ValueError("int8 TFLite needs --data DIR (images to calibrate on).")
        workflows.export_model(
            model,
            os.path.join(args.output, name),
            class_names=class_names,
            version=args.version,
            tflite=kinds,
            calibration_data=calibration,
            eval_data=eval_data,
            eval_title=f"folder {args.data} (the --data images)" if args.data else None,
            log=log,
        )
        return 0
    if args.command == "predict":
        failed = 0
        for result in workflows.predict_files(args.model, args.images, top=args.top):
            if result.error:
                failed += 1
                print(f"{result.path}: cannot read: {result.error}", file=sys.stderr)
            else:
                print(f"{result.path}: " + ", ".join(f"{name} {p:.3f}" for name, p in result.top))
        return 1 if failed else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
