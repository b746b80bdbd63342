"""Solver layer: split-Bregman TV and SPADE (TensorFlow), BM3D and BM4D (lazy wrappers).

Imports only :mod:`utils.base` and :mod:`utils.data`; never :mod:`models`.
"""
