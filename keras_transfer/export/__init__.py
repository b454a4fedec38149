"""Export: SavedModel for TF Serving with labels (`saved_model`) and TFLite (`tflite`)."""

from keras_transfer.export.saved_model import BYTES_INPUT_NAME
from keras_transfer.export.saved_model import SIGNATURES
from keras_transfer.export.saved_model import export_saved_model
from keras_transfer.export.saved_model import next_version
from keras_transfer.export.saved_model import read_labels
from keras_transfer.export.saved_model import write_labels
from keras_transfer.export.tflite import INPUT_NAME
from keras_transfer.export.tflite import OUTPUT_NAME
from keras_transfer.export.tflite import QUANTIZATIONS
from keras_transfer.export.tflite import TFLiteClassifier
from keras_transfer.export.tflite import TFLiteConversionError
from keras_transfer.export.tflite import evaluate_tflite
from keras_transfer.export.tflite import export_tflite
from keras_transfer.export.tflite import float32_copy
