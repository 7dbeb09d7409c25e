"""Attention maps of timm Vision Transformers: per-head CLS attention and attention rollout.

timm's ``Attention`` normally runs fused ``scaled_dot_product_attention``, which never
materialises the attention matrix.  Rather than flipping ``fused_attn`` (a module-wide switch
other code may rely on), we capture each block's attention *input* with a forward pre-hook and
recompute ``softmax(q k^T * scale)`` from the block's own ``qkv``, ``q_norm``/``k_norm``,
``num_heads`` and ``scale``: same numbers, model untouched.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vistrain.errors import VistrainError
from vistrain.evaluation.png import new_figure, save_figure
from vistrain.interpret.cam import overlay
from vistrain.interpret._utils import (as_batch, eval_mode, is_token_model, model_device_dtype,
                                     num_prefix_tokens, token_grid)

HEAD_FUSIONS = ("mean", "max", "min")


def _check_vit(model: nn.Module) -> None:
    if not is_token_model(model):
        raise VistrainError(f"{type(model).__name__} is not a Vision Transformer (no patch_embed/blocks); "
                            "use compute_cam for CNNs")
    for blk in model.blocks:
        attn = getattr(blk, "attn", None)
        if attn is None or not all(hasattr(attn, a) for a in ("qkv", "num_heads", "scale")):
            raise VistrainError(f"unsupported attention module in {type(model).__name__}: expected timm "
                                "Attention with qkv, num_heads and scale")


def _softmax_attention(attn: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Attention probabilities (N, heads, T, T) that ``attn`` computes for its input (N, T, C)."""
    n, t, _ = tokens.shape
    qkv = attn.qkv(tokens)
    heads = attn.num_heads
    head_dim = getattr(attn, "head_dim", qkv.shape[-1] // (3 * heads))
    q, k, _v = qkv.reshape(n, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q = attn.q_norm(q) if hasattr(attn, "q_norm") else q
    k = attn.k_norm(k) if hasattr(attn, "k_norm") else k
    return ((q * attn.scale) @ k.transpose(-2, -1)).float().softmax(-1)


def _all_attentions(model: nn.Module, x: torch.Tensor, blocks: list[int]) -> dict[int, torch.Tensor]:
    """Run ``model`` on one image and return ``{block index: (heads, T, T)}`` for ``blocks``."""
    _check_vit(model)
    x = as_batch(x, single=True)
    device, dtype = model_device_dtype(model)
    inputs: dict[int, torch.Tensor] = {}
    handles = []

    def make_hook(i):
        def pre_hook(module, args):
            inputs[i] = args[0]
        return pre_hook

    try:
        for i in blocks:
            handles.append(model.blocks[i].attn.register_forward_pre_hook(make_hook(i)))
        with eval_mode(model), torch.no_grad():
            model(x.to(device=device, dtype=dtype))
            return {i: _softmax_attention(model.blocks[i].attn, inputs[i])[0].cpu() for i in blocks}
    finally:
        for h in handles:
            h.remove()


def attention_maps(model: nn.Module, x: torch.Tensor, block: int = -1) -> torch.Tensor:
    """CLS-to-patch attention of every head in one block, for one normalized image.

    ``x``: (C, H, W) or (1, C, H, W).  ``block``: index into ``model.blocks`` (negative counts
    from the end).  Returns float32 (heads, grid_h, grid_w) on the CPU; each head's values are
    the softmax weights the CLS query puts on the patches (they sum to 1 minus the weight on
    prefix tokens).

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)
        >>> attention_maps(vit, torch.randn(3, 64, 64)).shape
        torch.Size([3, 4, 4])
    """
    _check_vit(model)
    if getattr(model, "cls_token", None) is None:
        raise VistrainError(f"{type(model).__name__} has no CLS token; use attention_rollout instead")
    n_blocks = len(model.blocks)
    if not -n_blocks <= block < n_blocks:
        raise VistrainError(f"block {block} out of range for a model with {n_blocks} blocks")
    index = block % n_blocks
    att = _all_attentions(model, x, [index])[index]
    prefix = num_prefix_tokens(model)
    grid = token_grid(model, att.shape[-1])
    return att[:, 0, prefix:].reshape(att.shape[0], *grid)


def _fuse_heads(att: torch.Tensor, head_fusion: str) -> torch.Tensor:
    if head_fusion == "mean":
        return att.mean(0)
    if head_fusion == "max":
        return att.amax(0)
    if head_fusion == "min":
        return att.amin(0)
    raise VistrainError(f"unknown head_fusion {head_fusion!r}; choose one of {', '.join(HEAD_FUSIONS)}")


def _discard_lowest(att: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the ``ratio`` weakest entries of a (T, T) map, keeping CLS->CLS (index 0) as the paper's code."""
    flat = att.flatten().clone()
    k = int(flat.numel() * ratio)
    if k > 0:
        idx = flat.topk(k, largest=False).indices
        flat[idx[idx != 0]] = 0
    return flat.reshape(att.shape)


def attention_rollout(model: nn.Module, x: torch.Tensor, discard_ratio: float = 0.0,
                      head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each patch flows into the CLS token.

    Per block: fuse heads (``mean``/``max``/``min``), optionally zero the ``discard_ratio``
    weakest weights, add the identity for the residual path, ``A = 0.5 * (W + I)``, renormalise
    rows to sum to 1, and multiply the blocks ``A_L @ ... @ A_1``.  Returns float32
    (grid_h, grid_w) on the CPU: the CLS row of the product over the patch tokens (non-negative,
    summing to at most 1; the rest sits on prefix tokens).  Models without a CLS token get the
    mean of the patch rows instead.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64)
        >>> attention_rollout(vit, torch.randn(3, 64, 64)).shape
        torch.Size([4, 4])
    """
    if head_fusion not in HEAD_FUSIONS:
        raise VistrainError(f"unknown head_fusion {head_fusion!r}; choose one of {', '.join(HEAD_FUSIONS)}")
    if not 0.0 <= discard_ratio < 1.0:
        raise VistrainError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    _check_vit(model)
    atts = _all_attentions(model, x, list(range(len(model.blocks))))
    t = atts[0].shape[-1]
    eye = torch.eye(t)
    rollout = eye.clone()
    for i in range(len(model.blocks)):
        a = _discard_lowest(_fuse_heads(atts[i], head_fusion), discard_ratio)
        a = 0.5 * (a + eye)
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    prefix = num_prefix_tokens(model)
    row = rollout[0] if getattr(model, "cls_token", None) is not None else rollout[prefix:].mean(0)
    return row[prefix:].reshape(token_grid(model, t))


def plot_attention_heads(maps: torch.Tensor, path, image_uint8=None, title: str | None = None) -> Path:
    """Save a PNG grid with one panel per head of ``maps`` (heads, gh, gw).

    With ``image_uint8`` (H, W, 3) each head is min-max scaled and overlaid on the image
    (see :func:`vistrain.interpret.cam.overlay`); otherwise shown as a heat map.

    Example:
        >>> plot_attention_heads(torch.rand(3, 4, 4), "/tmp/heads.png").name
        'heads.png'
    """

    maps = torch.as_tensor(maps).float().cpu()
    if maps.ndim != 3:
        raise VistrainError(f"plot_attention_heads expects (heads, gh, gw), got shape {tuple(maps.shape)}")
    heads = maps.shape[0]
    cols = math.ceil(math.sqrt(heads))
    rows = math.ceil(heads / cols)
    fig = new_figure((2.6 * cols, 2.6 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for h, ax in enumerate(axes[:heads]):
        m = maps[h]
        m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else torch.zeros_like(m)
        ax.imshow(overlay(image_uint8, m) if image_uint8 is not None else m.numpy(), cmap="inferno")
        ax.set_title(f"head {h}", fontsize=9)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
