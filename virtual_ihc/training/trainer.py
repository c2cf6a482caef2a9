"""One training run, from a resolved ``ExperimentConfig`` to a run directory.

Run directory layout::

    config.json                 the full resolved configuration
    checkpoints/epoch_NNN/      atomic checkpoints (networks, optimizers, pools, epoch)
    logs/                       TensorBoard scalars (train/, validation/) and sample images (images/)
    samples/epoch_NNN.png       real H&E | virtual Ki-67 | reconstructed H&E, and the reverse row
    history.csv                 per-epoch losses, validation metrics and learning rate
    export/he_to_ki67/          SavedModel, uint8 serving_default signature (and ki67_to_he/)
    export/generator_*.keras    both generators as Keras files

:func:`~virtual_ihc.training.checkpoints.load_generators` reads the generators back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from virtual_ihc.config import ConfigError, ExperimentConfig, validate_config
from virtual_ihc.data.decode import DecodeFailures, load_validation_tiles, remove_tile_cache
from virtual_ihc.data.holdout import split_validation
from virtual_ihc.data.index import DomainIndex, index_domain
from virtual_ihc.data.stream import default_steps_per_epoch, make_train_dataset, make_validation_dataset
from virtual_ihc.data.synthetic import write_sample_dataset
from virtual_ihc.errors import RunFailure
from virtual_ihc.export import export_generators
from virtual_ihc.io.images import remove_orphaned_temporaries
from virtual_ihc.models import CycleGAN, build_patchgan_discriminator, build_resnet_generator
from virtual_ihc.pixels import uint8_to_unit
from virtual_ihc.training.callbacks import (DecodeFailureReport, EpochCheckpoint, LearningRateLogger, ProgressDisplay,
                                            SampleImages, progress_mode)
from virtual_ihc.training.checkpoints import CheckpointManager, list_checkpoints
from virtual_ihc.training.guard import PathologyGuard
from virtual_ihc.training.history import reconcile_history
from virtual_ihc.training.schedules import build_learning_rate_schedule, on_step_counter
from virtual_ihc.training.strategy import check_workers_agree, is_chief, select_strategy

logger = logging.getLogger(__name__)

#: decoded copies of large images for region reads while training (removed at the end of a run)
TILE_CACHE = ".tile_cache"


class TrainingDivergedError(RunFailure):
    """Training produced non-finite losses or weights; nothing non-finite was saved or exported."""


@dataclasses.dataclass
class TrainingResult:
    """What a run produced, for the CLI summary and for callers."""

    run_dir: Path
    epochs_completed: int
    steps_per_epoch: int
    history: dict
    exports: dict
    skipped_files: dict
    decode_failures: int
    replicas: int
    consistency: object = None  # ConsistencySummary of the last epoch (None without the pathology guard)
    flagged_epochs: dict = dataclasses.field(default_factory=dict)  # epoch -> pathology guard flags
    model: object = None  # the trained CycleGAN, for callers that go on using it


@contextlib.contextmanager
def precision_policy(name: str):
    """Set the Keras dtype policy while models are built, then restore the previous one."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32" if name == "none" else name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def without_remapper():
    """Switch Grappler's remapper pass off while training.

    The remapper tries to fuse the discriminators' conv + bias + LeakyReLU while
    the LeakyReLU gradient still needs the conv output, fails, logs a ``remapper
    failed`` error and drops its rewrites of the train step anyway; without the
    pass the error line is gone (small profile, 20 steps: 0.26 / 0.18 s per step
    with the pass, 0.19 / 0.26 s without, on a loaded 2-core CPU: no measurable change).
    """
    previous = tf.config.optimizer.get_experimental_options().get("remapping", True)
    tf.config.optimizer.set_experimental_options({"remapping": False})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({"remapping": previous})


def build_cycle_gan(config: ExperimentConfig) -> CycleGAN:
    """The four networks and the CycleGAN wrapper, uncompiled (call inside the strategy scope)."""
    crop = config.data.crop_size
    with precision_policy(config.train.mixed_precision):
        return CycleGAN(
            generator_he_to_ki67=build_resnet_generator(config.generator, "generator_he_to_ki67"),
            generator_ki67_to_he=build_resnet_generator(config.generator, "generator_ki67_to_he"),
            discriminator_he=build_patchgan_discriminator(config.discriminator, "discriminator_he"),
            discriminator_ki67=build_patchgan_discriminator(config.discriminator, "discriminator_ki67"),
            loss_config=config.loss, image_shape=(crop, crop, 3), pool_size=config.train.pool_size,
            seed=config.train.seed)


