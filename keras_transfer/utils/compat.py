"""The import paths of modules that moved into subpackages keep working.

`keras_transfer.hub` is `keras_transfer.backbones.hub` (the same module object, so
`monkeypatch.setattr` and `isinstance` see one thing), and likewise for each entry of
`MOVED`. Pure Python: nothing is imported until an old path is.
"""

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "keras_transfer.errors": "keras_transfer.utils.errors",
    "keras_transfer.feature_cache": "keras_transfer.training.feature_cache",
    "keras_transfer.hub": "keras_transfer.backbones.hub",
    "keras_transfer.image_folder": "keras_transfer.data.image_folder",
    "keras_transfer.images": "keras_transfer.data.images",
    "keras_transfer.preprocessing": "keras_transfer.backbones.preprocessing",
    "keras_transfer.tflite": "keras_transfer.export.tflite",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and hands back the module at its new path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # The import system stamped the alias's spec on the module: give it back its own.
        module.__spec__ = module.__spec__.loader_state


def install():
    """Registers the finder once (`import keras_transfer` calls it)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
