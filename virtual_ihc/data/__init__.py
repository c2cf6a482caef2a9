"""Data: image I/O, stains, tissue masks, tiling, sample data and the tf.data pipeline."""
