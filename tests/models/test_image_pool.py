import numpy as np
import tensorflow as tf

from virtual_ihc.models.image_pool import ImagePool


def _batch(value, size=3):
    return tf.fill((size, 4, 4, 3), float(value))


def test_pool_passes_images_through_while_filling():
    pool = ImagePool(5, (4, 4, 3))
    out = pool.query(_batch(1.0), tf.constant([0, 0]))
    np.testing.assert_array_equal(out.numpy(), _batch(1.0).numpy())
    assert int(pool.count.numpy()) == 3
    out = pool.query(_batch(2.0), tf.constant([0, 1]))
    # two images fill the pool; the third may be swapped for a stored 1.0 image
    assert int(pool.count.numpy()) == 5
    np.testing.assert_array_equal(out.numpy()[:2], _batch(2.0).numpy()[:2])
    assert set(np.unique(pool.images.numpy()[:5])) == {1.0, 2.0}


def test_full_pool_returns_about_half_stored_images():
    pool = ImagePool(50, (4, 4, 3))
    for step in range(13):  # fill with values 0..12 (4 images a step)
        pool.query(_batch(step, 4), tf.constant([1, step]))
    returned_old = 0
    for step in range(100):
        out = pool.query(_batch(1000 + step, 4), tf.constant([2, step])).numpy()
        returned_old += int(np.sum(out[:, 0, 0, 0] != 1000 + step))
    # each image is swapped with probability 1/2: 400 draws, expect 200 +- 3 sigma (30)
    assert 170 <= returned_old <= 230


def test_zero_size_pool_is_the_identity():
    pool = ImagePool(0, (4, 4, 3))
    np.testing.assert_array_equal(pool.query(_batch(3.0), tf.constant([0, 0])).numpy(), _batch(3.0).numpy())
