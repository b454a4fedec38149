"""The names the library and the command line both accept, in one TensorFlow-free module
(the CLI reads its `choices=` from here, so `keras-transfer --help` stays instant and
never drifts from what the functions take)."""

# performance.set_precision: numeric precision of models built from now on.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16", "onednn_bfloat16")
# training.RECIPES: the recipe kinds (a test checks the two agree).
RECIPE_NAMES = ("small", "pretrained")
# workflows.export_model / train_from_folder(export=...): TFLite files written beside a SavedModel.
TFLITE_KINDS = ("float32", "int8")
# demo.SETTINGS: the demo's recipes.
DEMO_RECIPES = ("default", "keras-guide")
