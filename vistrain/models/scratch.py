"""From-scratch CNNs (VGG-style stages, ResNet-style blocks) behind timm's model contract.

A :class:`ScratchNet` is ``stem -> stages -> head``:

- **stem**: one conv (3x3 by default, configurable kernel/stride, optional 3x3/2 max pool);
- **stages**: VGG stages (:class:`VGGStage`) or residual stages of :class:`BasicBlock` /
  :class:`Bottleneck`;
- **head**: global average pooling -> dropout -> linear.

**Why stacks of 3x3 convs (VGG).** Three stacked 3x3 convs see a 7x7 window of their input (each
adds 2 pixels of context), like one 7x7 conv, but with ``3 * 9 C^2 = 27 C^2`` weights instead of
``49 C^2`` (C channels in and out, no bias), and with two more non-linearities in between.

**Why skip connections (ResNet).** A residual block computes ``act(F(x) + shortcut(x))``; the
shortcut is the identity when shape is kept and a projection (1x1 conv + norm, strided) when the
block changes width or resolution.  The gradient reaches early layers through the shortcuts
instead of only through every ``F``, so deep nets keep training where their plain counterpart
(``skip=False``: ``act(F(x))``) degrades.  ``preact=True`` builds pre-activation blocks
(He et al. 2016, "Identity Mappings"): ``x + F(norm-act(x))``, whose identity path has no
activation on it at all (the projection then takes the pre-activated input and has no norm).

Models follow timm: ``forward_features(x)`` ``(N, in_chans, H, W) -> (N, num_features, h, w)``,
``forward_head(f, pre_logits=False)`` ``-> (N, num_classes)`` (or ``(N, num_features)``),
``reset_classifier(n)``, ``get_classifier()``, ``num_features``, ``default_cfg``/``pretrained_cfg``.

Example:
    >>> import torch
    >>> from vistrain.models.scratch import create_scratch
    >>> model = create_scratch("vistrain/resnet20", num_classes=10)
    >>> x = torch.randn(2, 3, 32, 32)
    >>> model.forward_features(x).shape
    torch.Size([2, 64, 8, 8])
    >>> model(x).shape
    torch.Size([2, 10])
    >>> [len(group) for group in model.layer_groups()]   # stem, 3 stages, head
    [1, 1, 1, 1, 3]
"""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn

from vistrain.errors import VistrainError
from vistrain.models.layers import ConvNormAct, init_weights, make_act
from vistrain.models.norms import check_norm, make_conv, make_norm

BLOCKS = ("vgg", "basic", "bottleneck")


class VGGStage(nn.Sequential):
    """``depth`` x (3x3 conv -> norm -> act), then 2x2 max pooling.

    Shapes: ``(N, in_chans, H, W) -> (N, out_chans, H // 2, W // 2)``.
    """

    def __init__(self, in_chans: int, out_chans: int, depth: int, norm: str = "batch",
                 act: str = "relu", groups: int | None = None):
        layers = [ConvNormAct(in_chans if i == 0 else out_chans, out_chans, 3, 1, norm, act, groups)
                  for i in range(depth)]
        super().__init__(*layers, nn.MaxPool2d(2))


def _shortcut(in_chans: int, out_chans: int, stride: int, norm: str, groups: int | None,
              preact: bool) -> nn.Module:
    """Identity when the shape is kept, else a strided 1x1 projection (+ norm unless preact)."""
    if stride == 1 and in_chans == out_chans:
        return nn.Identity()
    if preact:
        return make_conv(in_chans, out_chans, 1, stride, norm)
    return ConvNormAct(in_chans, out_chans, 1, stride, norm, None, groups)


class _Residual(nn.Module):
    """Shared forward of the residual blocks: ``act(body(pre(x)) + shortcut(.))``."""

    def _finish(self, in_chans: int, out_chans: int, stride: int, norm: str, act: str,
                groups: int | None, skip: bool, preact: bool) -> None:
        self.preact = preact
        self.pre = (nn.Sequential(make_norm(norm, in_chans, groups), make_act(act)) if preact
                    else nn.Identity())
        self.shortcut = (_shortcut(in_chans, out_chans, stride, norm, groups, preact) if skip
                         else None)
        # Post-activation blocks apply the activation after the sum; pre-activation blocks leave
        # the sum untouched so the identity path stays clean.
        self.act = nn.Identity() if preact else make_act(act)

    def forward(self, x):
        pre = self.pre(x)
        y = self.body(pre)
        if self.shortcut is not None:
            projected = not isinstance(self.shortcut, nn.Identity)
            y = y + self.shortcut(pre if self.preact and projected else x)
        return self.act(y)


