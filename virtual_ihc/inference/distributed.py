"""Staining many slides on a Dask cluster: one slide per task (``virtual-ihc stain --workers N``).

The client submits one :func:`stain_task` per input to a ``dask.distributed``
cluster (a ``LocalCluster`` of worker processes, or an existing scheduler that
SLURM/PBS jobs from dask-jobqueue, Kubernetes or ``dask worker`` commands feed).
A worker runs :func:`~virtual_ihc.inference.whole_slide.stain_file` exactly as
the single-process command does, so outputs, the ``.partial`` state and
``--resume`` are the same; the SavedModel is loaded once per worker process
(:func:`worker_model`) and reused by every slide that worker stains.

A task that raises is submitted once more (``retries``, default 1); a slide
that fails every attempt is reported with its errors and does not stop the
others. Inputs, outputs and the model must be at the same paths on every
worker (a shared file system).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Callable

from virtual_ihc.histology.normalization import StainNormalizer
from virtual_ihc.inference.model import StainModel
from virtual_ihc.inference.whole_slide import StainOptions, StainResult, already_stained, stain_file

logger = logging.getLogger(__name__)

#: attempts after the first for a slide whose task raised
RETRIES = 1
#: TensorFlow reads its intra-op thread count from this variable when it starts
TF_THREADS_VARIABLE = "TF_NUM_INTRAOP_THREADS"

_models: dict[tuple[str, str, str | None], StainModel] = {}
_models_lock = threading.Lock()


def worker_model(model_path: str, direction: str, precision: str | None = None) -> tuple[StainModel, bool]:
    """The worker process's :class:`StainModel` for ``model_path``, loaded on first use.

    Returns:
        ``(model, loaded)``: ``loaded`` is true when this call loaded it.
    """
    key = (model_path, direction, precision)
    with _models_lock:  # a worker with several threads loads each model once
        if key in _models:
            return _models[key], False
        _models[key] = StainModel(model_path, direction, precision)
        return _models[key], True


def _worker_name() -> str:
    from distributed import get_worker

    try:
        return str(get_worker().name)
    except ValueError:  # called outside a worker (in-process use)
        return f"pid {os.getpid()}"


@dataclasses.dataclass
class TaskResult:
    """What one :func:`stain_task` returns to the client."""

    result: StainResult
    worker: str
    model_loaded: bool


def stain_task(input_path: Path, output_path: Path, model_path: str, direction: str, precision: str | None,
               options: StainOptions, normalizer: StainNormalizer | None) -> TaskResult:
    """Stain one slide on a worker (runs in the worker process)."""
    model, loaded = worker_model(model_path, direction, precision)
    result = stain_file(input_path, output_path, model, options, normalizer)
    return TaskResult(result, _worker_name(), loaded)


@dataclasses.dataclass
class SlideReport:
    """One input's outcome on the cluster.

    Attributes:
        result: the last successful attempt's result (``None`` if every attempt failed).
        worker: name of the worker that ran the last attempt.
        attempts: tasks run for this input (0 when skipped before submitting).
        errors: ``"Type: message"`` of each failed attempt.
        model_loaded: the successful attempt loaded the model (first slide on its worker).
    """

    input: Path
    output: Path
    result: StainResult | None = None
    worker: str = ""
    attempts: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    model_loaded: bool = False

    @property
    def failed(self) -> bool:
        return self.result is None

    @property
    def skipped(self) -> bool:
        return self.result is not None and self.result.skipped


def stain_on_cluster(client, jobs: list[tuple[Path, Path]], model_path: str | os.PathLike, direction: str,
                     options: StainOptions, normalizer: StainNormalizer | None = None, precision: str | None = None,
                     retries: int = RETRIES,
                     on_report: Callable[[SlideReport], None] | None = None) -> list[SlideReport]:
    """Stain ``jobs`` (``(input, output)`` pairs) with one task per slide on ``client``'s cluster.

    With ``options.resume``, outputs that exist are reported as skipped without a
    task, and unfinished slides continue from their ``.partial`` state.

    Args:
        client: a connected ``distributed.Client``.
        model_path: SavedModel or run folder, readable at this path on every worker.
        precision: what the model computes in (see :class:`StainModel`; ``None`` = the export's).
        retries: extra attempts for a slide whose task raised.
        on_report: called with each slide's report when it is final.

    Returns:
        One report per job, in the order of ``jobs``.
    """
    from distributed import as_completed

    model_path = str(Path(model_path).resolve())
    reports = [SlideReport(Path(i).resolve(), Path(o).resolve()) for i, o in jobs]
    run_token = uuid.uuid4().hex[:8]  # keys unique across runs sharing a scheduler

    def submit(index: int):
        report = reports[index]
        report.attempts += 1
        return client.submit(stain_task, report.input, report.output, model_path, direction, precision, options,
                             normalizer,
                             key=f"stain-{report.input.name}-{run_token}-{report.attempts}", pure=False)

    futures = {}
    for index, report in enumerate(reports):
        if already_stained(report.output, options):
            report.result = StainResult(report.input, report.output, skipped=True)
            if on_report is not None:
                on_report(report)
            continue
        futures[submit(index)] = index
    completed = as_completed(list(futures))
    for future in completed:
        index = futures.pop(future)
        report = reports[index]
        try:
            task = future.result()
        except Exception as error:  # the task's own exception, re-raised here; or KilledWorker, CancelledError
            report.errors.append(f"{type(error).__name__}: {error}")
            logger.warning("%s: attempt %d failed: %s", report.input.name, report.attempts, report.errors[-1])
            if report.attempts <= retries:
                retry = submit(index)
                futures[retry] = index
                completed.add(retry)
                continue
        else:
            report.result, report.worker, report.model_loaded = task.result, task.worker, task.model_loaded
        if on_report is not None:
            on_report(report)
    return reports


def local_cluster(workers: int):
    """A ``LocalCluster`` of ``workers`` processes with one task thread each (dashboard on a free port).

    Each worker's TensorFlow gets an equal share of this machine's cores
    (``TF_NUM_INTRAOP_THREADS``, unless that is set already) instead of all of them.
    """
    from distributed import LocalCluster

    threads = os.environ.get(TF_THREADS_VARIABLE) or str(max(1, len(os.sched_getaffinity(0)) // workers))
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                        env={TF_THREADS_VARIABLE: threads})


def format_table(reports: list[SlideReport], seconds: float) -> str:
    """The end-of-run table: one line per slide, then the totals."""
    header = ("slide", "status", "attempts", "worker", "tiles run", "seconds", "tiles/s")
    rows = []
    for report in reports:
        result = report.result
        if report.failed:
            status, tiles, secs, rate = "FAILED", "", "", ""
        elif report.skipped:
            status, tiles, secs, rate = "skipped (exists)", "", "", ""
        else:
            status = "done" + (f" (resumed after {result.rows_resumed} rows)" if result.rows_resumed else "")
            tiles, secs = f"{result.tiles_run}/{result.tiles_total}", f"{result.seconds:.1f}"
            rate = f"{result.tiles_run / result.seconds:.2f}" if result.seconds > 0 else ""
        rows.append((report.input.name, status, str(report.attempts), report.worker, tiles, secs, rate))
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    done = [report for report in reports if not report.failed and not report.skipped]
    failed = [report for report in reports if report.failed]
    tiles_run = sum(report.result.tiles_run for report in done)
    lines.append(f"{len(done)} stained, {sum(report.skipped for report in reports)} skipped, {len(failed)} failed "
                 f"of {len(reports)} in {seconds:.1f} s; {tiles_run} tiles, "
                 f"{tiles_run / seconds if seconds > 0 else 0.0:.2f} tiles/s overall")
    for report in failed:
        lines.append(f"{report.input.name}: FAILED after {report.attempts} attempts: {report.errors[-1]}")
    return "\n".join(lines)


def run_on_cluster(jobs: list[tuple[Path, Path]], model_path: str | os.PathLike, direction: str,
                   options: StainOptions, normalizer: StainNormalizer | None, precision: str | None = None,
                   workers: int | None = None, scheduler: str | None = None) -> list[SlideReport]:
    """Stain ``jobs`` on the cluster at ``scheduler``, or on a ``LocalCluster`` of ``workers`` started here."""
    from distributed import Client

    cluster = local_cluster(workers) if scheduler is None else None
    try:
        with Client(scheduler if scheduler is not None else cluster) as client:
            logger.info("dask scheduler %s, %d workers, dashboard %s", client.scheduler.address,
                        len(client.scheduler_info()["workers"]), client.dashboard_link)
            return stain_on_cluster(client, jobs, model_path, direction, options, normalizer, precision,
                                    on_report=_log_report)
    finally:
        if cluster is not None:
            cluster.close()


def _log_report(report: SlideReport) -> None:
    status = "FAILED" if report.failed else "skipped (exists)" if report.skipped else "done"
    logger.info("%s: %s after %d attempt(s)", report.input.name, status, report.attempts)
