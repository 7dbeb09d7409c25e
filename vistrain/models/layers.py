"""Activations, the conv-norm-activation unit and weight initialisation for from-scratch networks.

Example:
    >>> import torch
    >>> from vistrain.models.layers import ConvNormAct, init_weights
    >>> layer = init_weights(ConvNormAct(3, 8, norm="batch", act="gelu"), "kaiming", "gelu")
    >>> layer(torch.randn(2, 3, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from vistrain.errors import VistrainError
from vistrain.models.norms import make_conv, make_norm

ACTS = ("sigmoid", "tanh", "relu", "leaky_relu", "gelu", "silu")
INITS = ("kaiming", "xavier", "default")
LEAKY_SLOPE = 0.01

# calculate_gain knows no GELU/SiLU: both are ~identity for x >> 0 and ~0 for x << 0, i.e.
# ReLU-like, so they take ReLU's gain sqrt(2) (what timm and torchvision do in practice).
_GAIN_NAME = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "leaky_relu": "leaky_relu",
              "gelu": "relu", "silu": "relu", "linear": "linear"}


def make_act(name: str) -> nn.Module:
    """Build the activation ``name`` (element-wise, any shape).

    Example:
        >>> make_act("leaky_relu")
        LeakyReLU(negative_slope=0.01)
    """
    if name not in ACTS:
        raise VistrainError(f"unknown activation {name!r}; valid: {', '.join(ACTS)}")
    builders = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU,
                "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE), "gelu": nn.GELU, "silu": nn.SiLU}
    return builders[name]()


def act_gain(act: str) -> float:
    """The init gain for ``act`` (``torch.nn.init.calculate_gain``; GELU/SiLU use ReLU's).

    Example:
        >>> round(act_gain("relu"), 4), round(act_gain("tanh"), 4), act_gain("sigmoid")
        (1.4142, 1.6667, 1)
    """
    if act not in _GAIN_NAME:
        raise VistrainError(f"unknown activation {act!r}; valid: {', '.join(ACTS)}")
    return nn.init.calculate_gain(_GAIN_NAME[act], LEAKY_SLOPE if act == "leaky_relu" else None)


class ConvNormAct(nn.Sequential):
    """conv(k x k, stride) -> norm -> activation; ``act=None`` leaves the activation out.

    Shapes: ``(N, in_chans, H, W)`` -> ``(N, out_chans, ceil(H/stride), ceil(W/stride))``.
    Children are named ``conv``, ``norm``, ``act`` (``norm``/``act`` are ``nn.Identity`` when off).
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 3, stride: int = 1,
                 norm: str = "batch", act: str | None = "relu", groups: int | None = None):
        super().__init__()
        self.conv = make_conv(in_chans, out_chans, kernel_size, stride, norm)
        self.norm = make_norm(norm, out_chans, groups)
        self.act = make_act(act) if act else nn.Identity()


def _set_weight(module: nn.Module, fill) -> None:
    """Fill ``module.weight`` in place with ``fill(tensor)``, also through a weight-norm.

    A parametrized weight is computed on the fly, so writing into it would be lost: the new value
    is assigned instead, which weight_norm's ``right_inverse`` turns back into ``g`` and ``v``.
    """
    with torch.no_grad():
        if parametrize.is_parametrized(module, "weight"):
            value = torch.empty_like(module.weight)
            fill(value)
            module.weight = value
        else:
            fill(module.weight)


def init_weights(model: nn.Module, scheme: str = "kaiming", act: str = "relu",
                 mode: str = "fan_in") -> nn.Module:
    """Initialise every conv and linear layer of ``model`` in place; returns ``model``.

    - ``kaiming``: normal with std ``gain / sqrt(fan)`` (He et al. 2015), ``fan`` = fan_in (keeps
      the forward activation variance, the default) or fan_out (keeps the backward gradient
      variance), ``gain = act_gain(act)``, so the activation variance stays constant through depth.
    - ``xavier``: normal with std ``gain * sqrt(2 / (fan_in + fan_out))`` (Glorot & Bengio 2010).
    - ``default``: PyTorch's own ``reset_parameters`` (Kaiming-uniform with ``a=sqrt(5)``, i.e.
      std ``1 / sqrt(3 fan_in)``: about 2.4x smaller than He init for ReLU).

    Conv layers feed ``act`` and get its gain; linear layers (the classifier, which feeds the
    softmax) get gain 1.  Biases start at 0, normalization layers at gamma=1, beta=0.

    Example:
        >>> conv = init_weights(nn.Conv2d(16, 16, 3), "kaiming", "relu")
        >>> 0.10 < conv.weight.std().item() < 0.13   # sqrt(2 / fan_in) = sqrt(2 / 144) = 0.118
        True
    """
    if scheme not in INITS:
        raise VistrainError(f"unknown init {scheme!r}; valid: {', '.join(INITS)}")
    if mode not in ("fan_in", "fan_out"):
        raise VistrainError(f"unknown init mode {mode!r}; valid: fan_in, fan_out")
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            _init_layer(module, scheme, "linear" if isinstance(module, nn.Linear) else act, mode)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)):
            if scheme == "default":
                module.reset_parameters()
            elif module.weight is not None:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
    return model


def _init_layer(module: nn.Module, scheme: str, act: str, mode: str) -> None:
    if scheme == "default":
        # reset_parameters on a weight-normed conv would only reset v's backing store; go through
        # _set_weight with PyTorch's own default rule instead.
        _set_weight(module, lambda w: nn.init.kaiming_uniform_(w, a=5 ** 0.5))
        if module.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
            bound = 1 / fan_in ** 0.5 if fan_in > 0 else 0
            nn.init.uniform_(module.bias, -bound, bound)
        return
    gain = act_gain(act)
    if scheme == "kaiming":
        _set_weight(module, lambda w: nn.init.kaiming_normal_(
            w, a=LEAKY_SLOPE if act == "leaky_relu" else 0, mode=mode,
            nonlinearity=_GAIN_NAME[act]))
    else:
        _set_weight(module, lambda w: nn.init.xavier_normal_(w, gain=gain))
    if module.bias is not None:
        nn.init.zeros_(module.bias)
