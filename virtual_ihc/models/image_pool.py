"""Replay buffer of generated images for the discriminators (Shrivastava et al. 2017).

CycleGAN updates each discriminator with a mix of the newest fakes and fakes
from earlier steps, which damps oscillation. While the pool is filling, fakes are
stored and passed through; once full, each fake is, with probability 1/2,
swapped with a random stored one (the stored one goes to the discriminator).

Implemented with fixed shapes and stateless random numbers, so it runs inside
a ``tf.function`` or an XLA cluster, gives the same draws after ``--resume``
(seeds come from the step counter) and needs no Python-side state. Under
``tf.distribute`` the buffer is replica-local (``ON_READ`` variables): each
replica keeps its own history; a checkpoint stores the first replica's.
"""

from __future__ import annotations

import tensorflow as tf


class ImagePool(tf.Module):
    """A pool of ``pool_size`` images of shape ``image_shape`` (H, W, C), float32."""

    def __init__(self, pool_size: int, image_shape: tuple[int, int, int], name: str = "image_pool"):
        super().__init__(name=name)
        self.pool_size = int(pool_size)
        sync = dict(synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, trainable=False)
        # one scratch row (index pool_size) absorbs the writes of images that are not stored,
        # so that every image of the batch can be scattered with a static shape
        self.images = tf.Variable(tf.zeros((self.pool_size + 1, *image_shape), tf.float32),
                                  name="images", **sync)
        self.count = tf.Variable(0, dtype=tf.int32, name="count", **sync)

    def query(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Return the images the discriminator should see and update the pool.

        Args:
            images: float ``(B, H, W, C)``, the newest fakes (gradients are stopped).
            seed: int32 ``(2,)`` stateless seed, different at every step and replica.

        Returns:
            float32 ``(B, H, W, C)``.
        """
        images = tf.stop_gradient(tf.cast(images, tf.float32))
        if self.pool_size == 0:
            return images
        batch = tf.shape(images)[0]
        count = self.count.read_value()
        position = tf.range(batch, dtype=tf.int32)
        # the first (pool_size - count) images fill the empty slots
        insert = position < self.pool_size - count
        coin = tf.random.stateless_uniform([batch], seed=seed) < 0.5
        swap = tf.logical_and(tf.logical_and(tf.logical_not(insert), coin), count > 0)
        random_slot = tf.random.stateless_uniform([batch], seed=seed + 1, minval=0,
                                                  maxval=tf.maximum(count, 1), dtype=tf.int32)
        scratch = tf.fill([batch], self.pool_size)
        slot = tf.where(insert, count + position, tf.where(swap, random_slot, scratch))
        stored = tf.gather(self.images, slot)
        returned = tf.where(swap[:, None, None, None], stored, images)
        self.images.assign(tf.tensor_scatter_nd_update(self.images, slot[:, None], images))
        self.count.assign(tf.minimum(count + tf.reduce_sum(tf.cast(insert, tf.int32)), self.pool_size))
        return returned