class BasicBlock(_Residual):
    """Two 3x3 convs (the first strided) with a skip connection (ResNet-18/34, CIFAR ResNets).

    Shapes: ``(N, in_chans, H, W) -> (N, out_chans, ceil(H/stride), ceil(W/stride))``.
    ``skip=False`` gives the plain block; ``preact=True`` the pre-activation block.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1, norm: str = "batch",
                 act: str = "relu", groups: int | None = None, skip: bool = True,
                 preact: bool = False):
        super().__init__()
        last = (make_conv(out_chans, out_chans, 3, 1, norm) if preact
                else ConvNormAct(out_chans, out_chans, 3, 1, norm, None, groups))
        first = ConvNormAct(in_chans, out_chans, 3, stride, norm, act, groups)
        self.body = nn.Sequential(first, last)
        self._finish(in_chans, out_chans, stride, norm, act, groups, skip, preact)


class Bottleneck(_Residual):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, with a skip connection (ResNet-50 style).

    The inner width is ``out_chans // expansion``; the cheap 1x1 convs let the block be deep and
    wide at the price of a narrow 3x3.  Shapes as :class:`BasicBlock`.
    """

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1, norm: str = "batch",
                 act: str = "relu", groups: int | None = None, skip: bool = True,
                 preact: bool = False, expansion: int = 4):
        super().__init__()
        mid = out_chans // expansion
        if mid < 1:
            raise VistrainError(f"bottleneck: width {out_chans} is smaller than the expansion "
                                f"{expansion}")
        last = (make_conv(mid, out_chans, 1, 1, norm) if preact
                else ConvNormAct(mid, out_chans, 1, 1, norm, None, groups))
        self.body = nn.Sequential(ConvNormAct(in_chans, mid, 1, 1, norm, act, groups),
                                  ConvNormAct(mid, mid, 3, stride, norm, act, groups), last)
        self._finish(in_chans, out_chans, stride, norm, act, groups, skip, preact)


