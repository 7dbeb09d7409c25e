"""Optional metric loggers chosen in the config's ``logging`` section.

* ``csv`` (default on): ``metrics.csv`` in the run directory, one row per epoch with the columns of
  ``history.json`` (epoch, train/val loss and accuracy, lr, seconds).
* ``tensorboard``: event files under ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR``).
  TensorBoard is not a dependency of vistrain: it is imported lazily and a missing install is
  reported by :func:`check_logging` *before* training starts, with the fix.

Both are written from the epoch history (after training, or per epoch through
:meth:`EpochLoggers.log_epoch`, usable as a callback).

Example:
    >>> import tempfile, pathlib
    >>> from vistrain.config import LoggingConfig
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> [p.name for p in write_logs(d, LoggingConfig(csv=True), [{"epoch": 1, "train_loss": 0.5}])]
    ['metrics.csv']
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from vistrain.errors import VistrainError
from vistrain.fsutil import atomic_write_text

FIRST_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise VistrainError("logging.tensorboard is on but TensorBoard is not installed "
                            f"({err}); install it with `pip install tensorboard` or set "
                            "logging.tensorboard=false (--set logging.tensorboard=false)") from None
    return SummaryWriter


def check_logging(logging_cfg) -> None:
    """Fail fast (before training) when a configured logger cannot work."""
    if getattr(logging_cfg, "tensorboard", False):
        _summary_writer()


class EpochLoggers:
    """CSV and/or TensorBoard writers for one run; ``log_epoch(row)`` appends one epoch."""

    def __init__(self, run_dir: str | Path, logging_cfg):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv" if getattr(logging_cfg, "csv", False) else None
        self.tb = None
        if getattr(logging_cfg, "tensorboard", False):
            self.tb = _summary_writer()(log_dir=str(self.run_dir / "tensorboard"))
        self._rows: list[dict] = []

    def log_epoch(self, row: dict) -> None:
        self._rows.append(dict(row))
        if self.csv_path is not None:
            self._write_csv()
        if self.tb is not None:
            step = int(row.get("epoch", len(self._rows)))
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    part, _, metric = key.partition("_")
                    tag = f"{metric}/{part}" if part in ("train", "val") and metric else key
                    self.tb.add_scalar(tag, float(value), step)
            self.tb.flush()

    def _write_csv(self) -> None:
        keys = [k for k in FIRST_COLUMNS if any(k in r for r in self._rows)]
        keys += sorted({k for r in self._rows for k in r} - set(keys))
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=keys, restval="")
        w.writeheader()
        w.writerows(self._rows)
        atomic_write_text(self.csv_path, text.getvalue())

    def paths(self) -> list[Path]:
        out = [self.csv_path] if self.csv_path is not None else []
        return out + ([self.run_dir / "tensorboard"] if self.tb is not None else [])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def write_logs(run_dir: str | Path, logging_cfg, history: list[dict]) -> list[Path]:
    """Write every configured log from a finished run's history; returns what was written."""
    loggers = EpochLoggers(run_dir, logging_cfg)
    try:
        for row in history:
            loggers.log_epoch(row)
    finally:
        loggers.close()
    return loggers.paths() if history else []
