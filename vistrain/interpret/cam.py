"""Class activation maps: Grad-CAM, Grad-CAM++ and LayerCAM.

All three weight the activations ``A`` (N, C, h, w) of one target layer by the gradient
``G = d score / d A`` of the class score:

* ``gradcam``   (Selvaraju et al. 2017): ``relu(sum_c mean_hw(G_c) * A_c)``
* ``gradcam++`` (Chattopadhay et al. 2018): channel weights ``sum_hw(alpha * relu(G))`` with the
  closed-form ``alpha = G^2 / (2 G^2 + sum_hw(A) G^3)`` (exponential-score assumption)
* ``layercam``  (Jiang et al. 2021): element-wise ``relu(sum_c relu(G_c) * A_c)``; unlike Grad-CAM
  it stays local when the score only depends on part of the map.

Gradients are taken with ``torch.autograd.grad`` with respect to the captured activation, so no
module backward hooks are needed and parameters' ``.grad`` are never touched.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vistrain.errors import VistrainError
from vistrain.interpret._utils import (as_batch, eval_mode, get_layer, is_spatial, is_token_model,
                                     model_device_dtype, probe_outputs, tokens_to_grid)

METHODS = ("gradcam", "gradcam++", "layercam")


def find_target_layer(model: nn.Module, input_size=None) -> tuple[str, nn.Module]:
    """Default CAM layer: the last spatial feature map (CNN) or the last transformer block (ViT).

    CNNs: a probe forward pass records every module's output; the answer is the last module to
    finish with a 4-D output of more than 1x1 that is not a pooling layer, i.e. the last stage
    before global pooling (``layer4`` for a ResNet, ``bn2`` for an EfficientNet).

    ViTs (``patch_embed`` + ``blocks``): the last block.  With class-token pooling the *output*
    of the last block reaches the logits only through the CLS token, so its patch tokens get zero
    gradient; we then return the last block's ``norm1`` (its input to attention, the usual
    choice for ViT Grad-CAM), whose patch tokens feed the CLS token in that block.

    Example:
        >>> import timm
        >>> find_target_layer(timm.create_model("resnet18", pretrained=False))[0]
        'layer4'
    """
    if is_token_model(model):
        index = len(model.blocks) - 1
        block = model.blocks[index]
        prefix = next(n for n, m in model.named_modules() if m is block)
        norm1 = getattr(block, "norm1", None)
        if getattr(model, "global_pool", None) == "token" and isinstance(norm1, nn.Module):
            return f"{prefix}.norm1", norm1
        return prefix, block
    spatial = [(name, mod) for name, mod, shape in probe_outputs(model, input_size) if is_spatial(mod, shape)]
    if not spatial:
        raise VistrainError(f"{type(model).__name__} has no layer with a spatial (N, C, H, W) output; "
                            "pass target_layer= explicitly")
    return spatial[-1]


def _resolve_layer(model: nn.Module, target_layer) -> nn.Module:
    if target_layer is None:
        return find_target_layer(model)[1]
    if isinstance(target_layer, str):
        return get_layer(model, target_layer)
    if isinstance(target_layer, nn.Module):
        return target_layer
    raise VistrainError(f"target_layer must be a layer name or a module, got {type(target_layer).__name__}")


def _targets(logits: torch.Tensor, target_class) -> torch.Tensor:
    """Per-sample class indices: argmax when None, one int for all, or one per sample."""
    n, k = logits.shape
    if target_class is None:
        return logits.argmax(1)
    t = torch.as_tensor(target_class, device=logits.device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise VistrainError(f"target_class has {t.numel()} entries for a batch of {n}")
    if bool(((t < 0) | (t >= k)).any()):
        raise VistrainError(f"target_class {t.tolist()} out of range for a model with {k} classes")
    return t


def _forward_capture(model, layer, x):
    """Forward ``x`` while capturing ``layer``'s output; the hook is removed even on errors.

    The hook returns a clone of the output: a later in-place op (``ReLU(inplace=True)``, ``+=``)
    then modifies the clone, and our captured tensor keeps the values the layer produced.
    """
    captured = []

    def hook(module, args, output):
        if not isinstance(output, torch.Tensor):
            raise VistrainError(f"target layer {type(module).__name__} returns {type(output).__name__}, "
                                "not a tensor; choose another target_layer")
        captured.append(output)
        return output.clone()

    handle = layer.register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured:
        raise VistrainError(f"target layer {type(layer).__name__} was not called in the forward pass")
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise VistrainError("compute_cam needs a model returning logits (N, num_classes)")
    return captured[-1], logits


def _combine(acts: torch.Tensor, grads: torch.Tensor, method: str) -> torch.Tensor:
    """Weight activations (N, C, h, w) by gradients per ``method``; returns (N, h, w) >= 0."""
    if method == "gradcam":
        cam = (grads.mean((2, 3), keepdim=True) * acts).sum(1)
    elif method == "gradcam++":
        g2, g3 = grads.pow(2), grads.pow(3)
        denom = 2 * g2 + acts.sum((2, 3), keepdim=True) * g3
        # alpha is 0/0 where the gradient vanishes; those positions carry no weight.
        alpha = torch.where(grads != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                            torch.zeros_like(g2))
        cam = ((alpha * grads.clamp(min=0)).sum((2, 3), keepdim=True) * acts).sum(1)
    elif method == "layercam":
        cam = (grads.clamp(min=0) * acts).sum(1)
    else:
        raise VistrainError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    return cam.clamp(min=0)


def _normalize(cam: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map (N, H, W) to [0, 1]; a constant map becomes all zeros."""
    flat = cam.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                      torch.zeros_like(flat))
    return out.reshape(cam.shape)


