"""Progress bars that appear only where a person watches: a terminal or a notebook.

When stderr is redirected to a file or a pipe (CI logs, ``nohup``, ``2> log``), a tqdm bar writes
carriage-return debris; there, vistrain shows no bar and relies on its per-epoch log lines.
``VISTRAIN_PROGRESS=1`` forces bars on, ``VISTRAIN_PROGRESS=0`` forces them off.

Example:
    >>> from vistrain.progress import progress_bar
    >>> sum(progress_bar(range(3), desc="counting", enabled=False))
    3
"""
from __future__ import annotations

import os
import sys
import time

from tqdm.auto import tqdm


def in_notebook() -> bool:
    """True inside a Jupyter/IPython kernel (where tqdm.auto draws a widget bar)."""
    shell = sys.modules.get("IPython")
    try:
        ip = shell.get_ipython() if shell is not None else None
    except Exception:  # an IPython too old or half-initialised: treat as no notebook
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def bars_wanted() -> bool:
    """Whether bars may be drawn in this process at all (environment, terminal, notebook)."""
    forced = os.environ.get("VISTRAIN_PROGRESS", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr
    return in_notebook() or bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A ``tqdm`` bar when ``enabled`` and :func:`bars_wanted`, else a silent pass-through."""
    return tqdm(iterable, disable=not (enabled and bars_wanted()), **kwargs)


LOG_EVERY_S = 30.0  # where no bar is drawn: one progress line within an epoch this often


def _duration(seconds: float) -> str:
    """``"1:05:09"`` or ``"4:05"``: a time span as a clock shows it.

    Example:
        >>> _duration(245), _duration(3909)
        ('4:05', '1:05:09')
    """
    s = int(round(max(seconds, 0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class EpochProgress:
    """The progress of one training epoch over ``batches`` (``len(batches)`` of them): a bar with
    the running loss and the whole run's ETA (this epoch's rest plus ``epochs_after`` epochs like
    it) on a terminal or in a notebook; elsewhere (a log file, CI) one ``log`` line every
    ``log_every_s`` seconds: batch i/n, loss, images/s, ETA.  Call :meth:`step` after each batch.

    Example:
        >>> lines = []
        >>> p = EpochProgress(range(4), desc="epoch 1/2", enabled=False, epochs_after=1,
        ...                   log=lines.append, log_every_s=0)
        >>> for batch in p:
        ...     p.step(loss=0.5, images=8)
        >>> lines[-1].split(" img/s")[0].rsplit(", ", 1)[0]
        'epoch 1/2: batch 4/4, loss 0.5000'
    """

    def __init__(self, batches, *, desc: str, enabled: bool = True, epochs_after: int = 0,
                 log=None, log_every_s: float | None = None, done: int = 0):
        self.total = len(batches) if hasattr(batches, "__len__") else None
        self.drawn = enabled and bars_wanted()
        self.bar = tqdm(batches, desc=desc, leave=False, disable=not self.drawn,
                        total=None if self.total is None else self.total - done)
        self.desc, self.epochs_after, self.log = desc, epochs_after, log
        self.log_every_s = LOG_EVERY_S if log_every_s is None else log_every_s
        self.done, self.images, self.loss_sum = done, 0, 0.0
        self.start = self.last_line = time.perf_counter()
        self.done_at_start = done

    def __iter__(self):
        return iter(self.bar)

    def step(self, *, loss: float, images: int) -> None:
        """One batch of ``images`` done, with mean ``loss``."""
        self.done += 1
        self.images += images
        self.loss_sum += loss * images
        now = time.perf_counter()
        if self.drawn:
            # drawn with the bar's next refresh, and always after the epoch's last batch
            last = self.total is not None and self.done >= self.total
            self.bar.set_postfix_str(f"loss {self.mean_loss:.4f}, run ETA {self.eta(now)}", refresh=last)
        elif self.log is not None and now - self.last_line >= self.log_every_s:
            self.last_line = now
            self.log(self.line(now))

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(self.images, 1)

    def eta(self, now: float) -> str:
        """Time left in the whole run: this epoch's rest plus ``epochs_after`` epochs as long."""
        batches = self.done - self.done_at_start
        if not batches or self.total is None:
            return "?"
        per_batch = (now - self.start) / batches
        return _duration(per_batch * ((self.total - self.done) + self.epochs_after * self.total))

    def line(self, now: float) -> str:
        """``epoch 2/5: batch 40/120, loss 0.4121, 61.3 img/s, run ETA 12:40``."""
        rate = self.images / max(now - self.start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        return (f"{self.desc}: batch {self.done}{of}, loss {self.mean_loss:.4f}, {rate:.1f} img/s, "
                f"run ETA {self.eta(now)}")

    def close(self) -> None:
        self.bar.close()