class ScratchNet(nn.Module):
    """A from-scratch CNN: stem -> stages -> (avg pool, dropout, linear) head.

    Args:
        block: ``vgg`` (stages of :class:`VGGStage`, each halving the resolution), ``basic`` or
            ``bottleneck`` (residual stages; the first block of stage i has stride ``strides[i]``).
        widths, depths: output channels and number of blocks (VGG: convs) per stage.
        strides: per residual stage, default ``(1, 2, 2, ...)``; ignored for VGG.
        stem_width, stem_kernel, stem_stride, stem_pool: the stem conv (width defaults to
            ``widths[0]``) and an optional 3x3/2 max pool after it.
        norm, act, groups: see :mod:`vistrain.models.norms` and :mod:`vistrain.models.layers`.
        skip, preact: residual connections on/off and pre-activation blocks (residual only).
        init: weight initialisation scheme applied at the end (see :func:`init_weights`).
        input_size: the square input size recorded in ``default_cfg``; must be at least the
            total downsampling factor.

    Shapes: ``(N, in_chans, H, W)`` -> ``forward_features`` ``(N, num_features, H/s, W/s)`` with
    ``s`` the total stride -> ``forward`` ``(N, num_classes)``.

    Example:
        >>> import torch
        >>> net = ScratchNet("vgg", widths=(8, 16), depths=(1, 1), num_classes=3, in_chans=1)
        >>> net(torch.randn(4, 1, 28, 28)).shape, net.num_features
        (torch.Size([4, 3]), 16)
    """

    def __init__(self, block: str = "basic", widths: Sequence[int] = (16, 32, 64),
                 depths: Sequence[int] = (3, 3, 3), strides: Sequence[int] | None = None,
                 num_classes: int = 10, in_chans: int = 3, stem_width: int | None = None,
                 stem_kernel: int = 3, stem_stride: int = 1, stem_pool: bool = False,
                 norm: str = "batch", act: str = "relu", groups: int | None = None,
                 skip: bool = True, preact: bool = False, init: str = "kaiming",
                 drop_rate: float = 0.0, input_size: int = 32):
        super().__init__()
        check_norm(norm)
        if block not in BLOCKS:
            raise VistrainError(f"unknown block {block!r}; valid: {', '.join(BLOCKS)}")
        if not widths or len(widths) != len(depths):
            raise VistrainError(f"widths {tuple(widths)} and depths {tuple(depths)} must be "
                                "non-empty and of the same length")
        strides = tuple(strides) if strides is not None else (1,) + (2,) * (len(widths) - 1)
        preact = preact and block != "vgg"
        total_stride = stem_stride * (2 if stem_pool else 1) * (
            2 ** len(widths) if block == "vgg" else math.prod(strides))
        if input_size < total_stride:
            raise VistrainError(f"input size {input_size} px is too small for this network (it "
                                f"downsamples {total_stride}x); use at least {total_stride} px")
        self.in_chans, self.num_classes, self.drop_rate = in_chans, num_classes, drop_rate
        self.num_features = widths[-1]
        self.init_scheme, self.act_name = init, act
        stem_width = stem_width or widths[0]
        # A pre-activation stem is a bare conv: the first block normalizes and activates it.
        stem = ([make_conv(in_chans, stem_width, stem_kernel, stem_stride, norm)] if preact else
                [ConvNormAct(in_chans, stem_width, stem_kernel, stem_stride, norm, act, groups)])
        self.stem = nn.Sequential(*stem, *([nn.MaxPool2d(3, 2, 1)] if stem_pool else []))
        self.stages = nn.Sequential(*self._make_stages(block, stem_width, widths, depths, strides,
                                                       norm, act, groups, skip, preact))
        # Pre-activation nets end on a bare sum: normalize + activate once before pooling.
        self.norm = (nn.Sequential(make_norm(norm, widths[-1], groups), make_act(act)) if preact
                     else nn.Identity())
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.default_cfg = {
            "input_size": (in_chans, input_size, input_size), "interpolation": "bilinear",
            "crop_pct": 1.0, "mean": (0.5,) * in_chans, "std": (0.5,) * in_chans,
            "num_classes": num_classes, "first_conv": "stem.0.conv" if not preact else "stem.0",
            "classifier": "fc"}
        self.pretrained_cfg = self.default_cfg     # timm's newer name for the same dict
        init_weights(self, init, act)

    @staticmethod
    def _make_stages(block, in_chans, widths, depths, strides, norm, act, groups, skip, preact):
        stages = []
        for i, (width, depth) in enumerate(zip(widths, depths)):
            if block == "vgg":
                stages.append(VGGStage(in_chans, width, depth, norm, act, groups))
            else:
                cls = BasicBlock if block == "basic" else Bottleneck
                stages.append(nn.Sequential(*[
                    cls(in_chans if j == 0 else width, width, strides[i] if j == 0 else 1,
                        norm, act, groups, skip, preact) for j in range(depth)]))
            in_chans = width
        return stages

    def forward_features(self, x):
        """``(N, in_chans, H, W) -> (N, num_features, h, w)``: everything before the pooling."""
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x, pre_logits: bool = False):
        """``(N, num_features, h, w) -> (N, num_classes)`` (``(N, num_features)`` if pre_logits)."""
        x = self.head_drop(self.global_pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the linear head by a fresh one for ``num_classes`` (0: identity, no head)."""
        if global_pool not in (None, "avg"):
            raise VistrainError(f"scratch models only support average pooling, not {global_pool!r}")
        self.num_classes = self.default_cfg["num_classes"] = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self.fc, self.init_scheme, self.act_name)

    def layer_groups(self) -> list[list[nn.Module]]:
        """``[[stem], [stage 1], ..., [stage k (+ final norm)], [pool, dropout, fc]]``."""
        groups = [[self.stem]] + [[stage] for stage in self.stages]
        if not isinstance(self.norm, nn.Identity):
            groups[-1].append(self.norm)
        return groups + [[self.global_pool, self.head_drop, self.fc]]


# Registry: name -> ScratchNet arguments.  Widths are kept small: these nets are trained from
# scratch on small images (28-64 px), often on a CPU.
SCRATCH_MODELS: dict[str, dict] = {
    "vistrain/vgg-tiny": dict(block="vgg", widths=(16, 32, 64), depths=(1, 1, 2)),
    "vistrain/vgg-small": dict(block="vgg", widths=(32, 64, 128, 256), depths=(2, 2, 2, 2)),
    "vistrain/resnet-tiny": dict(block="basic", widths=(16, 32, 64), depths=(1, 1, 1)),
    # ResNet-18 layout (4 stages x 2 basic blocks) at half width, 3x3 stem, no stem pooling.
    "vistrain/resnet-small": dict(block="basic", widths=(32, 64, 128, 256), depths=(2, 2, 2, 2)),
    "vistrain/resnet-tiny-bottleneck": dict(block="bottleneck", widths=(64, 128, 256),
                                            depths=(1, 1, 1), stem_width=32),
    # He et al. 2015 CIFAR ResNet-20: 3x3 stem + 3 stages x 3 basic blocks (16/32/64 channels):
    # 1 + 18 convs + 1 fc = 20 layers.  Projection (1x1 conv) shortcuts where the shape changes.
    "vistrain/resnet20": dict(block="basic", widths=(16, 32, 64), depths=(3, 3, 3)),
    "vistrain/plain20": dict(block="basic", widths=(16, 32, 64), depths=(3, 3, 3), skip=False),
}


def create_scratch(name: str, num_classes: int, in_chans: int = 3, norm: str = "batch",
                   act: str = "relu", init: str = "kaiming", drop_rate: float = 0.0,
                   input_size: int = 32, **overrides) -> nn.Module:
    """Build the registered from-scratch model ``name`` (see ``SCRATCH_MODELS``).

    ``overrides`` replace any :class:`ScratchNet` argument of the registry entry (e.g.
    ``skip=False``, ``preact=True``, ``groups=4``, ``widths=(8, 16, 32)``).

    Example:
        >>> import torch
        >>> model = create_scratch("vistrain/resnet-tiny", 5, in_chans=1, norm="group", act="silu")
        >>> model(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 5])
    """
    if name not in SCRATCH_MODELS:
        raise VistrainError(f"unknown scratch model {name!r}; valid: {', '.join(SCRATCH_MODELS)}")
    args = dict(SCRATCH_MODELS[name], num_classes=num_classes, in_chans=in_chans, norm=norm,
                act=act, init=init, drop_rate=drop_rate, input_size=input_size)
    args.update(overrides)
    model = ScratchNet(**args)
    model.default_cfg["architecture"] = name
    return model
