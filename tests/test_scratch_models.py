"""From-scratch networks (vistrain.models.scratch): contract, parameter counts, skip connections."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from vistrain.errors import VistrainError
from vistrain.models.layers import ACTS, ConvNormAct
from vistrain.models.norms import NORMS
from vistrain.models.scratch import (SCRATCH_MODELS, BasicBlock, Bottleneck, ScratchNet, VGGStage,
                                     create_scratch)
from vistrain.training.layers import layer_groups
from vistrain.report.norm_axes import plot_norm_axes, shaded_box


def conv_weights(module: nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Conv2d))


def assert_groups_cover_once(model: nn.Module) -> list[tuple[str, list[tuple[str, nn.Parameter]]]]:
    """The layer groups training uses (gradual unfreezing, discriminative rates), each parameter in one."""
    groups = layer_groups(model)
    ids = [id(p) for _, params in groups for _, p in params]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    return groups


# -- VGG: three 3x3 convs vs one 7x7 --------------------------------------------------------------

@pytest.mark.parametrize("channels", [8, 16, 64])
def test_three_3x3_convs_cost_27c2_vs_49c2(channels):
    stack = VGGStage(channels, channels, depth=3, norm="batch")   # batch norm: convs have no bias
    assert conv_weights(stack) == 3 * 9 * channels ** 2 == 27 * channels ** 2
    assert conv_weights(nn.Conv2d(channels, channels, 7, bias=False)) == 49 * channels ** 2


def test_three_3x3_convs_see_a_7x7_window():
    """The gradient of one output pixel w.r.t. the input is non-zero exactly on a 7x7 window."""
    torch.manual_seed(0)
    stack = nn.Sequential(*[ConvNormAct(2, 2, 3, norm="none", act=None) for _ in range(3)])
    x = torch.randn(1, 2, 15, 15, requires_grad=True)
    stack(x)[0, :, 7, 7].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum(1)[0], as_tuple=True)
    window = (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item())
    assert window == (4, 10, 4, 10)


# -- residual blocks ------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("preact", [False, True])
def test_blocks_shapes_and_shortcuts(block, preact):
    x = torch.randn(2, 16, 9, 9)
    same = block(16, 16, 1, preact=preact)
    assert isinstance(same.shortcut, nn.Identity) and same(x).shape == (2, 16, 9, 9)
    down = block(16, 32, 2, preact=preact)
    assert down(x).shape == (2, 32, 5, 5)
    convs = [m for m in down.shortcut.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (1, 1) and convs[0].stride == (2, 2)
    assert any(isinstance(m, nn.BatchNorm2d) for m in down.shortcut.modules()) != preact
    plain = block(16, 32, 2, skip=False, preact=preact)
    assert plain.shortcut is None and plain(x).shape == (2, 32, 5, 5)


def test_residual_block_adds_its_input():
    block = BasicBlock(4, 4, act="relu").eval()
    with torch.no_grad():       # zero the residual branch's last BN: block(x) = relu(0 + x)
        block.body[1].norm.weight.zero_()
        block.body[1].norm.bias.zero_()
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(block(x), F.relu(x))


def test_resnet20_and_plain20_differ_only_by_the_shortcuts():
    res, plain = create_scratch("vistrain/resnet20", 10), create_scratch("vistrain/plain20", 10)
    n_convs = sum(isinstance(m, nn.Conv2d) for m in plain.modules())
    assert n_convs == 19                              # 1 stem + 9 blocks x 2, + fc = 20 layers
    projections = [m for m in res.modules() if isinstance(m, BasicBlock)
                   and not isinstance(m.shortcut, nn.Identity)]
    assert len(projections) == 2                      # at the two 16->32 and 32->64 transitions
    extra = sum(p.numel() for b in projections for p in b.shortcut.parameters())
    n_res, n_plain = (sum(p.numel() for p in m.parameters()) for m in (res, plain))
    assert n_res - n_plain == extra


def toy_data(n: int, seed: int):
    """1x6x6 noise images; label = whether the image mean is positive (linearly separable)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=gen) + 0.3 * torch.randn(n, 1, 1, 1, generator=gen)
    return x, (x.mean((1, 2, 3)) > 0).long()


