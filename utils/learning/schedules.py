"""Learning-rate schedules of the training scripts."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ct_denoising")
class ShortenableCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay whose length may be cut short during training, so that it still ends at its minimum.

    At optimizer step ``t`` the learning rate is::

        lr(t) = lr0 * ((1 - alpha) * (1 + cos(pi * min(t, T) / T)) / 2 + alpha)

    with ``lr0 = initial_learning_rate`` and ``T = decay_steps``, as ``keras.optimizers.schedules.CosineDecay``.
    ``T`` is a variable: :meth:`shorten` lowers it, for example when a time limit will stop the run
    before its planned epochs (``utils.learning.training.TimeLimit``); it is never raised.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="ShortenableCosineDecay"):
        super().__init__()
        if not decay_steps >= 1:
            raise ValueError(f"decay_steps must be >= 1, got {decay_steps}")
        self.initial_learning_rate = float(initial_learning_rate)
        self.alpha = float(alpha)
        self.name = name
        self.decay_steps = keras.Variable(float(decay_steps), dtype="float32", trainable=False, name="decay_steps")

    def __call__(self, step):
        steps = ops.cast(self.decay_steps, "float32")
        progress = ops.minimum(ops.cast(step, "float32"), steps) / steps
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        return self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)

    def shorten(self, decay_steps):
        """Make the decay end at ``decay_steps`` (at least 1) if that is sooner; return the length in force."""
        current = float(ops.convert_to_numpy(self.decay_steps))
        wanted = max(1.0, float(decay_steps))
        if wanted < current:
            self.decay_steps.assign(wanted)
            return wanted
        return current

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": float(ops.convert_to_numpy(self.decay_steps)),
            "alpha": self.alpha,
            "name": self.name,
        }
