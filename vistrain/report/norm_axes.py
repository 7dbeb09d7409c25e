"""The classic "which axes does each normalization average over" figure (Wu & He 2018, Fig. 2).

Each panel is the ``(N, C, H*W)`` batch drawn as a box of cells (C across, H*W up, N in depth);
the shaded cells are the elements that share one mean and variance.  The shaded sets come from
:data:`vistrain.models.norms.NORM_AXES`, so the figure cannot drift from the code.

Example:
    >>> import tempfile, pathlib
    >>> from vistrain.report.norm_axes import plot_norm_axes
    >>> path = plot_norm_axes(pathlib.Path(tempfile.mkdtemp()) / "norm_axes.png")
    >>> path.stat().st_size > 0
    True
"""
from __future__ import annotations

from pathlib import Path

from vistrain.evaluation.png import new_figure, save_figure
from vistrain.models.norms import NORM_AXES

PANELS = (("batch", "Batch Norm"), ("layer", "Layer Norm"), ("instance", "Instance Norm"),
          ("group", "Group Norm"))
SIZES = {"N": 4, "C": 6, "S": 5}       # cells drawn along N, C and H*W (S)
GROUP = (2, 4)                         # the channels [2, 4) of the group drawn shaded
DEPTH = (0.45, 0.35)                   # oblique projection: one step in N moves (x, y) by this


def shaded_box(norm: str) -> dict[str, tuple[int, int]]:
    """The ``[start, stop)`` range per axis (N, C, S) that one statistic of ``norm`` covers.

    Example:
        >>> shaded_box("batch")
        {'N': (0, 4), 'C': (1, 2), 'S': (0, 5)}
    """
    axes = NORM_AXES[norm]
    return {"N": (0, SIZES["N"]) if "N" in axes else (0, 1),
            "C": (0, SIZES["C"]) if "C" in axes else GROUP if "C/G" in axes else (1, 2),
            "S": (0, SIZES["S"]) if "H" in axes else (0, 1)}


def _point(c: float, s: float, n: float) -> tuple[float, float]:
    return c + n * DEPTH[0], s + n * DEPTH[1]


def _draw_box(ax, box: dict[str, tuple[int, int]]) -> None:
    """Draw the three visible faces (front n=0, top s=S, right c=C) cell by cell."""
    from matplotlib.patches import Polygon  # lazy: matplotlib is heavy and only drawing needs it
    n_max, c_max, s_max = SIZES["N"], SIZES["C"], SIZES["S"]

    def inside(axis, i):
        return box[axis][0] <= i < box[axis][1]

    def cell(corners, shaded):
        ax.add_patch(Polygon([_point(*p) for p in corners], closed=True, linewidth=0.6,
                             edgecolor="black", facecolor="#4a90d9" if shaded else "#f2f2f2"))

    for c in range(c_max):
        for s in range(s_max):         # front face, n = 0
            cell([(c, s, 0), (c + 1, s, 0), (c + 1, s + 1, 0), (c, s + 1, 0)],
                 inside("N", 0) and inside("C", c) and inside("S", s))
        for n in range(n_max):         # top face, s = S
            cell([(c, s_max, n), (c + 1, s_max, n), (c + 1, s_max, n + 1), (c, s_max, n + 1)],
                 inside("S", s_max - 1) and inside("C", c) and inside("N", n))
    for n in range(n_max):             # right face, c = C
        for s in range(s_max):
            cell([(c_max, s, n), (c_max, s, n + 1), (c_max, s + 1, n + 1), (c_max, s + 1, n)],
                 inside("C", c_max - 1) and inside("N", n) and inside("S", s))


def _label_axes(ax) -> None:
    n_max, c_max, s_max = SIZES["N"], SIZES["C"], SIZES["S"]
    ax.annotate("C", _point(c_max / 2, -0.9, 0), ha="center", fontsize=11)
    ax.annotate("H, W", _point(-0.5, s_max / 2, 0), ha="right", va="center", fontsize=11)
    ax.annotate("N", _point(-0.3, s_max, n_max / 2), ha="right", va="bottom", fontsize=11)
    x_max, y_max = _point(c_max, s_max, n_max)
    ax.set_xlim(-2.2, x_max + 0.5)
    ax.set_ylim(-1.4, y_max + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")


def norm_axes_figure():
    """The 4-panel figure (batch, layer, instance, group norm) as a matplotlib ``Figure``."""
    fig = new_figure((12, 3.0), layout=None)
    for i, (norm, title) in enumerate(PANELS):
        ax = fig.add_subplot(1, len(PANELS), i + 1)
        _draw_box(ax, shaded_box(norm))
        _label_axes(ax)
        ax.set_title(f"{title}\naverages over {', '.join(NORM_AXES[norm])}", fontsize=11)
    fig.suptitle("Shaded: the elements normalized by one mean and variance", fontsize=10, y=0.06,
                 va="bottom")
    return fig


def plot_norm_axes(path: str | Path, dpi: int = 120) -> Path:
    """Write :func:`norm_axes_figure` to ``path`` (PNG, SVG, PDF by extension); returns the path."""
    return save_figure(norm_axes_figure(), path, dpi=dpi, bbox_inches="tight")
