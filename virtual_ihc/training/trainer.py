"""One training run, from a resolved ``ExperimentConfig`` to a run directory.

Run directory layout::

    config.json                 the full resolved configuration
    checkpoints/epoch_NNN/      atomic checkpoints (networks, optimizers, pools, epoch)
    logs/                       TensorBoard scalars (train/, validation/) and sample images (images/)
    samples/epoch_NNN.png       real H&E | virtual Ki-67 | reconstructed H&E, and the reverse row
    history.csv                 per-epoch losses, validation metrics and learning rate
    export/he_to_ki67/          SavedModel, uint8 serving_default signature (and ki67_to_he/)
    export/generator_*.keras    both generators as Keras files
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from virtual_ihc.config import ConfigError, ExperimentConfig, validate_config
from virtual_ihc.data.pipeline import (DecodeFailures, DomainIndex, default_steps_per_epoch, index_domain,
                                       load_validation_tiles, make_train_dataset, make_validation_dataset,
                                       remove_tile_cache, split_validation)
from virtual_ihc.io.images import remove_orphaned_temporaries
from virtual_ihc.data.synthetic import write_sample_dataset
from virtual_ihc.export import export_generators
from virtual_ihc.pixels import uint8_to_unit
from virtual_ihc.models import CycleGAN, build_patchgan_discriminator, build_resnet_generator
from virtual_ihc.training.callbacks import (DecodeFailureReport, EpochCheckpoint, LearningRateLogger, ProgressDisplay,
                                           SampleImages, progress_mode)
from virtual_ihc.training.checkpoints import CheckpointManager, list_checkpoints
from virtual_ihc.training.guard import PathologyGuard
from virtual_ihc.training.history import reconcile_history
from virtual_ihc.training.schedules import build_learning_rate_schedule, on_step_counter

logger = logging.getLogger(__name__)

#: decoded copies of large images for region reads while training (removed at the end of a run)
TILE_CACHE = ".tile_cache"


class TrainingDivergedError(RuntimeError):
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


def select_strategy(mode: str) -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy over all GPUs when more than one is visible, else the default.

    ``mirrored`` forces MirroredStrategy over all GPUs, or over all logical CPU
    devices when there is no GPU (what the multi-replica tests use).
    ``multiworker``: :func:`multi_worker_strategy` (call before TensorFlow initialises its devices).
    """
    if mode == "multiworker":
        return multi_worker_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if mode == "none" or (mode == "auto" and len(gpus) <= 1):
        return tf.distribute.get_strategy()
    devices = [device.name for device in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


def multi_worker_strategy() -> tf.distribute.MultiWorkerMirroredStrategy:
    """``MultiWorkerMirroredStrategy`` over the cluster that ``TF_CONFIG`` describes.

    ``TF_CONFIG`` is the standard cluster spec (set by TFJob, Vertex AI, or a
    SLURM script: docs/distributed.md), e.g.
    ``{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}``.
    Every worker uses its GPUs (or its CPU); the call waits until all workers are up.

    Raises:
        ConfigError: ``TF_CONFIG`` missing or malformed, or TensorFlow already initialised in this process.
    """
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        raise ConfigError("--distribute multiworker: the TF_CONFIG environment variable is not set; it names the "
                          'workers and this one\'s task, e.g. {"cluster": {"worker": ["host0:12345", '
                          '"host1:12345"]}, "task": {"type": "worker", "index": 0}} (docs/distributed.md)')
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--distribute multiworker: TF_CONFIG is not valid JSON ({error}): {raw!r}") from error
    cluster, task = (spec.get("cluster"), spec.get("task")) if isinstance(spec, dict) else (None, None)
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise ConfigError(f"--distribute multiworker: TF_CONFIG has no cluster with 'worker' (or 'chief') tasks: {raw!r}")
    if not isinstance(task, dict) or task.get("type") not in cluster or \
            not 0 <= int(task.get("index", -1)) < len(cluster[task["type"]]):
        raise ConfigError(f"--distribute multiworker: TF_CONFIG's task must name a type and an index of its "
                          f"cluster: {raw!r}")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:  # collective ops must be configured before the eager context starts
        raise ConfigError(f"--distribute multiworker must start in a fresh process, before TensorFlow runs "
                          f"anything: {error}") from error


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs: the ``chief`` task, else worker 0 (always true off a cluster)."""
    resolver = strategy.cluster_resolver
    if resolver is None or resolver.task_type is None:
        return True
    jobs = resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in jobs)


def check_workers_agree(strategy: tf.distribute.Strategy, values: dict[str, int]) -> None:
    """Raise unless every worker of a multi-worker run holds the same ``values`` (epochs, steps, position).

    Workers that disagree would issue different numbers of collective operations and hang; this
    catches, e.g., a run directory that is not shared (only the chief would find the checkpoints).
    """
    local = tf.constant([list(values.values())], tf.int64)
    gathered = strategy.gather(strategy.experimental_distribute_values_from_function(lambda context: local),
                               axis=0).numpy()
    if (gathered != gathered[:1]).any():
        rows = "; ".join(f"replica {number}: " + ", ".join(f"{key} {value}" for key, value in zip(values, row))
                         for number, row in enumerate(gathered.tolist()))
        raise ConfigError(f"the workers disagree ({rows}): every worker must run the same command on a run "
                          "directory shared by all of them (docs/distributed.md)")


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


def load_generators(run_dir: str | Path, epoch: int | None = None) -> dict[str, keras.Model]:
    """Rebuild both generators of a run from ``config.json`` and a checkpoint (default: the latest).

    Returns ``{"he_to_ki67": model, "ki67_to_he": model}``.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.json)")
    config = ExperimentConfig.load(config_path)
    generators = {"he_to_ki67": build_resnet_generator(config.generator, "generator_he_to_ki67"),
                  "ki67_to_he": build_resnet_generator(config.generator, "generator_ki67_to_he")}
    checkpoints = dict(list_checkpoints(run_dir / "checkpoints"))
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'}")
    if epoch is None:
        epoch = max(checkpoints)
    if epoch not in checkpoints:
        raise FileNotFoundError(f"{run_dir}: no checkpoint for epoch {epoch} (have {sorted(checkpoints)})")
    checkpoint = tf.train.Checkpoint(generator_he_to_ki67=generators["he_to_ki67"],
                                     generator_ki67_to_he=generators["ki67_to_he"])
    checkpoint.read(str(checkpoints[epoch])).expect_partial()
    return generators
