"""Parameter-efficient transfer: methods that train a small part of the model (BitFit, LoRA)."""

from keras_transfer.parameter_efficient.adapters import Adapter
from keras_transfer.parameter_efficient.adapters import Adapters
from keras_transfer.parameter_efficient.adapters import insert_adapters
from keras_transfer.parameter_efficient.bias_only import BiasOnly
from keras_transfer.parameter_efficient.lora import LoRA
from keras_transfer.parameter_efficient.lora import load_lora_weights
from keras_transfer.parameter_efficient.lora import merge_lora
from keras_transfer.parameter_efficient.lora import save_lora_weights
