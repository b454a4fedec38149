"""Helpers shared by every capability: errors, module aliases for moved modules, Keras internals."""
