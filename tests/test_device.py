"""Runtime: the CPU bf16 autocast switch (train.cpu_amp) and what it changes."""
import pytest
import torch

from vistrain.device import Runtime, cpu_bf16_wanted, cpu_has_native_bf16
from vistrain.errors import VistrainError


def test_cpu_amp_off_is_plain_float32():
    rt = Runtime.create("cpu", cpu_amp="off")
    assert rt.amp_dtype is None and not rt.channels_last
    with rt.autocast():
        y = torch.nn.Linear(4, 3)(torch.randn(2, 4))
    assert y.dtype == torch.float32
    assert rt.describe() == "cpu (float32, contiguous)"


def test_cpu_amp_bf16_lowers_matmuls_and_goes_channels_last():
    rt = Runtime.create("cpu", cpu_amp="bf16")
    assert rt.amp_dtype == torch.bfloat16 and rt.channels_last
    lin = torch.nn.Linear(4, 3)
    with rt.autocast():
        y = lin(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    assert lin.weight.dtype == torch.float32  # weights stay float32
    x = rt.to_device(torch.randn(2, 3, 5, 5))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert "bfloat16, channels_last" in rt.describe()


def test_cpu_amp_auto_follows_the_hardware():
    assert cpu_bf16_wanted("auto") == cpu_has_native_bf16()
    rt = Runtime.create("cpu", cpu_amp="auto")
    assert (rt.amp_dtype == torch.bfloat16) == cpu_has_native_bf16()


def test_cpu_amp_rejects_unknown_values():
    with pytest.raises(VistrainError, match="train.cpu_amp must be one of off, auto, bf16"):
        Runtime.create("cpu", cpu_amp="fp8")


def test_bf16_forward_close_to_float32():
    """bf16 autocast keeps a small conv net's logits within bf16 rounding of float32 ones."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    x = torch.randn(4, 3, 16, 16)
    ref = net(x)
    rt = Runtime.create("cpu", cpu_amp="bf16")
    with torch.no_grad(), rt.autocast():
        out = rt.prepare_model(net)(rt.to_device(x)).float()
    torch.testing.assert_close(out, ref, atol=3e-2, rtol=3e-2)


def test_cli_flag_sets_the_config_and_default_is_off():
    from vistrain.cli.common import config_from_args
    from vistrain.cli.main import build_parser
    args = build_parser().parse_args(["train", "DATA", "--cpu-amp", "bf16"])
    assert config_from_args(args, "DATA").train.cpu_amp == "bf16"
    args = build_parser().parse_args(["train", "DATA"])
    assert config_from_args(args, "DATA").train.cpu_amp == "off"  # exact float32 by default


def test_cpu_amp_leaves_the_cuda_settings_alone_on_cpu_off():
    rt = Runtime.create("cpu", amp=True, channels_last=True, cpu_amp="off")
    assert rt.precision == "float32" and not rt.channels_last  # CUDA-only switches ignored on CPU
    assert Runtime.create("cpu", cpu_amp="bf16").precision == "bfloat16"
