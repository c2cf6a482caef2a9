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
    "cycle_l1_loss", "cycle_ssim_loss", "identity_loss", "structure_loss", "positivity_loss",
    "discriminator_he_loss", "discriminator_ki67_loss",
)
#: keys returned by test_step (Keras prefixes them with "val_")
TEST_METRICS = (
    "he_cycle_ssim", "he_cycle_psnr", "he_cycle_mae",
    "ki67_cycle_ssim", "ki67_cycle_psnr", "ki67_cycle_mae",
)


def _on_any_replica(flag: tf.Tensor) -> tf.Tensor:
    """Whether a boolean scalar is true on any replica (``flag`` itself on one device).

    Gathered in a merge call with plain ops rather than a collective all-reduce:
    a collective issued next to the loss-scale optimizer's conditional gradient
    all-reduce can run in a different order on different replicas.
    """
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return flag
    return replica.merge_call(
        lambda strategy, value: tf.reduce_any(tf.stack(strategy.experimental_local_results(value))),
        args=(flag,))


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
        counter = dict(dtype="int64", trainable=False, aggregation="only_first_replica")
        # every train step, applied or skipped by loss scaling: the schedules and the step seed count these
        self.train_step_counter = keras.Variable(0, name="train_step_counter", **counter)
        # train steps whose update loss scaling skipped (a non-finite gradient on any replica)
        self.skipped_steps = keras.Variable(0, name="skipped_steps", **counter)
        # the input element after the last one trained on: where a resumed input stream starts
        self.next_element = keras.Variable(0, name="next_element", **counter)
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

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Skipped under MultiWorkerMirroredStrategy, where Keras 3.15 fails to build from a tuple batch.

        Keras reduces one input batch over the replicas to build the model
        symbolically; across workers that reduction rejects tuples. The four
        networks are built when they are created, so nothing is left unbuilt.
        """
        if not isinstance(self.distribute_strategy, tf.distribute.MultiWorkerMirroredStrategy):
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

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
        step = tf.cast(self.train_step_counter, tf.int64)
        return tf.cast(tf.stack([tf.constant(self.seed, tf.int64), step * 64 + replica_id * 4]), tf.int32)

    @staticmethod
    def _scale_loss(loss: tf.Tensor, optimizer: keras.optimizers.Optimizer) -> tf.Tensor:
        """``loss`` times the loss scale when the optimizer scales (mixed_float16); call inside the tape."""
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            return optimizer.scale_loss(loss)
        return loss

    @staticmethod
    def _apply(optimizer: keras.optimizers.Optimizer, gradients: list, variables: list) -> tf.Tensor:
        """Apply ``gradients``; returns True when loss scaling skipped the update.

        Keras' ``LossScaleOptimizer`` decides whether to skip from the first
        replica's gradients only, then applies the sum over replicas, so an
        overflow on another replica would reach the weights. The finite flags of
        all replicas are combined here, and when any is false every replica's
        gradients are made non-finite, so that every replica skips the step (and
        the loss scale is halved).
        """
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer.apply(gradients, variables)
            return tf.constant(False)
        overflow = _on_any_replica(tf.logical_not(optimizer.check_finite(gradients)))
        poison = tf.where(overflow, float("nan"), 1.0)
        optimizer.apply([gradient * tf.cast(poison, gradient.dtype) for gradient in gradients], variables)
        return overflow

    def train_step(self, data):
        """One update of both generators and both discriminators.

        ``data``: ``(real_he, real_ki67)`` or ``(real_he, real_ki67, element)``,
        where ``element`` (int64 ``(B,)``, the same value in every row) is the
        input-stream position of the batch's last element (recorded for ``--resume``).
        """
        real_he, real_ki67 = data[0], data[1]
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
            positivity = tf.zeros_like(cycle_l1)
            if cfg.positivity_weight > 0:
                # a statistic of each replica's share of the batch (like batch normalisation), same for its examples
                positivity += losses.positivity_loss(real_ki67, fake_ki67)
                per_example += cfg.positivity_weight * positivity
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
            scaled_generator_loss = self._scale_loss(generator_loss, self.generator_optimizer)
            scaled_discriminator_loss = self._scale_loss(discriminator_loss, self.discriminator_optimizer)

        generator_gradients = tape.gradient(scaled_generator_loss, self.generator_variables)
        discriminator_gradients = tape.gradient(scaled_discriminator_loss, self.discriminator_variables)
        del tape
        generator_skipped = self._apply(self.generator_optimizer, generator_gradients, self.generator_variables)
        discriminator_skipped = self._apply(self.discriminator_optimizer, discriminator_gradients,
                                            self.discriminator_variables)
        self.skipped_steps.assign_add(tf.cast(tf.logical_or(generator_skipped, discriminator_skipped), tf.int64))
        self.train_step_counter.assign_add(1)
        if len(data) > 2:
            self.next_element.assign(tf.cast(data[2][0], tf.int64) + 1)

        values = {
            "generator_loss": generator_loss,
            "adversarial_he_to_ki67_loss": average(adversarial_he_to_ki67),
            "adversarial_ki67_to_he_loss": average(adversarial_ki67_to_he),
            "cycle_l1_loss": average(cycle_l1),
            "cycle_ssim_loss": average(cycle_ssim),
            "identity_loss": average(identity),
            "structure_loss": average(structure),
            "positivity_loss": average(positivity),
            "discriminator_he_loss": discriminator_he_loss,
            "discriminator_ki67_loss": discriminator_ki67_loss,
        }
        # each replica holds its share of the global-batch mean (compute_average_loss); times the
        # replicas it is the replica's own mean, and the trackers average those (as Keras' fit does)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return self._update(self.train_trackers, {key: value * replicas for key, value in values.items()})

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
        results = {key: tracker.result() for key, tracker in trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 averages step outputs across workers along axis 0, so they need one
            results = {key: value[None] for key, value in results.items()}
        return results
