"""Parameter-efficient transfer: methods that train a small part of the model."""

from keras_transfer.parameter_efficient.adapters import Adapter
from keras_transfer.parameter_efficient.adapters import Adapters
from keras_transfer.parameter_efficient.adapters import insert_adapters
from keras_transfer.parameter_efficient.bias_only import BiasOnly
