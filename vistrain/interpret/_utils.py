"""Shared plumbing for the explain package: probe passes, hook hygiene, token-to-grid reshape.

Everything here leaves the model exactly as it found it: hooks are removed in ``finally`` blocks
and each module's own ``training`` flag is restored (not just the root's, so a model with frozen,
eval-mode BatchNorm inside a training model keeps that mix).
"""
from __future__ import annotations

import contextlib
import difflib
import math
from typing import Iterator

import torch
from torch import nn

from vistrain.errors import VistrainError

# Pooling modules produce a 4-D output in some models (torchvision VGG's AdaptiveAvgPool2d(7, 7),
# timm's SelectAdaptivePool2d(flatten=False)), but they sit *after* the last feature map.
_POOL_TYPES = ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "SelectAdaptivePool2d",
               "AdaptiveAvgMaxPool2d", "AdaptiveCatAvgMaxPool2d")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every module's own flag.

    Example:
        >>> m = nn.Sequential(nn.BatchNorm2d(3)).train()
        >>> with eval_mode(m): assert not m[0].training
        >>> m[0].training
        True
    """
    flags = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for mod, flag in flags:
            mod.training = flag


def is_token_model(model: nn.Module) -> bool:
    """True for ViT-style models: a ``patch_embed`` with a grid and a ``blocks`` stack of tokens."""
    pe = getattr(model, "patch_embed", None)
    return pe is not None and hasattr(pe, "grid_size") and isinstance(getattr(model, "blocks", None),
                                                                        nn.Sequential | nn.ModuleList)


def num_prefix_tokens(model: nn.Module) -> int:
    """Number of non-patch tokens (CLS, register/distillation tokens) at the front of the sequence."""
    n = getattr(model, "num_prefix_tokens", None)
    if n is not None:
        return int(n)
    return 1 if getattr(model, "cls_token", None) is not None else 0


def token_grid(model: nn.Module, num_tokens: int) -> tuple[int, int] | None:
    """Patch grid ``(gh, gw)`` for a sequence of ``num_tokens`` (prefix included), or None.

    Uses ``model.patch_embed.grid_size`` when the count matches, else a square grid (dynamic
    image size); None when the patch tokens cannot form a grid.
    """
    patches = num_tokens - num_prefix_tokens(model)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is not None and int(grid[0]) * int(grid[1]) == patches:
        return int(grid[0]), int(grid[1])
    side = math.isqrt(max(patches, 0))
    return (side, side) if side > 0 and side * side == patches else None


def tokens_to_grid(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Reshape ViT tokens ``(N, T, C)`` to a feature map ``(N, C, gh, gw)``, dropping prefix tokens.

    Prefix (CLS, register) tokens are counted by ``model.num_prefix_tokens``; the grid comes from
    :func:`token_grid`.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)
        >>> tokens_to_grid(vit, torch.zeros(2, 17, 192)).shape
        torch.Size([2, 192, 4, 4])
    """
    n, t, c = tokens.shape
    grid = token_grid(model, t)
    if grid is None:
        raise VistrainError(f"cannot reshape {t} tokens of {type(model).__name__} to a patch grid; "
                            "pass a target layer with a (N, C, H, W) output instead")
    return tokens[:, num_prefix_tokens(model):].transpose(1, 2).reshape(n, c, *grid)


def default_input_size(model: nn.Module, fallback: int = 64) -> tuple[int, int, int]:
    """Input ``(C, H, W)`` for a probe pass: the ViT's fixed image size, else a small square.

    Channels come from the first ``Conv2d`` (grayscale models have 1).  CNNs accept any size, so a
    ``fallback`` of 64 px keeps probes cheap while leaving >= 2x2 maps at stride 32.
    """
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    chans = conv.in_channels if conv is not None else 3
    pe = getattr(model, "patch_embed", None)
    img = getattr(pe, "img_size", None) if pe is not None else None
    if img is not None:
        h, w = (img, img) if isinstance(img, int) else tuple(img)
        return chans, int(h), int(w)
    return chans, fallback, fallback


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def probe_outputs(model: nn.Module, input_size=None) -> list[tuple[str, nn.Module, tuple]]:
    """Run one no-grad forward pass and list ``(name, module, output_shape)`` in completion order.

    Completion order matters: a container finishes after its children, so for the same output
    tensor the outermost module (e.g. ``layer4`` rather than ``layer4.1.act2``) comes last.
    Non-tensor outputs are skipped.  ``input_size`` is ``(C, H, W)``; see :func:`default_input_size`.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> [(n, s) for n, _, s in probe_outputs(m, (3, 8, 8))]
        [('0', (1, 4, 6, 6)), ('1', (1, 4, 6, 6))]
    """
    size = tuple(input_size) if input_size is not None else default_input_size(model)
    device, dtype = model_device_dtype(model)
    seen: list[tuple[str, nn.Module, tuple]] = []
    handles = []

    def make_hook(name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                seen.append((name, module, tuple(output.shape)))
        return hook

    try:
        for name, module in model.named_modules():
            if name:  # the root's output is the logits
                handles.append(module.register_forward_hook(make_hook(name)))
        with eval_mode(model), torch.no_grad():
            model(torch.zeros((1, *size), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return seen


def is_spatial(module: nn.Module, shape: tuple) -> bool:
    """A 4-D ``(N, C, h, w)`` feature map with more than one position, not produced by a pool."""
    return len(shape) == 4 and shape[2] * shape[3] > 1 and type(module).__name__ not in _POOL_TYPES


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """``model.get_submodule(name)`` with a one-line, actionable error that suggests close names."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; list them with list_layers(model)"
        raise VistrainError(f"layer {name!r} not found in {type(model).__name__}{hint}") from None


def as_batch(x: torch.Tensor, single: bool = False) -> torch.Tensor:
    """Accept ``(C, H, W)`` or ``(N, C, H, W)``; with ``single`` require exactly one image."""
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise VistrainError("expected an image tensor (C, H, W) or a batch (N, C, H, W), "
                            f"got shape {tuple(x.shape)}")
    if single and x.shape[0] != 1:
        raise VistrainError(f"expected a single image, got a batch of {x.shape[0]}; pass x[i:i+1]")
    return x
