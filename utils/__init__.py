"""Shared code for the CT denoising toolkit: data, pipelines, metrics, solvers, training helpers."""
