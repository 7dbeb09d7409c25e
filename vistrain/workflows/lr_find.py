"""``lr_find``: the learning-rate range test with the training settings (``vistrain lr-find``;
see :func:`vistrain.training.lrfind.run_range_test`, the same test as ``check``'s lr-finder).

Example:
    >>> import vistrain
    >>> res = vistrain.lr_find("examples/fashion-mnist-small", out="lr.png")  # doctest: +SKIP
    >>> f"{res['suggestion']:.1e}"                                            # doctest: +SKIP
    '3.0e-03'
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vistrain import fsutil
from vistrain.training.lrfind import check_range, plot_lr_find, run_range_test
from vistrain.workflows.check import prepare
from vistrain.workflows.common import make_config
from vistrain.workflows.logs import show_log_lines


def lr_find(data: str | Path | None = None, /, *, steps: int = 100, start_lr: float = 1e-7,
            end_lr: float = 10.0, out: str | Path | None = None, config=None,
            progress: bool = True, overwrite: bool = False, **settings: Any) -> dict:
    """Exponential ramp of the learning rate from ``start_lr`` to ``end_lr`` over ``steps``
    steps on the training part, model and data set up exactly as ``train`` would (``config`` and
    ``settings`` as for :func:`vistrain.train`); nothing is trained for real.

    Returns the dict of :func:`vistrain.training.lrfind.run_range_test` (``lrs``, ``losses``,
    ``suggestion``, ``min_div_10``, ``diverged_at``, ``method``, ``trained_as``,
    ``configured_lr``); with ``out`` (a PNG path) also the plot there and ``plot``, its path
    (never inside the data; an existing file replaced only when vistrain wrote it or with
    ``overwrite``: :func:`vistrain.fsutil.check_output_file`, checked before any work).

    Example:
        >>> import vistrain
        >>> res = vistrain.lr_find("data", model="resnet18", strategy="finetune", steps=50)  # doctest: +SKIP
        >>> 1e-7 <= res["suggestion"] <= 10                                                # doctest: +SKIP
        True
    """
    show_log_lines()
    check_range(steps, start_lr, end_lr)
    cfg = make_config(data, config, settings)
    if out is not None:
        fsutil.check_output_file(out, data_folders=[cfg.data.root], overwrite=overwrite)
    result = run_range_test(prepare(cfg, progress=progress), steps=steps, start_lr=start_lr,
                            end_lr=end_lr)
    if out is not None:
        fsutil.write_owned_png(out, lambda tmp: plot_lr_find(result, tmp))
        result["plot"] = str(Path(out).resolve())
    return result

