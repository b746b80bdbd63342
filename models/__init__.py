"""Learned denoisers (Keras 3), one builder per family serving 2D and 3D."""
