"""Knowledge distillation: a small MLP student learns from a transferred CNN teacher.

What it shows: a CNN trained on MNIST digits 0-4 is fine-tuned on a few labelled
digits of each target (MNIST 5-9, and the UCI 8x8 digits) and becomes the teacher; the
toolkit's `mnist_mlp` student (a fifth of the teacher's parameters) is then trained on
the same labelled, augmented digits for the same steps twice: alone, and distilled from
the teacher (`method=Distill(teacher)`: the teacher's temperature-softened outputs on
each augmented batch plus the hard labels; with augmentation the teacher runs in every
step, as "a good teacher is patient and consistent" recommends). It prints the test
accuracy of teacher and students per seed and their mean, and exports the distilled
MNIST student for TF Serving under saved_models/distill_digits/<version>/.

Run:  python examples/distill_digits.py [--k 20] [--seeds 0 1] [--smoke]
"""

import argparse
import os

import keras
import numpy as np
from sklearn.model_selection import train_test_split

import keras_transfer
from keras_transfer import data
from keras_transfer.distillation import Distill

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--k", type=int, default=20, help="labelled target examples per class")
parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="student seeds")
parser.add_argument("--temperature", type=float, default=3.0, help="distillation temperature")
parser.add_argument("--output", default="saved_models", help="output folder")
parser.add_argument("--smoke", action="store_true", help="a few-second run (tests)")
args = parser.parse_args()
STUDENT_EPOCHS, STUDENT_STEPS = (1, 4) if args.smoke else (20, 400)

# Setup: the source model, a CNN trained on MNIST digits 0-4.
keras.utils.set_random_seed(0)
mnist = data.load_mnist()
x_src, y_src = data.subset_classes(mnist.x, mnist.y, [0, 1, 2, 3, 4])
source = keras_transfer.build_classifier("mnist_cnn", num_classes=5, weights=None)
keras_transfer.train(
    source,
    (x_src, y_src),
    epochs=1 if args.smoke else 10,
    augment=True,
    label_smoothing=0.1,
    cosine=True,
    verbose=0,
)

# Data: each target's pool and test split (70/30), and k labelled digits per class of the pool.
uci = data.load_uci_digits()
targets = {"MNIST 5-9": data.subset_classes(mnist.x, mnist.y, [5, 6, 7, 8, 9]), "UCI digits": (uci.x, uci.y)}
if args.smoke:
    targets, args.seeds = {"MNIST 5-9": targets["MNIST 5-9"]}, args.seeds[:1]

results, exported = {}, None
for target, (x, y) in targets.items():
    x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    x_few, y_few = data.few_shot(x_pool, y_pool, k=args.k, seed=0)
    classes = len(np.unique(y))

    # Model: the teacher, the source CNN fine-tuned on the labelled digits (the recipe for it).
    keras.utils.set_random_seed(0)
    teacher = keras_transfer.build_classifier(source, num_classes=classes)
    recipe = keras_transfer.training.recipe_for(teacher).replace(
        epochs=1 if args.smoke else None, min_steps=10 if args.smoke else None
    )
    keras_transfer.fine_tune(teacher, (x_few, y_few), recipe=recipe, verbose=0)
    teacher_accuracy = keras_transfer.evaluate_classifier(teacher, (x_test, y_test)).accuracy
    print(
        f"{target}: {len(x_few)} labelled digits, {len(x_test)} test; "
        f"teacher (mnist_cnn) {teacher_accuracy:.4f}"
    )

    # Train: the student alone and distilled, same initial weights, data, seed and steps.
    for seed in args.seeds:
        for name, method in (("alone", None), ("distilled", Distill(teacher, temperature=args.temperature))):
            keras.utils.set_random_seed(seed)
            student = keras_transfer.build_classifier("mnist_mlp", num_classes=classes, weights=None)
            keras_transfer.train(
                student,
                (x_few, y_few),
                epochs=STUDENT_EPOCHS,
                min_steps=STUDENT_STEPS,
                learning_rate=1e-3,
                cosine=True,
                augment=True,  # both students: the teacher labels each augmented batch
                seed=seed,
                method=method,
                verbose=0,
            )
            # Evaluate.
            accuracy = keras_transfer.evaluate_classifier(student, (x_test, y_test)).accuracy
            results.setdefault((target, name), []).append(accuracy)
            print(f"  seed {seed}: student (mnist_mlp) {name:>9}: {accuracy:.4f}")
            if target == "MNIST 5-9" and name == "distilled" and exported is None:
                exported = student
    alone, distilled = np.mean(results[(target, "alone")]), np.mean(results[(target, "distilled")])
    print(
        f"  mean over seeds {args.seeds}: alone {alone:.4f}, distilled {distilled:.4f} "
        f"({distilled - alone:+.4f})"
    )
print(
    "parameters: teacher",
    f"{keras_transfer.count_parameters(teacher).total:,},",
    f"student {keras_transfer.count_parameters(exported).total:,}",
)

# Export the distilled MNIST 5-9 student.
path = keras_transfer.export_saved_model(
    exported, os.path.join(args.output, "distill_digits"), class_names=[str(d) for d in range(5, 10)]
)
print(f"exported to {path}")
