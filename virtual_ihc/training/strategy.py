"""Where training runs: the ``tf.distribute`` strategy of ``--distribute`` and the multi-worker bookkeeping.

``auto``/``none``/``mirrored`` choose a strategy within one process; ``multiworker`` joins the
cluster that ``TF_CONFIG`` describes (docs/distributed.md). On a cluster, one process writes the
run (:func:`is_chief`), and every worker must agree on where training resumes
(:func:`check_workers_agree`), or their collective operations would hang.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from virtual_ihc.config import ConfigError


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
