"""The one set of figure helpers of vistrain: matplotlib figures to PNG files, PNG bytes, data URIs.

Figures are ``matplotlib.figure.Figure`` objects on their own Agg canvas, never ``pyplot``: no
global figure registry to leak, no backend switched in the caller's notebook, safe in threads.
Every picture of a self-contained page (report.html, compare.html) is embedded through
:func:`png_data_uri`.

Example:
    >>> fig = new_figure((2, 2))
    >>> _ = fig.subplots().plot([0, 1], [1, 0])
    >>> data = figure_png(fig)
    >>> data[:4], png_data_uri(data)[:22]
    (b'\\x89PNG', 'data:image/png;base64,')
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from vistrain.fsutil import atomic_path


def new_figure(figsize: tuple[float, float], *, layout: str | None = "constrained"):
    """A ``Figure`` of ``figsize`` inches (width, height) on its own Agg canvas."""
    # lazy: matplotlib costs ~0.3 s to import and most commands draw nothing
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig, dpi: int = 90, **savefig) -> bytes:
    """The PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, **savefig)
    return buf.getvalue()


def save_figure(fig, path, dpi: int = 100, **savefig) -> Path:
    """Write ``fig`` to ``path`` (format by suffix; parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    savefig.setdefault("format", path.suffix.lstrip(".") or "png")  # the temporary name has no suffix
    with atomic_path(path) as tmp:  # a full disk leaves no truncated PNG
        fig.savefig(tmp, dpi=dpi, **savefig)
    return path


def array_png(pixels) -> bytes:
    """The PNG bytes of a uint8 image, ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``."""
    a = np.asarray(pixels)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def png_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...``: PNG bytes as a URI an ``<img src>`` takes, no file needed."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
