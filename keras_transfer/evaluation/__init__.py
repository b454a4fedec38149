"""Evaluation: accuracy, report and confusion matrix (`metrics`), their plots (`plots`),
learning curves over label budgets (`curves`)."""

from keras_transfer.evaluation.curves import LearningCurves
from keras_transfer.evaluation.curves import learning_curves
from keras_transfer.evaluation.metrics import Evaluation
from keras_transfer.evaluation.metrics import evaluate_classifier
from keras_transfer.evaluation.metrics import predict_classes
from keras_transfer.evaluation.plots import plot_confusion_matrix
from keras_transfer.evaluation.plots import plot_history
from keras_transfer.evaluation.plots import pyplot
from keras_transfer.evaluation.plots import save_figure