def compile_cycle_gan(model: CycleGAN, config: ExperimentConfig, steps_per_epoch: int) -> None:
    """Adam for both generators and both discriminators with the configured schedule."""
    train = config.train

    def adam():
        schedule = build_learning_rate_schedule(train, steps_per_epoch)
        optimizer = keras.optimizers.Adam(on_step_counter(schedule, model.train_step_counter),
                                          beta_1=train.beta_1, beta_2=train.beta_2)
        if train.mixed_precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    model.compile(generator_optimizer=adam(), discriminator_optimizer=adam(), jit_compile=train.jit)


def resolve_domains(config: ExperimentConfig, run_dir: Path) -> tuple[DomainIndex, ...]:
    """Index training and validation tiles of both stains (writing the sample data if no data is given)."""
    data = config.data
    he_dir, ki67_dir = data.he_dir, data.ki67_dir
    he_val_dir, ki67_val_dir = data.he_val_dir, data.ki67_val_dir
    if he_dir is None:
        root = write_sample_dataset(run_dir / "sample_data", data.sample_train_tiles, data.sample_val_tiles,
                                    data.sample_tile_size, seed=config.train.seed)
        he_dir, ki67_dir = root / "he" / "train", root / "ki67" / "train"
        he_val_dir, ki67_val_dir = root / "he" / "val", root / "ki67" / "val"
    index = lambda folder, name: index_domain(folder, name, data.tile_size, data.tile_overlap,  # noqa: E731
                                              data.min_tissue, data.crop_size, run_dir / TILE_CACHE)
    he, ki67 = index(he_dir, f"--he-dir {he_dir}"), index(ki67_dir, f"--ki67-dir {ki67_dir}")
    if (he_val_dir is None) != (ki67_val_dir is None):
        raise ConfigError("--he-val-dir and --ki67-val-dir must be given together")
    if he_val_dir is not None:
        he_val = index(he_val_dir, f"--he-val-dir {he_val_dir}")
        ki67_val = index(ki67_val_dir, f"--ki67-val-dir {ki67_val_dir}")
    else:
        he, he_val = split_validation(he, data.val_fraction, config.train.seed)
        ki67, ki67_val = split_validation(ki67, data.val_fraction, config.train.seed + 1)
    return he, ki67, he_val, ki67_val


def run_training(config: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> TrainingResult:
    """Train (or resume) a run as configured; returns where everything went.

    With ``--distribute multiworker`` every worker of the cluster calls this with
    the same configuration. The chief writes the run directory (which must be on
    storage shared by all workers); the other workers read its checkpoints and
    write their share of each checkpoint (every worker takes part in saving) and
    their logs to a temporary folder, removed at the end. A run directory that
    holds checkpoints is resumed without ``resume`` (so relaunching the same
    command after a lost worker continues from the last checkpoint), unless
    ``overwrite``.

    Raises:
        ConfigError: invalid options, or a run directory that already holds
            checkpoints without ``resume``/``overwrite``.
        FileNotFoundError: ``resume`` without a checkpoint.
        DataError: missing, empty or unusable data folders (before any model is built).
        TrainingDivergedError: non-finite losses or weights (the last finite checkpoint and
            the export are left as they were).
    """
    multiworker = config.train.distribute == "multiworker"
    if multiworker:
        validate_config(config)  # the option errors before waiting for the cluster
    strategy = select_strategy(config.train.distribute)  # first: the multi-worker strategy needs a fresh TensorFlow
    chief = is_chief(strategy)
    run_dir = config.run_dir
    checkpoint_dir = run_dir / "checkpoints"
    has_checkpoint = bool(list_checkpoints(checkpoint_dir))
    if resume and not has_checkpoint:
        raise FileNotFoundError(f"--resume: no checkpoint in {checkpoint_dir}")
    if has_checkpoint and not resume and not overwrite and multiworker:
        logger.info("%s holds checkpoints: resuming the multi-worker run from the latest", checkpoint_dir)
        resume = True
    if has_checkpoint and not resume:
        if not overwrite:
            raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                              "--overwrite to start again, or choose another --out/--name")
        if chief:
            for sub in ("checkpoints", "logs", "samples", "export"):
                shutil.rmtree(run_dir / sub, ignore_errors=True)
            (run_dir / "history.csv").unlink(missing_ok=True)

    replicas = strategy.num_replicas_in_sync
    validate_config(config, num_replicas=replicas)
    if chief:
        write_dir = run_dir
        remove_orphaned_temporaries(run_dir)  # images of a killed earlier run
        remove_tile_cache(run_dir / TILE_CACHE)  # of a crashed earlier run
    else:
        task = strategy.cluster_resolver
        write_dir = Path(tempfile.mkdtemp(prefix=f"virtual_ihc_{task.task_type}{task.task_id}_"))
        logger.info("%s %d: the chief writes %s; this worker's share of the checkpoints and its logs go to %s "
                    "(removed at the end)", task.task_type, task.task_id, run_dir, write_dir)
    try:
        return _train(config, strategy, chief, write_dir, resume)
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)


