"""The improved CycleGAN as a ``keras.Model``: two generators, two discriminators,
a custom ``train_step`` and a reconstruction-quality ``test_step``.

Naming: ``real_he`` / ``real_ki67`` are input tiles, ``fake_ki67 = G_he->ki67(real_he)``,
``cycled_he = G_ki67->he(fake_ki67)``, and symmetrically for the other direction.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from virtual_ihc import losses
from virtual_ihc.config import LossConfig
from virtual_ihc.models.image_pool import ImagePool

#: keys returned by train_step, in display order
TRAIN_METRICS = (
    "generator_loss", "adversarial_he_to_ki67_loss", "adversarial_ki67_to_he_loss",
    "cycle_l1_loss", "cycle_ssim_loss", "identity_loss", "structure_loss", "stain_moment_loss",
    "discriminator_he_loss", "discriminator_ki67_loss",
)
#: keys returned by test_step (Keras prefixes them with "val_")
TEST_METRICS = (
    "he_cycle_ssim", "he_cycle_psnr", "he_cycle_mae",
    "ki67_cycle_ssim", "ki67_cycle_psnr", "ki67_cycle_mae",
)


class CycleGAN(keras.Model):
    """Holds ``generator_he_to_ki67``, ``generator_ki67_to_he``, ``discriminator_he``, ``discriminator_ki67``.

    Args:
        generator_he_to_ki67, generator_ki67_to_he: models from ``build_resnet_generator``.
        discriminator_he, discriminator_ki67: models from ``build_patchgan_discriminator``.
        loss_config: loss kinds and weights.
        image_shape: ``(H, W, 3)`` of training crops (sizes the image pools).
        pool_size: images per replay buffer (0 = off).
        seed: seed of the image pools' random draws.

    ``fit`` expects batches ``(real_he, real_ki67)``, float32 ``(B, H, W, 3)`` in [-1, 1].
    ``call(real_he)`` returns the virtual Ki-67.
    """

    def __init__(self, generator_he_to_ki67: keras.Model, generator_ki67_to_he: keras.Model,
                 discriminator_he: keras.Model, discriminator_ki67: keras.Model, loss_config: LossConfig,
                 image_shape: tuple[int, int, int], pool_size: int = 50, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.generator_he_to_ki67 = generator_he_to_ki67
        self.generator_ki67_to_he = generator_ki67_to_he
        self.discriminator_he = discriminator_he
        self.discriminator_ki67 = discriminator_ki67
        self.loss_config = loss_config
        self.seed = int(seed)
        self.pool_he = ImagePool(pool_size, image_shape, name="pool_he")
        self.pool_ki67 = ImagePool(pool_size, image_shape, name="pool_ki67")
        self.train_trackers = {key: keras.metrics.Mean(name=key) for key in TRAIN_METRICS}
        self.test_trackers = {key: keras.metrics.Mean(name=key) for key in TEST_METRICS}
        self.generator_optimizer = None
        self.discriminator_optimizer = None

    @property
    def generator_variables(self) -> list:
        return self.generator_he_to_ki67.trainable_variables + self.generator_ki67_to_he.trainable_variables

    @property
    def discriminator_variables(self) -> list:
        return self.discriminator_he.trainable_variables + self.discriminator_ki67.trainable_variables

    def compile(self, generator_optimizer: keras.optimizers.Optimizer,
                discriminator_optimizer: keras.optimizers.Optimizer, **kwargs):
        """Attach one optimizer for both generators and one for both discriminators.

        The optimizers' variables are built here, so that under a
        ``tf.distribute`` strategy they are created in the strategy scope (the
        caller compiles inside it) rather than lazily in a replica context.
        ``kwargs`` go to ``keras.Model.compile`` (e.g. ``jit_compile``).
        """
        super().compile(**kwargs)
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        self.generator_optimizer.build(self.generator_variables)
        self.discriminator_optimizer.build(self.discriminator_variables)

    @property
    def metrics(self) -> list:
        # listed so that fit()/evaluate() reset them at each epoch
        return list(self.train_trackers.values()) + list(self.test_trackers.values())

    def call(self, real_he, training=False):
        return self.generator_he_to_ki67(real_he, training=training)

    def _step_seed(self) -> tf.Tensor:
        """A stateless seed unique to this step and replica (resumes identically)."""
        replica = tf.distribute.get_replica_context()
        replica_id = tf.cast(replica.replica_id_in_sync_group if replica else 0, tf.int64)
        step = tf.cast(self.generator_optimizer.iterations, tf.int64)
        return tf.cast(tf.stack([tf.constant(self.seed, tf.int64), step * 64 + replica_id * 4]), tf.int32)

    @staticmethod
    def _scaled_gradients(tape: tf.GradientTape, loss: tf.Tensor, variables: list,
                          optimizer: keras.optimizers.Optimizer) -> list:
        """Gradients of ``loss``, loss-scaled when the optimizer does it (mixed_float16)."""
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            loss = optimizer.scale_loss(loss)
        return tape.gradient(loss, variables)

    def train_step(self, data):
        real_he, real_ki67 = data
        cfg = self.loss_config
        seed = self._step_seed()
        average = tf.nn.compute_average_loss  # per-example -> mean over the global batch
        with tf.GradientTape(persistent=True) as tape:
            fake_ki67 = self.generator_he_to_ki67(real_he, training=True)
            cycled_he = self.generator_ki67_to_he(fake_ki67, training=True)
            fake_he = self.generator_ki67_to_he(real_ki67, training=True)
            cycled_ki67 = self.generator_he_to_ki67(fake_he, training=True)

            adversarial_he_to_ki67 = losses.generator_adversarial_loss(
                self.discriminator_ki67(fake_ki67, training=True), cfg.adversarial)
            adversarial_ki67_to_he = losses.generator_adversarial_loss(
                self.discriminator_he(fake_he, training=True), cfg.adversarial)
            cycle_l1 = losses.l1_loss(real_he, cycled_he) + losses.l1_loss(real_ki67, cycled_ki67)
            per_example = adversarial_he_to_ki67 + adversarial_ki67_to_he + cfg.cycle_weight * cycle_l1
            cycle_ssim = tf.zeros_like(cycle_l1)
            if cfg.ssim_weight > 0:
                cycle_ssim = losses.structural_cycle_loss(real_he, cycled_he, real_ki67, cycled_ki67,
                                                          cfg.ssim_kind)
                per_example += cfg.ssim_weight * cycle_ssim
            identity = tf.zeros_like(cycle_l1)
            if cfg.identity_weight > 0:
                identity = (losses.l1_loss(real_ki67, self.generator_he_to_ki67(real_ki67, training=True))
                            + losses.l1_loss(real_he, self.generator_ki67_to_he(real_he, training=True)))
                per_example += cfg.identity_weight * identity
            structure = tf.zeros_like(cycle_l1)
            if cfg.structure_weight > 0:
                structure = (losses.nuclear_structure_loss(real_he, fake_ki67)
                             + losses.nuclear_structure_loss(real_ki67, fake_he))
                per_example += cfg.structure_weight * structure
            stain_moment = tf.zeros_like(cycle_l1)
            if cfg.stain_moment_weight > 0:
                stain_moment += losses.stain_moment_loss(real_ki67, fake_ki67)
                per_example += cfg.stain_moment_weight * stain_moment
            generator_loss = average(per_example)

            pooled_fake_ki67 = self.pool_ki67.query(fake_ki67, seed)
            pooled_fake_he = self.pool_he.query(fake_he, seed + 2)
            discriminator_ki67_loss = average(losses.discriminator_loss(
                self.discriminator_ki67(real_ki67, training=True),
                self.discriminator_ki67(pooled_fake_ki67, training=True), cfg.adversarial))
            discriminator_he_loss = average(losses.discriminator_loss(
                self.discriminator_he(real_he, training=True),
                self.discriminator_he(pooled_fake_he, training=True), cfg.adversarial))
            discriminator_loss = discriminator_ki67_loss + discriminator_he_loss

        generator_gradients = self._scaled_gradients(tape, generator_loss, self.generator_variables,
                                                     self.generator_optimizer)
        discriminator_gradients = self._scaled_gradients(tape, discriminator_loss, self.discriminator_variables,
                                                         self.discriminator_optimizer)
        del tape
        self.generator_optimizer.apply(generator_gradients, self.generator_variables)
        self.discriminator_optimizer.apply(discriminator_gradients, self.discriminator_variables)

        values = {
            "generator_loss": generator_loss,
            "adversarial_he_to_ki67_loss": average(adversarial_he_to_ki67),
            "adversarial_ki67_to_he_loss": average(adversarial_ki67_to_he),
            "cycle_l1_loss": average(cycle_l1),
            "cycle_ssim_loss": average(cycle_ssim),
            "identity_loss": average(identity),
            "structure_loss": average(structure),
            "stain_moment_loss": average(stain_moment),
            "discriminator_he_loss": discriminator_he_loss,
            "discriminator_ki67_loss": discriminator_ki67_loss,
        }
        return self._update(self.train_trackers, values)

    def test_step(self, data):
        """Reconstruction quality of both cycles: SSIM, PSNR (dB) and MAE, all on [0, 1] images."""
        real_he, real_ki67 = data
        cycled_he = self.generator_ki67_to_he(self.generator_he_to_ki67(real_he, training=False), training=False)
        cycled_ki67 = self.generator_he_to_ki67(self.generator_ki67_to_he(real_ki67, training=False),
                                                training=False)
        values = {}
        for stain, real, cycled in (("he", real_he, cycled_he), ("ki67", real_ki67, cycled_ki67)):
            values[f"{stain}_cycle_ssim"] = losses.structural_similarity(real, cycled)
            values[f"{stain}_cycle_psnr"] = losses.psnr(real, cycled)
            values[f"{stain}_cycle_mae"] = 0.5 * losses.l1_loss(real, cycled)  # [-1, 1] -> [0, 1] units
        return self._update(self.test_trackers, values)

    @staticmethod
    def _update(trackers: dict, values: dict) -> dict:
        for key, value in values.items():
            trackers[key].update_state(value)
        return {key: tracker.result() for key, tracker in trackers.items()}
