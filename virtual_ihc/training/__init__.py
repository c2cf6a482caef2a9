"""Training: the run (``trainer``), its ``tf.distribute`` strategy, learning-rate schedules, atomic checkpoints
(and reading generators back from a run), callbacks, the pathology guard, history and the command line."""
