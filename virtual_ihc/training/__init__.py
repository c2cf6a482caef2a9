"""Training: learning-rate schedules, atomic checkpoints, callbacks and the training run."""