def compute_cam(model: nn.Module, x: torch.Tensor, target_class=None, method: str = "gradcam",
                target_layer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Class activation maps for a normalized batch ``x`` (N, C, H, W) (or one image (C, H, W)).

    ``target_class``: None (each sample's predicted class), an int, or one int per sample.
    ``method``: ``"gradcam"``, ``"gradcam++"`` or ``"layercam"``.  ``target_layer``: a layer name,
    a module, or None for :func:`find_target_layer`.

    Returns ``(cams, logits)``: ``cams`` float32 (N, H, W) in [0, 1], bilinearly upsampled to the
    input size, on the model's device; ``logits`` (N, num_classes), detached.  The model runs in eval
    mode; afterwards every module's train/eval flag, ``requires_grad`` and ``.grad`` are as before
    and no hook is left behind (also when an error is raised).

    Example:
        >>> import timm
        >>> m = timm.create_model("resnet18", pretrained=False, num_classes=5)
        >>> cams, logits = compute_cam(m, torch.randn(2, 3, 64, 64), target_class=3)
        >>> cams.shape, logits.shape
        (torch.Size([2, 64, 64]), torch.Size([2, 5]))
    """
    if method not in METHODS:
        raise VistrainError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    x = as_batch(x)
    layer = _resolve_layer(model, target_layer)
    device, dtype = model_device_dtype(model)
    # inference_mode(False): gradients are needed even if the caller is inside inference_mode.
    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        # A fresh leaf that requires grad makes every activation require grad even when all
        # parameters are frozen, so nothing about the parameters needs to change.
        x = x.detach().to(device=device, dtype=dtype).clone().requires_grad_(True)
        acts, logits = _forward_capture(model, layer, x)
        targets = _targets(logits, target_class)
        score = logits.gather(1, targets[:, None]).sum()  # samples are independent in eval mode
        (grads,) = torch.autograd.grad(score, acts, allow_unused=True)
    acts = acts.detach()
    grads = torch.zeros_like(acts) if grads is None else grads
    if acts.ndim == 3 and is_token_model(model):
        acts, grads = tokens_to_grid(model, acts), tokens_to_grid(model, grads)
    if acts.ndim != 4:
        raise VistrainError(f"target layer output has shape {tuple(acts.shape)}, expected (N, C, h, w)")
    cam = _combine(acts.float(), grads.float(), method)
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _normalize(cam), logits.detach()


def feature_map_cam(model: nn.Module, x: torch.Tensor, target_class=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM on the model's final feature map (timm ``forward_features`` -> ``forward_head``),
    the layer :func:`find_target_layer` picks for a CNN: :func:`compute_cam`'s ``gradcam`` maps,
    but the backbone runs once without autograd and only the head is differentiated (no probe pass,
    no backward through the network).  Falls back to :func:`compute_cam` for models without that
    split or whose features are not a spatial map (transformers).

    Example:
        >>> import timm
        >>> m = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> torch.allclose(feature_map_cam(m, x, 3)[0], compute_cam(m, x, 3)[0], atol=1e-5)
        True
    """
    if is_token_model(model) or not (hasattr(model, "forward_features") and hasattr(model, "forward_head")):
        return compute_cam(model, x, target_class)
    x = as_batch(x)
    device, dtype = model_device_dtype(model)
    with eval_mode(model), torch.inference_mode(False):
        x = x.detach().to(device=device, dtype=dtype)
        with torch.no_grad():
            acts = model.forward_features(x)
        if not isinstance(acts, torch.Tensor) or acts.ndim != 4 or min(acts.shape[-2:]) <= 1:
            return compute_cam(model, x, target_class)
        acts = acts.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model.forward_head(acts)
            targets = _targets(logits, target_class)
            (grads,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), acts)
    cam = _combine(acts.detach().float(), grads.float(), "gradcam")
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _normalize(cam), logits.detach()


def overlay(image_uint8, cam, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a heat map over an image: ``(1 - alpha) * image + alpha * colormap(cam)``.

    ``image_uint8``: (H, W, 3) or (H, W) uint8 array; ``cam``: (H, W) or any size in [0, 1]
    (numpy or torch), resized bilinearly to the image.  Returns (H, W, 3) uint8.

    Example:
        >>> overlay(np.zeros((4, 6, 3), np.uint8), np.ones((2, 3))).shape
        (4, 6, 3)
    """
    from matplotlib import colormaps  # lazy: matplotlib is heavy

    img = np.asarray(image_uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise VistrainError(f"overlay expects an (H, W, 3) uint8 image, got shape {img.shape}")
    heat = torch.as_tensor(np.asarray(cam.detach().cpu() if isinstance(cam, torch.Tensor) else cam),
                           dtype=torch.float32)
    if heat.ndim != 2:
        raise VistrainError(f"overlay expects one (H, W) heat map, got shape {tuple(heat.shape)}")
    if tuple(heat.shape) != img.shape[:2]:
        heat = F.interpolate(heat[None, None], size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    rgb = colormaps[colormap](heat.clamp(0, 1).numpy())[..., :3] * 255.0
    blend = (1.0 - alpha) * img.astype(np.float32) + alpha * rgb
    return np.clip(np.rint(blend), 0, 255).astype(np.uint8)
