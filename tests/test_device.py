"""Runtime: the CPU bf16 autocast switch (train.cpu_amp) and what it changes; host memory reuse."""
import json
import platform
import subprocess
import sys

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
    assert rt.describe().startswith("cpu (float32, contiguous")


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


FAULTS = """
import json, resource, sys, torch
if sys.argv[1] == "keep":
    from vistrain.device import keep_freed_host_memory
    assert keep_freed_host_memory()
def batch():
    torch.empty(64, 3, 224, 224).fill_(1.0)   # 38.5 MB: above glibc's largest mmap threshold
for _ in range(12):   # warm-up: the first few are faulted in either way (see keep_freed_host_memory)
    batch()
rss, before = (getattr(resource.getrusage(resource.RUSAGE_SELF), k) for k in ("ru_maxrss", "ru_minflt"))
for _ in range(20):
    batch()
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps([after.ru_minflt - before, (after.ru_maxrss - rss) / 1024]))
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                         check=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout)


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc-specific allocator settings")
def test_freed_host_memory_is_reused_without_page_faults():
    pages = 64 * 3 * 224 * 224 * 4 // 4096   # 9,408 pages a batch
    (default, _), (kept, grown_mb) = _faults("system"), _faults("keep")
    assert default > 15 * pages       # glibc maps and unmaps each block: faulted again every time
    assert kept < pages // 10         # the freed block is handed out again, already in memory
    assert grown_mb < 40              # and the heap does not grow batch after batch


def test_host_memory_setting_can_be_declined(monkeypatch):
    import vistrain.device as device
    monkeypatch.setattr(device, "_HOST_MEMORY_KEPT", False)
    monkeypatch.setenv("VISTRAIN_HOST_MALLOC", "system")
    assert device.keep_freed_host_memory() is False
    assert "freed host memory" not in Runtime.create("cpu").describe()


ALLOCATOR = """
import json, sys
import vistrain.device as device
from vistrain.config import TrainConfig
from vistrain.device import Runtime
Runtime.create("cpu")
created = device._HOST_MEMORY_KEPT
if sys.argv[1] == "reuse":
    import vistrain.training.run as run
    cfg = TrainConfig.from_dict({"train": {"host_memory": "reuse"}, "data": {"root": sys.argv[2]}})
    try:
        run.run_training(cfg, sys.argv[3])
    except Exception:
        pass  # the run itself fails on the empty folder; the allocator was set before that
print(json.dumps([created, device._HOST_MEMORY_KEPT]))
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc-specific allocator settings")
def test_the_allocator_changes_only_when_a_run_asks_for_it(tmp_path):
    """Creating a runtime (a notebook, a library caller) leaves the process's allocator alone;
    ``train.host_memory=reuse`` turns the glibc settings on for that training process."""
    def probe(mode):
        (tmp_path / "empty").mkdir(exist_ok=True)
        out = subprocess.run([sys.executable, "-c", ALLOCATOR, mode, str(tmp_path / "empty"),
                              str(tmp_path / f"run-{mode}")], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    assert probe("system") == [False, False]
    assert probe("reuse") == [False, True]


def test_cpu_threads_are_measured_and_restored(monkeypatch):
    from vistrain.device import choose_cpu_threads, cpu_threads_kept
    monkeypatch.delenv("VISTRAIN_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = torch.get_num_threads()
    with cpu_threads_kept():
        rec = choose_cpu_threads(Runtime.create("cpu"))
        if n > 1:
            assert rec["threads"] in (1, n) and set(rec["tried"]) == {"1", str(n)} and rec["reason"]
            assert torch.get_num_threads() == rec["threads"]
    assert torch.get_num_threads() == n
    monkeypatch.setenv("VISTRAIN_THREADS", "1")
    with cpu_threads_kept():
        assert choose_cpu_threads(Runtime.create("cpu"))["threads"] == 1 == torch.get_num_threads()
    monkeypatch.setenv("VISTRAIN_THREADS", "many")
    with pytest.raises(VistrainError, match="VISTRAIN_THREADS"):
        choose_cpu_threads(Runtime.create("cpu"))
