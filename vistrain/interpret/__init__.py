"""Interpretation: class activation maps, feature maps, ViT attention.

Names are loaded lazily (PEP 562) so ``import vistrain.interpret`` costs nothing until a function
is used; matplotlib is only imported when a figure is drawn.

Example:
    >>> import timm, torch
    >>> from vistrain.interpret import compute_cam
    >>> m = timm.create_model("resnet18", pretrained=False, num_classes=5)
    >>> cams, logits = compute_cam(m, torch.randn(1, 3, 64, 64))
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "find_target_layer": "cam", "compute_cam": "cam", "overlay": "cam", "METHODS": "cam",
    "list_layers": "featuremaps", "feature_maps": "featuremaps", "plot_feature_maps": "featuremaps",
    "attention_maps": "attention", "attention_rollout": "attention",
    "plot_attention_heads": "attention",
    "save_cam_figure": "render",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:  # lazy on purpose: cam, attention and featuremaps import torch
        return getattr(importlib.import_module(f"vistrain.interpret.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vistrain.interpret' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
