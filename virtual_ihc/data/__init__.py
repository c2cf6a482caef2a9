"""The training input: image I/O, tile grids, TFRecords, the built-in sample data and the tf.data pipeline."""
