"""Shared code for the CT denoising toolkit: data, pipelines, metrics, solvers, training helpers."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the progress bars;
# users who want it back set TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
