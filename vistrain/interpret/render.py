"""Figures for class activation maps."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from vistrain.errors import VistrainError
from vistrain.evaluation.png import new_figure, save_figure
from vistrain.interpret.cam import overlay


def save_cam_figure(image_uint8, cams: dict, path, title: str | None = None,
                    alpha: float = 0.45, colormap: str = "jet") -> Path:
    """Save a PNG: the image, then one heat-map overlay per method, side by side.

    ``image_uint8``: (H, W, 3) uint8 (the model input before normalization, so pixels line up
    with the maps); ``cams``: ``{method name: (H, W) map in [0, 1]}`` (numpy or torch, any size:
    resized to the image).  Returns the written path.

    Example:
        >>> img = np.zeros((32, 32, 3), np.uint8)
        >>> save_cam_figure(img, {"gradcam": np.random.rand(32, 32)}, "/tmp/cam.png", "cat").name
        'cam.png'
    """
    if not cams:
        raise VistrainError("save_cam_figure needs at least one CAM")
    img = np.asarray(image_uint8)
    panels = [("image", img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2))]
    panels += [(name, overlay(img, cam, alpha=alpha, colormap=colormap)) for name, cam in cams.items()]
    fig = new_figure((3.0 * len(panels), 3.4 if title else 3.1))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (name, pic) in zip(axes, panels):
        ax.imshow(pic)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
