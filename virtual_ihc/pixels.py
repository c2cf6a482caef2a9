"""Pixel values and sizes: ``uint8`` images, the generators' floats in [-1, 1], the size multiple.

Images on disk and at the serving signatures are ``uint8`` RGB; the networks read
and write ``float32`` in [-1, 1] (``x / 127.5 - 1``). The two conversions here are
the only place that arithmetic is written; they take NumPy arrays or tensors,
eagerly or inside ``tf.data`` and ``tf.function``, and return tensors.

The generators downsample by 2 ``num_downsamplings`` times, so they need sides
that are multiples of ``2 ** num_downsamplings`` (:data:`SIZE_MULTIPLE` for the
paper's 3): other sizes are mirror-padded at the bottom and right by
:func:`padding_to_multiple` and the output is cropped back.
"""

from __future__ import annotations

#: the generators' required size multiple for the default 3 downsamplings
#: (:func:`virtual_ihc.export.size_multiple_of` gives any generator's)
SIZE_MULTIPLE = 8


def uint8_to_unit(images):
    """uint8 [0, 255] -> float32 [-1, 1] (a tensor)."""
    import tensorflow as tf  # here, not at the top: the foundation stays importable without TensorFlow

    return tf.cast(images, tf.float32) / 127.5 - 1.0


def unit_to_uint8(images):
    """float [-1, 1] -> uint8 [0, 255], rounded half to even, clipped (a tensor)."""
    import tensorflow as tf

    return tf.cast(tf.round(tf.clip_by_value((tf.cast(images, tf.float32) + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)


def padding_to_multiple(height, width, multiple: int):
    """``(rows, columns)`` to add below and right of a ``height x width`` image so both sides are multiples.

    Works on Python ints and on scalar integer tensors (inside a ``tf.function``).
    """
    return -height % multiple, -width % multiple
