"""Intermediate feature maps: which layers have them, what they look like for one image."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vistrain.errors import VistrainError
from vistrain.evaluation.png import new_figure, save_figure
from vistrain.interpret._utils import (as_batch, eval_mode, get_layer, is_spatial, is_token_model,
                                     model_device_dtype, probe_outputs, token_grid, tokens_to_grid)


def list_layers(model: nn.Module, input_size=None) -> list[tuple[str, str, tuple[int, int, int]]]:
    """Layers with a spatial output, as ``(name, type_name, (C, h, w))`` in module order.

    Found with one probe forward pass of a zero image of ``input_size`` (C, H, W): by default
    the ViT's fixed size, else 64x64 (pass the real size to see the real map sizes).  For ViTs,
    layers inside ``blocks`` count when they output patch tokens (N, T, C); they are listed with
    their patch-grid shape (C, gh, gw), as :func:`feature_maps` returns them.

    Example:
        >>> import timm
        >>> layers = list_layers(timm.create_model("resnet18", pretrained=False), (3, 64, 64))
        >>> layers[0]
        ('conv1', 'Conv2d', (64, 32, 32))
    """
    shapes = {}
    for name, mod, shape in probe_outputs(model, input_size):
        chw = _spatial_shape(model, name, mod, shape)
        if chw is not None:
            shapes[name] = (type(mod).__name__, chw)
    return [(name, *shapes[name]) for name, _ in model.named_modules() if name in shapes]


def _spatial_shape(model: nn.Module, name: str, module: nn.Module, shape: tuple):
    """(C, h, w) of a layer's output if it is a feature map (or ViT patch tokens), else None."""
    if is_token_model(model) and (name == "blocks" or name.startswith("blocks.")):
        # Inside transformer blocks 4-D tensors are per-head (N, heads, T, d), not images;
        # the feature maps there are token sequences covering the whole patch grid.
        grid = token_grid(model, shape[1]) if len(shape) == 3 else None
        return (shape[2], *grid) if grid else None
    return tuple(shape[1:]) if is_spatial(module, shape) else None


def feature_maps(model: nn.Module, x: torch.Tensor, layer_names) -> dict[str, torch.Tensor]:
    """Outputs of ``layer_names`` for one normalized image ``x`` (C, H, W) or (1, C, H, W).

    Returns ``{name: float32 tensor (C, h, w)}`` on the CPU, in the order given.  ViT token
    outputs (1, T, C) are reshaped to the patch grid (prefix tokens dropped).  Runs in eval mode
    without gradients; hooks are removed and train/eval flags restored afterwards.

    Example:
        >>> import timm
        >>> m = timm.create_model("resnet18", pretrained=False)
        >>> maps = feature_maps(m, torch.randn(3, 64, 64), ["layer1", "layer4"])
        >>> {k: tuple(v.shape) for k, v in maps.items()}
        {'layer1': (64, 16, 16), 'layer4': (512, 2, 2)}
    """
    names = [layer_names] if isinstance(layer_names, str) else list(layer_names)
    layers = {name: get_layer(model, name) for name in names}
    x = as_batch(x, single=True)
    device, dtype = model_device_dtype(model)
    out: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                # clone: a later in-place op (ReLU(inplace=True)) must not change what we keep.
                out[name] = output.detach().clone()
        return hook

    try:
        for name, layer in layers.items():
            handles.append(layer.register_forward_hook(make_hook(name)))
        with eval_mode(model), torch.no_grad():
            model(x.to(device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return {name: _to_chw(model, name, out.get(name)) for name in names}


def _to_chw(model: nn.Module, name: str, t: torch.Tensor | None) -> torch.Tensor:
    if t is None:
        raise VistrainError(f"layer {name!r} produced no tensor output in the forward pass")
    if t.ndim == 3 and is_token_model(model):
        t = tokens_to_grid(model, t)
    if t.ndim != 4:
        raise VistrainError(f"layer {name!r} output has shape {tuple(t.shape)}, not a feature map; "
                            "list spatial layers with list_layers(model)")
    return t[0].float().cpu()


def _top_channels(fmap: torch.Tensor, k: int) -> list[int]:
    """The ``k`` channels with the largest mean activation: the ones that fired for this image."""
    order = fmap.flatten(1).mean(1).argsort(descending=True)
    return order[:k].tolist()


def plot_feature_maps(maps: dict[str, torch.Tensor], path, max_channels: int = 32) -> Path:
    """Save a PNG with one panel per layer (side by side), each a grid of its strongest channels.

    ``maps``: ``{name: (C, h, w)}`` as from :func:`feature_maps`; given an early and a late layer
    the two panels show the shift from edges/textures to coarse, class-like parts.  Each channel
    is min-max scaled on its own.  Returns the written path.

    Example:
        >>> plot_feature_maps({"conv": torch.rand(8, 5, 5)}, "/tmp/fm.png").name
        'fm.png'
    """
    if not maps:
        raise VistrainError("plot_feature_maps needs at least one feature map")
    fig = new_figure((4.2 * len(maps), 4.6))
    for sub, (name, fmap) in zip(np.atleast_1d(fig.subfigures(1, len(maps))), maps.items()):
        _plot_panel(sub, name, torch.as_tensor(fmap).float(), max_channels)
    return save_figure(fig, path)
    return path


def _plot_panel(sub, name: str, fmap: torch.Tensor, max_channels: int) -> None:
    """Draw one layer's strongest channels as a near-square grid into a matplotlib subfigure."""
    channels = _top_channels(fmap, max_channels)
    cols = math.ceil(math.sqrt(len(channels)))
    rows = math.ceil(len(channels) / cols)
    axes = np.atleast_1d(sub.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, c in zip(axes, channels):
        ch = fmap[c]
        lo, hi = float(ch.min()), float(ch.max())
        ax.imshow(((ch - lo) / (hi - lo) if hi > lo else torch.zeros_like(ch)).numpy(),
                  cmap="viridis", vmin=0, vmax=1)
    c, h, w = fmap.shape
    sub.suptitle(f"{name}: {len(channels)} of {c} channels, {h}x{w}", fontsize=10)