def _train(config: ExperimentConfig, strategy: tf.distribute.Strategy, chief: bool, write_dir: Path,
           resume: bool) -> TrainingResult:
    """:func:`run_training` after the strategy and the run directory are settled.

    Reads checkpoints from the run directory, writes everything to ``write_dir``
    (the run directory itself, except on non-chief workers), exports on the chief only.
    """
    run_dir = config.run_dir
    write_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.train.seed)
    replicas = strategy.num_replicas_in_sync
    multiworker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

    he, ki67, he_val, ki67_val = resolve_domains(config, write_dir)
    train = config.train
    steps_per_epoch = train.steps_per_epoch or default_steps_per_epoch(he, ki67, train.batch_size)
    config.train.steps_per_epoch = steps_per_epoch
    config.save(write_dir / "config.json")

    with strategy.scope():
        model = build_cycle_gan(config)
        compile_cycle_gan(model, config, steps_per_epoch)
        manager = CheckpointManager(run_dir / "checkpoints", model, keep=train.keep_checkpoints,
                                    save_directory=write_dir / "checkpoints")
    initial_epoch = manager.restore() if resume else 0
    if resume and chief:
        reconcile_history(run_dir / "history.csv", run_dir / "checkpoints", initial_epoch)
    if initial_epoch >= train.epochs:
        logger.warning("run already has %d epochs (asked for %d): nothing to train", initial_epoch, train.epochs)
    start_element = int(model.next_element.numpy())
    if initial_epoch and not start_element:  # a checkpoint from before the position was recorded
        start_element = initial_epoch * steps_per_epoch * train.batch_size
    if multiworker:
        check_workers_agree(strategy, {"restored epoch": initial_epoch, "next element": start_element,
                                       "epochs": train.epochs, "steps per epoch": steps_per_epoch,
                                       "batch size": train.batch_size})

    failures = DecodeFailures()
    crop = config.data.crop_size
    make_train = functools.partial(make_train_dataset, he, ki67, train.batch_size, crop, train.seed,
                                   config.data.augment, start_element=start_element, failures=failures)
    val_he, val_ki67 = load_validation_tiles(he_val, ki67_val, crop, config.data.max_val_tiles, failures)
    if multiworker:  # one input pipeline per worker, each with its share of the files and of the global batch
        train_dataset = strategy.distribute_datasets_from_function(
            lambda context: make_train(input_context=context))
        # every worker validates on all tiles (the metrics are averaged over the workers)
        val_dataset = strategy.distribute_datasets_from_function(
            lambda context: make_validation_dataset(val_he, val_ki67,
                                                    context.get_per_replica_batch_size(train.batch_size)))
    else:
        train_dataset = make_train()
        val_dataset = make_validation_dataset(val_he, val_ki67, train.batch_size)
    samples = [uint8_to_unit(tiles[:train.sample_images]).numpy() for tiles in (val_he, val_ki67)]
    guard = PathologyGuard(val_he, val_ki67) if train.pathology_guard else None
    callbacks = [
        LearningRateLogger(model.generator_optimizer),
        *([guard] if guard is not None else []),
        EpochCheckpoint(manager),
        SampleImages(*samples, write_dir / "samples", write_dir / "logs"),
        keras.callbacks.CSVLogger(str(write_dir / "history.csv"), append=resume),
        keras.callbacks.TensorBoard(log_dir=str(write_dir / "logs"), write_graph=False),
        DecodeFailureReport(failures),
    ]
    if progress_mode(train.verbose):
        callbacks.append(ProgressDisplay(progress_mode(train.verbose), train.epochs, steps_per_epoch))
    with without_remapper():
        history = model.fit(train_dataset, epochs=train.epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps_per_epoch, validation_data=val_dataset,
                            callbacks=callbacks, verbose=0, shuffle=False)
    remove_tile_cache(write_dir / TILE_CACHE)
    if manager.refused:
        raise TrainingDivergedError(manager.refused)
    exports = {}
    if train.export and chief:
        exports = export_generators({"he_to_ki67": model.generator_he_to_ki67,
                                     "ki67_to_he": model.generator_ki67_to_he}, run_dir / "export",
                                    tile_size=crop, mpp=config.data.mpp, precision=train.export_precision)
    skipped = {**he.skipped, **ki67.skipped, **he_val.skipped, **ki67_val.skipped}
    return TrainingResult(run_dir=run_dir, epochs_completed=max(initial_epoch, train.epochs),
                          steps_per_epoch=steps_per_epoch, history=history.history, exports=exports,
                          skipped_files=skipped, decode_failures=failures.count, replicas=replicas,
                          consistency=guard.summary if guard is not None else None,
                          flagged_epochs=guard.flagged_epochs if guard is not None else {}, model=model)
