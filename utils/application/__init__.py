"""Application layer, behind the top-level scripts: assessment, tuning of the baselines, figures, denoising a scan."""
