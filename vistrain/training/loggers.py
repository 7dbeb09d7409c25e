"""Optional metric loggers chosen in the config's ``logging`` section.

* ``csv`` (default on): ``history.csv`` in the run directory (``metrics.csv`` in older runs), one
  row per epoch with the columns of ``history.json`` (epoch, train/val loss and accuracy, lr,
  seconds).
* ``track: [tensorboard]`` (``--track tensorboard``; ``logging.tensorboard=true`` is the same):
  event files under ``RUN_DIR/tensorboard`` (``tensorboard --logdir RUN_DIR``): the settings (config.yaml, as
  text), per-epoch and final val/test metrics.  ``track: [mlflow]``: see :mod:`vistrain.training.tracking`.
  Neither is a dependency of vistrain: each is imported where first needed and a missing install
  is reported by :func:`check_logging` *before* training starts, with the fix.

Both are written from the epoch history (after training, or per epoch through
:meth:`EpochLoggers.log_epoch`, usable as a callback).

Example:
    >>> import tempfile, pathlib
    >>> from vistrain.config import LoggingConfig
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> [p.name for p in write_logs(d, LoggingConfig(csv=True), [{"epoch": 1, "train_loss": 0.5}])]
    ['history.csv']
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from vistrain.errors import VistrainError
from vistrain.fsutil import atomic_write_text

HISTORY_CSV = "history.csv"
OLD_HISTORY_CSV = "metrics.csv"   # the name in runs written before history.csv
FIRST_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise VistrainError("logging.tensorboard is on but TensorBoard is not installed "
                            f"({err}); install it with `pip install tensorboard` or set "
                            "logging.tensorboard=false (--set logging.tensorboard=false)") from None
    return SummaryWriter


def trackers(logging_cfg) -> list[str]:
    """The experiment trackers ``logging_cfg`` asks for: ``logging.track``, plus ``tensorboard``
    for the older switch ``logging.tensorboard=true``.

    Example:
        >>> from vistrain.config import LoggingConfig
        >>> trackers(LoggingConfig(tensorboard=True, track=["mlflow"]))
        ['mlflow', 'tensorboard']
    """
    names = list(dict.fromkeys(getattr(logging_cfg, "track", None) or []))
    if getattr(logging_cfg, "tensorboard", False) and "tensorboard" not in names:
        names.append("tensorboard")
    return names


def check_logging(logging_cfg) -> None:
    """Fail fast (before training) when a configured logger cannot work."""
    wanted = trackers(logging_cfg)
    if "tensorboard" in wanted:
        _summary_writer()
    if "mlflow" in wanted:
        try:
            import mlflow  # noqa: F401  (optional: only to see that it is there)
        except ImportError as err:
            raise VistrainError(f"--track mlflow: MLflow is not installed ({err}); install it with "
                                "`pip install mlflow-skinny` or leave out --track mlflow") from None


def history_csv(run_dir: str | Path) -> Path:
    """The epoch history CSV of a run: ``history.csv``, or ``metrics.csv`` in an older run."""
    run_dir = Path(run_dir)
    old = run_dir / OLD_HISTORY_CSV
    return old if old.is_file() and not (run_dir / HISTORY_CSV).is_file() else run_dir / HISTORY_CSV


class EpochLoggers:
    """CSV and/or TensorBoard writers for one run; ``log_epoch(row)`` appends one epoch."""

    def __init__(self, run_dir: str | Path, logging_cfg):
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / HISTORY_CSV if getattr(logging_cfg, "csv", False) else None
        self.tb = None
        if "tensorboard" in trackers(logging_cfg):
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

    def log_final(self, metrics: dict, step: int) -> None:
        """The final metrics (``{"test": {"accuracy": ...}, ...}``, as metrics.json) at ``step``."""
        if self.tb is None:
            return
        for key, value in final_scalars(metrics).items():
            self.tb.add_scalar(key.replace("_", "/", 1), value, step)
        self.tb.flush()

    def log_params(self, config_yaml: str) -> None:
        """The run's settings (config.yaml) as TensorBoard text, shown under TEXT as ``config``."""
        if self.tb is None or not config_yaml:
            return
        # four-space indent: TensorBoard renders text as Markdown, where that keeps YAML a code block
        self.tb.add_text("config", "\n".join("    " + line for line in config_yaml.splitlines()), 0)
        self.tb.flush()

    def paths(self) -> list[Path]:
        out = [self.csv_path] if self.csv_path is not None else []
        return out + ([self.run_dir / "tensorboard"] if self.tb is not None else [])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def final_scalars(metrics: dict) -> dict[str, float]:
    """``{"test_accuracy": 0.84, "test_macro_f1": ...}``: the numbers at the top level of each
    part of metrics.json (nested tables, per-class rows and curves left out).

    Example:
        >>> final_scalars({"test": {"accuracy": 0.5, "n_samples": 4, "per_class": {}}})
        {'test_accuracy': 0.5, 'test_n_samples': 4.0}
    """
    return {f"{part}_{key}": float(value) for part, values in metrics.items() if isinstance(values, dict)
            for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def write_logs(run_dir: str | Path, logging_cfg, history: list[dict],
               metrics: dict | None = None) -> list[Path]:
    """Write every configured log from a finished run's history (and its final ``metrics``, as
    metrics.json holds them); returns what was written."""
    loggers = EpochLoggers(run_dir, logging_cfg)
    try:
        config = Path(run_dir) / "config.yaml"
        loggers.log_params(config.read_text() if config.is_file() else "")
        for row in history:
            loggers.log_epoch(row)
        if metrics:
            loggers.log_final(metrics, step=len(history))
    finally:
        loggers.close()
    return loggers.paths() if history else []
