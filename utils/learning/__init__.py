"""Learning layer: the validated run configuration, its command line, the tf.data pipelines and the training run."""
