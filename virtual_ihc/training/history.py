"""``history.csv``: one row per epoch, kept consistent with the checkpoints on ``--resume``.

Keras' ``CSVLogger`` appends a row after the epoch's checkpoint is written, so a
run killed in between has a checkpoint without its row, and a run stopped for
divergence has a row without a checkpoint. :func:`reconcile_history` fixes both
before a resumed run appends: rows of epochs after the restored checkpoint are
dropped, and missing rows are rebuilt from the logs saved with each checkpoint.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from virtual_ihc.io.images import write_csv_rows
from virtual_ihc.training.checkpoints import list_checkpoints, read_checkpoint_logs

logger = logging.getLogger(__name__)


def reconcile_history(history_path: str | Path, checkpoint_dir: str | Path, restored_epoch: int) -> None:
    """Make ``history.csv`` hold exactly one row per epoch up to ``restored_epoch`` where it can.

    Rows are keyed by Keras' 0-based ``epoch`` column (row ``e`` = checkpoint ``epoch_{e+1}``).
    """
    history_path = Path(history_path)
    rows: list[dict] = []
    fieldnames: list[str] = []
    if history_path.is_file():
        with open(history_path, newline="") as handle:
            reader = csv.DictReader(handle)
            fieldnames = list(reader.fieldnames or [])
            rows = list(reader)
    kept = [row for row in rows if int(row["epoch"]) < restored_epoch]
    present = {int(row["epoch"]) for row in kept}
    rebuilt = []
    for epoch, prefix in list_checkpoints(checkpoint_dir):
        logs = read_checkpoint_logs(prefix)
        if epoch <= restored_epoch and epoch - 1 not in present and logs is not None:
            fieldnames = fieldnames or ["epoch"] + sorted(logs)
            rebuilt.append({"epoch": epoch - 1, **{key: logs.get(key, "NA") for key in fieldnames[1:]}})
    dropped = len(rows) - len(kept)
    if not dropped and not rebuilt:
        return
    write_csv_rows(history_path, sorted(kept + rebuilt, key=lambda row: int(row["epoch"])), fieldnames)
    logger.info("%s: %d row(s) after epoch %d dropped, %d rebuilt from the checkpoints' logs", history_path,
                dropped, restored_epoch, len(rebuilt))