def train_deep_sigmoid_net(skip: bool, steps: int = 100):
    """20 pre-activation blocks (40 sigmoid convs, no normalization), plain SGD + momentum.

    Returns (mean loss of the last 10 steps, held-out accuracy, stem gradient norm at step 0).
    """
    torch.manual_seed(0)
    model = ScratchNet("basic", widths=(8,), depths=(20,), strides=(1,), num_classes=2, in_chans=1,
                       norm="none", act="sigmoid", skip=skip, preact=True, input_size=6)
    x_train, y_train = toy_data(512, seed=1)
    x_test, y_test = toy_data(512, seed=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    losses, stem_grad = [], None
    for _ in range(steps):
        idx = torch.randint(0, len(x_train), (32,), generator=gen)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        if stem_grad is None:
            stem_grad = next(model.stem.parameters()).grad.norm().item()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        acc = (model.eval()(x_test).argmax(1) == y_test).float().mean().item()
    return sum(losses[-10:]) / 10, acc, stem_grad


def test_skip_connections_train_where_the_plain_sigmoid_net_stalls():
    # Measured over model seeds 0-9 (same data): residual acc 0.80-0.95, last-10 loss 0.12-0.51;
    # plain acc 0.45-0.56 (a constant class), loss >= 0.693, stem gradient exactly 0 (underflow:
    # each sigmoid layer scales the gradient by <= 1/4, 40 layers deep).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # tiny ops: one thread is fastest and immune to CPU contention
    try:
        res_loss, res_acc, res_grad = train_deep_sigmoid_net(skip=True)
        plain_loss, plain_acc, plain_grad = train_deep_sigmoid_net(skip=False)
    finally:
        torch.set_num_threads(threads)
    assert res_grad > 1e-3 and plain_grad < 1e-12
    assert res_acc > 0.75 and res_loss < 0.55
    assert plain_acc < 0.6 and plain_loss > 0.68


# -- the registered models ------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCRATCH_MODELS))
def test_registered_model_contract(name):
    torch.manual_seed(0)
    model = create_scratch(name, num_classes=5, drop_rate=0.3, input_size=16).eval()
    x = torch.randn(2, 3, 16, 16)
    feats = model.forward_features(x)
    assert feats.ndim == 4 and feats.shape[:2] == (2, model.num_features)
    logits = model.forward_head(feats)
    torch.testing.assert_close(logits, model(x))
    assert logits.shape == (2, 5)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    assert model.get_classifier() is model.fc
    cfg = model.default_cfg
    assert cfg["input_size"] == (3, 16, 16) and cfg["num_classes"] == 5 and cfg["crop_pct"] == 1.0
    assert cfg["interpolation"] == "bilinear" and len(cfg["mean"]) == len(cfg["std"]) == 3
    assert model.pretrained_cfg is cfg and cfg["architecture"] == name

    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and cfg["num_classes"] == 7
    groups = assert_groups_cover_once(model)
    assert all(n.startswith("stem.") for n, _ in groups[0][1])
    assert {id(p) for p in model.fc.parameters()} <= {id(p) for _, p in groups[-1][1]}
    assert len(groups) == 2 + len(model.stages)
    model.reset_classifier(0)
    assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", ["vistrain/vgg-tiny", "vistrain/resnet-tiny",
                                  "vistrain/resnet-tiny-bottleneck"])
def test_every_norm_builds_and_trains_a_step(name, norm):
    torch.manual_seed(0)
    model = create_scratch(name, num_classes=3, in_chans=1, norm=norm, input_size=28)
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    weight_normed = [parametrize.is_parametrized(m, "weight") for m in convs]
    assert all(weight_normed) if norm == "weight" else not any(weight_normed)
    assert_groups_cover_once(model)


@pytest.mark.parametrize("act", ACTS)
def test_every_activation(act):
    model = create_scratch("vistrain/resnet-tiny", 4, act=act, preact=True)
    acts = {type(m).__name__.lower() for m in model.modules()}
    assert {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "leaky_relu": "leakyrelu",
            "gelu": "gelu", "silu": "silu"}[act] in acts
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
    assert_groups_cover_once(model)           # preact adds a final norm to the last stage group


@pytest.mark.parametrize("init", ["kaiming", "xavier", "default"])
def test_init_schemes_give_different_weights(init):
    torch.manual_seed(0)
    a = create_scratch("vistrain/resnet-tiny", 2, init=init)
    stds = a.stem[0].conv.weight.std().item()
    expected = {"kaiming": (2 / 27) ** 0.5, "xavier": 2 ** 0.5 * (2 / (27 + 144)) ** 0.5,
                "default": (1 / 81) ** 0.5}[init]            # stem conv: 3 -> 16, 3x3
    assert stds == pytest.approx(expected, rel=0.15)


def test_grayscale_input_and_errors():
    model = create_scratch("vistrain/vgg-small", 10, in_chans=1, input_size=28)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.default_cfg["input_size"] == (1, 28, 28) and model.default_cfg["mean"] == (0.5,)
    with pytest.raises(VistrainError, match="at least 16 px"):
        create_scratch("vistrain/vgg-small", 10, input_size=8)
    with pytest.raises(VistrainError, match="valid: vistrain/vgg-tiny"):
        create_scratch("vistrain/resnet50", 10)
    with pytest.raises(VistrainError, match="unknown normalization"):
        create_scratch("vistrain/resnet-tiny", 10, norm="batchnorm")


def test_dropout_only_in_training():
    model = create_scratch("vistrain/resnet-tiny", 3, drop_rate=0.5)
    x = torch.randn(4, 3, 16, 16)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    feats = model.forward_features(x).detach()
    pre = model.forward_head(feats, pre_logits=True)
    assert (pre == 0).float().mean() > 0.2          # about half the features dropped


def test_layer_groups_of_timm_models_and_plain_modules():
    import timm                           # timm's tiny test_* models, built in milliseconds
    model = timm.create_model("test_resnet", num_classes=3)
    groups = assert_groups_cover_once(model)
    assert len(groups) == 6 and [n for _, ps in groups[-1:] for n, _ in ps][-1] == "fc.bias"  # stem, 4 stages, head
    assert_groups_cover_once(timm.create_model("test_efficientnet", num_classes=3))
    vit = timm.create_model("test_vit", num_classes=3)
    groups = assert_groups_cover_once(vit)   # cls_token / pos_embed live on the root
    assert any(p is vit.cls_token for _, p in groups[0][1])
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten())
    with pytest.raises(VistrainError, match="neither group_matcher nor layer_groups"):
        layer_groups(plain)


# -- the figure -----------------------------------------------------------------------------------

def test_norm_axes_figure(tmp_path):
    assert shaded_box("layer") == {"N": (0, 1), "C": (0, 6), "S": (0, 5)}
    assert shaded_box("instance") == {"N": (0, 1), "C": (1, 2), "S": (0, 5)}
    path = plot_norm_axes(tmp_path / "fig" / "norm_axes.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
