"""Normalization layers, activations and initialisation (vistrain.models.norms / layers).

Numerics are checked against NumPy on inputs whose mean and scale differ per sample and per
channel, so a layer averaging over the wrong axes gives visibly wrong statistics.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from vistrain.errors import VistrainError
from vistrain.models.layers import ACTS, act_gain, init_weights, make_act
from vistrain.models.norms import NORM_AXES, NORMS, default_groups, make_conv, make_norm

N, C, H, W, G = 6, 8, 5, 7, 4
AXIS = {"N": 0, "C": 1, "H": 2, "W": 3}


def skewed_batch(seed: int = 0) -> torch.Tensor:
    """(N, C, H, W) float32 with a different mean (-5..5) and std (0.5..4) per (sample, channel)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, C, H, W)) * rng.uniform(0.5, 4, (N, C, 1, 1)) \
        + rng.uniform(-5, 5, (N, C, 1, 1))
    return torch.tensor(x, dtype=torch.float32)


def numpy_normalize(x: np.ndarray, name: str, eps: float = 1e-5) -> np.ndarray:
    """Reference: (x - mean) / sqrt(var + eps) over the axes that NORM_AXES documents."""
    axes = NORM_AXES[name]
    if "C/G" in axes:   # split channels into groups, average within a group over (C/G, H, W)
        g = x.reshape(N, G, C // G, H, W)
        dims = (2, 3, 4)
        out = (g - g.mean(dims, keepdims=True)) / np.sqrt(g.var(dims, keepdims=True) + eps)
        return out.reshape(N, C, H, W)
    dims = tuple(AXIS[a] for a in axes)
    return (x - x.mean(dims, keepdims=True)) / np.sqrt(x.var(dims, keepdims=True) + eps)


def test_axes_table_is_the_documented_one():
    assert NORM_AXES == {"batch": ("N", "H", "W"), "layer": ("C", "H", "W"), "instance": ("H", "W"),
                         "group": ("C/G", "H", "W"), "weight": (), "none": ()}
    assert set(NORM_AXES) == set(NORMS)


@pytest.mark.parametrize("name", ["batch", "layer", "instance", "group"])
def test_norm_matches_numpy_over_its_axes(name):
    x = skewed_batch()
    norm = make_norm(name, C, groups=G).train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():   # a non-trivial per-channel affine part, undone below
        norm.weight.copy_(torch.rand(C, generator=gen) * 1.5 + 0.5)
        norm.bias.copy_(torch.randn(C, generator=gen))
        y = norm(x)
    z = ((y - norm.bias.view(1, C, 1, 1)) / norm.weight.view(1, C, 1, 1)).detach().numpy()
    np.testing.assert_allclose(z, numpy_normalize(x.numpy().astype(np.float64), name), atol=2e-4)

    # Before the affine part: mean 0, variance 1 over the layer's own axes ...
    if name == "group":
        zg = z.reshape(N, G, C // G, H, W)
        means, variances = zg.mean((2, 3, 4)), zg.var((2, 3, 4))
    else:
        dims = tuple(AXIS[a] for a in NORM_AXES[name])
        means, variances = z.mean(dims), z.var(dims)
    np.testing.assert_allclose(means, 0, atol=1e-4)
    np.testing.assert_allclose(variances, 1, atol=2e-3)
    # ... but not per (sample, channel) unless that is its axis set: the input really discriminates.
    per_instance = np.abs(z.mean((2, 3))).max()
    assert per_instance < 1e-4 if name == "instance" else per_instance > 0.3


def test_batch_norm_uses_running_stats_in_eval():
    x = skewed_batch()
    norm = make_norm("batch", C)
    norm.momentum = 1.0            # running stats := this batch's (unbiased variance)
    norm.train()(x)
    y = norm.eval()(x).detach().numpy()
    xn = x.numpy().astype(np.float64)
    dims = (0, 2, 3)
    ref = (xn - xn.mean(dims, keepdims=True)) / np.sqrt(xn.var(dims, ddof=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, ref, atol=2e-4)


def test_weight_norm_reparametrises_the_conv():
    conv = make_conv(4, 6, 3, norm="weight")
    assert parametrize.is_parametrized(conv, "weight")
    assert isinstance(make_norm("weight", 6), nn.Identity)
    assert conv.bias is not None                    # no norm shift follows, so the conv keeps one
    g = conv.parametrizations.weight.original0      # (6, 1, 1, 1): one magnitude per filter
    assert g.shape == (6, 1, 1, 1)
    with torch.no_grad():
        g.mul_(torch.arange(1.0, 7.0).view(6, 1, 1, 1))
    filter_norms = conv.weight.flatten(1).norm(dim=1)
    torch.testing.assert_close(filter_norms, g.flatten())


def test_conv_bias_only_without_shifting_norm():
    assert make_conv(3, 8, norm="none").bias is not None
    for name in ("batch", "layer", "instance", "group"):
        assert make_conv(3, 8, norm=name).bias is None
    assert make_conv(3, 8, 3, stride=2)(torch.zeros(1, 3, 7, 7)).shape == (1, 8, 4, 4)


def test_group_counts_and_errors():
    assert default_groups(32) == 8 and default_groups(12) == 6 and default_groups(16, 4) == 4
    assert make_norm("group", 24).num_groups == 8
    with pytest.raises(VistrainError, match="do not divide"):
        make_norm("group", 12, groups=5)
    with pytest.raises(VistrainError, match="valid: batch, layer"):
        make_norm("batchnorm", 8)
    with pytest.raises(VistrainError, match="unknown activation"):
        make_act("swish")
    with pytest.raises(VistrainError, match="unknown init"):
        init_weights(nn.Conv2d(2, 2, 1), "orthogonal")


@pytest.mark.parametrize("name,ref", [
    ("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("relu", F.relu),
    ("leaky_relu", lambda t: F.leaky_relu(t, 0.01)), ("gelu", F.gelu), ("silu", F.silu)])
def test_activations(name, ref):
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(make_act(name)(x), ref(x))
    assert set(ACTS) >= {name}


def test_gains_follow_calculate_gain():
    assert act_gain("relu") == pytest.approx(math.sqrt(2))
    assert act_gain("tanh") == pytest.approx(5 / 3)
    assert act_gain("sigmoid") == 1
    assert act_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert act_gain("gelu") == act_gain("silu") == act_gain("relu")


FAN_IN, FAN_OUT = 32 * 9, 64 * 9       # Conv2d(32, 64, 3)


@pytest.mark.parametrize("scheme,act,mode,expected_std", [
    ("kaiming", "relu", "fan_in", math.sqrt(2 / FAN_IN)),
    ("kaiming", "relu", "fan_out", math.sqrt(2 / FAN_OUT)),
    ("kaiming", "tanh", "fan_in", (5 / 3) / math.sqrt(FAN_IN)),
    ("kaiming", "sigmoid", "fan_in", 1 / math.sqrt(FAN_IN)),
    ("xavier", "relu", "fan_in", math.sqrt(2) * math.sqrt(2 / (FAN_IN + FAN_OUT))),
    ("default", "relu", "fan_in", 1 / math.sqrt(3 * FAN_IN)),
])
@pytest.mark.parametrize("norm", ["none", "weight"])
def test_init_weight_std(scheme, act, mode, expected_std, norm):
    torch.manual_seed(0)
    model = nn.Sequential(make_conv(32, 64, 3, norm=norm), make_norm("batch", 64), nn.Flatten(),
                          nn.Linear(64, 1000))
    with torch.no_grad():
        model[1].weight.fill_(3.0)
    init_weights(model, scheme, act, mode)
    conv, linear = model[0], model[3]
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert model[1].weight.eq(1).all()
    if scheme != "default":
        assert conv.bias is None or conv.bias.eq(0).all()
        # the linear classifier feeds the softmax: gain 1 whatever the activation
        lin_fan = 64 if mode == "fan_in" else 1000
        lin_std = 1 / math.sqrt(lin_fan) if scheme == "kaiming" else math.sqrt(2 / 1064)
        assert linear.weight.std().item() == pytest.approx(lin_std, rel=0.05)


def second_moment_ratio(init, depth: int = 20, seed: int = 0, width: int = 128) -> float:
    """E[out^2] / E[in^2] through ``depth`` x (3x3 conv width->width, no bias) + ReLU.

    Circular padding: zero padding would starve the border pixels of a third of their inputs at
    every layer, a boundary effect that compounds with depth and that He init does not model.
    """
    torch.manual_seed(seed)
    layers = []
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1, padding_mode="circular", bias=False),
                   nn.ReLU()]
    net = nn.Sequential(*layers)
    init(net)
    x = torch.randn(4, width, 8, 8)
    with torch.no_grad():
        return (net(x).pow(2).mean() / x.pow(2).mean()).item()


def test_kaiming_keeps_activation_scale_through_depth():
    # He init keeps the second moment *in expectation over the weights*; one finite-width network
    # drifts around it with a log-normal spread whose log-variance grows like depth / width
    # (Hanin & Rolnick 2018; measured here: std of the log ratio ~0.6 at width 128, depth 20),
    # so the check averages 5 independent networks.
    ratios = [second_moment_ratio(lambda net: init_weights(net, "kaiming", "relu"), seed=seed)
              for seed in range(5)]
    assert 1 / 3 < np.mean(ratios) < 3


def test_badly_scaled_init_collapses_activations():
    def small_normal(net):
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
    # each layer multiplies the second moment by fan_in * std^2 / 2 = 1152e-4 / 2: 20 layers -> ~0
    assert second_moment_ratio(small_normal) < 1e-20
    # PyTorch's default (std 1/sqrt(3 fan_in)) loses a factor ~6 per ReLU layer without a norm
    assert second_moment_ratio(lambda net: init_weights(net, "default")) < 1e-10
