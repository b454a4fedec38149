"""Backbones: the registry (keras.applications and the MNIST source models), TF Hub
modules as Keras 3 layers (`hub`), and the preprocessing layer every classifier starts with.

A new backbone is one `register_backbone` call (see `registry`)."""

from keras_transfer.backbones.registry import BackboneSpec
from keras_transfer.backbones.registry import build_backbone
from keras_transfer.backbones.registry import get_backbone_spec
from keras_transfer.backbones.registry import list_backbones
from keras_transfer.backbones.registry import mnist_cnn
from keras_transfer.backbones.registry import mnist_mlp
from keras_transfer.backbones.registry import register_backbone
from keras_transfer.backbones.registry import scale_0_1
from keras_transfer.backbones.registry import validate_input_shape
from keras_transfer.backbones.resolve import ResolvedBackbone
from keras_transfer.backbones.resolve import is_saved_model
from keras_transfer.backbones.resolve import resolve_backbone
