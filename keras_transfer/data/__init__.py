"""Data: arrays and tf.data pipelines (`datasets`), augmentation (`augmentation`), image
decoding (`images`), folders of images (`image_folder`), the MNIST-M-style domain (`mnist_m`).

The names of `keras_transfer.data` are those of `datasets`."""

from keras_transfer.data.augmentation import augmentation_for
from keras_transfer.data.augmentation import image_augmentation
from keras_transfer.data.datasets import AUTOTUNE
from keras_transfer.data.datasets import Images
from keras_transfer.data.datasets import adapt_images
from keras_transfer.data.datasets import augment_batches
from keras_transfer.data.datasets import batch_and_augment
from keras_transfer.data.datasets import check_labels
from keras_transfer.data.datasets import default_augmentation
from keras_transfer.data.datasets import few_shot
from keras_transfer.data.datasets import few_shot_indices
from keras_transfer.data.datasets import finish_pipeline
from keras_transfer.data.datasets import load_mnist
from keras_transfer.data.datasets import load_uci_digits
from keras_transfer.data.datasets import make_dataset
from keras_transfer.data.datasets import pipeline_options
from keras_transfer.data.datasets import subset_classes
from keras_transfer.data.datasets import with_pipeline_options
from keras_transfer.data.mnist_m import load_mnist_m_style
from keras_transfer.data.mnist_m import mnist_m_style
from keras_transfer.data.validation import PrescaledPixelsWarning
from keras_transfer.data.validation import check_finite
from keras_transfer.data.validation import check_labels_anywhere
