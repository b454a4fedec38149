"""Compression as transfer: methods that make the fine-tuned model smaller to ship."""

from keras_transfer.compression.pruning import Prune
from keras_transfer.compression.pruning import compressed_size
from keras_transfer.compression.pruning import sparsity_report
from keras_transfer.compression.pruning import strip_pruning
