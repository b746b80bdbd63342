"""Data layer: reading and writing CT, phantoms, the real-CT split, noise models, the neighbour prior, metrics.

Imports only :mod:`utils.base`. The readers and writers need neither TensorFlow nor :mod:`models`.
"""
