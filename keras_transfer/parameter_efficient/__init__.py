"""Parameter-efficient transfer: methods that train a small part of the model."""

from keras_transfer.parameter_efficient.bias_only import BiasOnly
