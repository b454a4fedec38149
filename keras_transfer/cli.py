"""The `keras-transfer` command."""

import argparse
import sys


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
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    demo.add_argument("--output", default="saved_models", help="output folder (default: saved_models)")
    demo.add_argument("--sources", default="cnn,mlp", help="source models: cnn, mlp (default: cnn,mlp)")
    demo.add_argument("--budgets", type=_budgets, default=(1, 5, 10, "all"),
                      help="labels per class, comma-separated, 'all' for the whole pool (default: 1,5,10,all)")
    demo.add_argument("--seeds", type=_seeds, default=(0, 1), help="seeds to average over (default: 0,1)")
    demo.add_argument("--recipe", choices=("default", "keras-guide"), default="default",
                      help="training recipe: the tuned default (augmentation, label smoothing, "
                           "cosine decay) or the plain Keras-guide one (Adam 1e-3, no "
                           "augmentation), for a side-by-side comparison (default: default)")
    demo.add_argument("--steps", type=int, default=None, help="optimizer steps of a few-shot run")
    demo.add_argument("--epochs", type=int, default=None,
                      help="epochs over the whole pool for the source and the 'all' budget")
    demo.add_argument("--smoke", action="store_true", help="a seconds-long run for tests")

    commands.add_parser("backbones", help="list the backbone registry names")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == "backbones":
        from keras_transfer import backbones

        for name in backbones.list_backbones():
            spec = backbones.get_backbone_spec(name)
            print(f"{name:<22} {spec.default_size:>4}px  min {spec.min_size:>3}px  "
                  f"{spec.channels} ch  {'imagenet' if spec.pretrained else 'no weights'}")
        return 0
    if args.command == "demo":
        import dataclasses

        from keras_transfer import demo

        recipe = demo.RECIPES[args.recipe]
        changes = {}
        if args.steps is not None:
            changes["steps"] = args.steps
        if args.epochs is not None:
            changes.update(all_epochs=args.epochs, source_epochs=args.epochs)
        recipe = dataclasses.replace(recipe, **changes)
        demo.run_demo(
            args.output, sources=tuple(s.strip() for s in args.sources.split(",")),
            budgets=args.budgets, seeds=args.seeds, recipe=recipe, smoke=args.smoke,
            # A comparison run reports beside the default one and exports nothing.
            report_name="demo" if args.recipe == "default" else f"demo_{args.recipe}",
            export_models=args.recipe == "default",
            log=lambda line: print(line, flush=True),
        )
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
