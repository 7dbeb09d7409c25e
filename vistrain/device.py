"""One device abstraction: CUDA when present (AMP, channels_last), CPU otherwise; DDP-aware.

On the CPU, ``cpu_amp`` chooses bfloat16 autocast: ``"auto"`` turns it on only where the CPU
computes bf16 natively (AVX512-BF16 / AMX, as oneDNN reports it), ``"bf16"`` always, ``"off"``
never.  With it, tensors and models also go channels_last: that pair is what oneDNN's bf16
convolutions are fast on (EfficientNet-Lite0 forward at 224 px on 2 vCPUs of a Sapphire Rapids
machine: 99.8 ms/img float32, 20.5 ms/img bf16 + channels_last; resnet20 training step 2.3x).
Weights, optimizer state and losses stay float32 (autocast only lowers matmuls/convolutions).

Training code asks this module for the device, the autocast context and the process's place in a
``torchrun`` job, and never branches on CUDA/DDP itself.  Under ``torchrun`` each process drives one
GPU (or, with the gloo backend, one CPU process), sees ``world_size`` and ``rank``, and only rank 0
writes files.

Example:
    >>> from vistrain.device import Runtime
    >>> rt = Runtime.create("cpu")
    >>> rt.device.type, rt.is_main
    ('cpu', True)
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vistrain.errors import VistrainError


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None = None   # bf16/fp16 autocast on CUDA; bf16 or None on CPU
    channels_last: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def create(cls, device: str = "auto", *, amp: bool = True, channels_last: bool = True,
               cpu_amp: str = "off") -> "Runtime":
        """Pick the device; join the process group when started by ``torchrun``.

        ``amp``/``channels_last`` apply on CUDA; ``cpu_amp`` (off | auto | bf16) on the CPU.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda:")
        if use_cuda:
            dev = torch.device(device if device.startswith("cuda:") else f"cuda:{local}")
            torch.cuda.set_device(dev)
        else:
            dev = torch.device("cpu")
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        amp_dtype = None
        if use_cuda and amp:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        cpu_bf16 = not use_cuda and cpu_bf16_wanted(cpu_amp)
        if cpu_bf16:
            amp_dtype = torch.bfloat16
        return cls(dev, amp_dtype, channels_last and use_cuda or cpu_bf16, rank, world, local)

    @classmethod
    def for_train(cls, train) -> "Runtime":
        """:meth:`create` from a config's ``train`` section (device, amp, channels_last, cpu_amp)."""
        return cls.create(train.device, amp=train.amp, channels_last=train.channels_last,
                          cpu_amp=train.cpu_amp)

    @property
    def precision(self) -> str:
        """``"float32"``, ``"bfloat16"`` or ``"float16"``: the dtype autocast computes in."""
        return str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32"

    def describe(self) -> str:
        """One line for logs: device, autocast dtype, memory format, place in the job, and
        whether freed host memory is kept for reuse (:func:`keep_freed_host_memory`)."""
        fmt = "channels_last" if self.channels_last else "contiguous"
        if self.device.type == "cpu":
            fmt += f", {torch.get_num_threads()} thread{'s' if torch.get_num_threads() != 1 else ''}"
        job = f", rank {self.rank}/{self.world_size}" if self.distributed else ""
        heap = ", freed host memory reused" if _HOST_MEMORY_KEPT else ""
        return f"{self.device} ({self.precision}, {fmt}{job}{heap})"

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self):
        """A GradScaler only for fp16 (bf16 has fp32's range and needs none)."""
        enabled = self.amp_dtype == torch.float16
        return torch.amp.GradScaler(self.device.type, enabled=enabled)

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def wrap_ddp(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP wrapper when distributed; frozen parameters are fine (only trainable ones sync)."""
        if not self.distributed or not any(p.requires_grad for p in model.parameters()):
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [self.device.index] if self.device.type == "cuda" else None
        # find_unused_parameters: gradual unfreezing leaves some trainable params unused early on.
        return DDP(model, device_ids=ids, find_unused_parameters=True)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


CPU_AMP_CHOICES = ("off", "auto", "bf16")


def cpu_bf16_wanted(cpu_amp: str) -> bool:
    """Resolve the ``cpu_amp`` setting: ``auto`` means bf16 only where the CPU does it natively."""
    if cpu_amp not in CPU_AMP_CHOICES:
        raise VistrainError(f"train.cpu_amp must be one of {', '.join(CPU_AMP_CHOICES)}, "
                          f"not {cpu_amp!r}")
    if cpu_amp == "auto":
        return cpu_has_native_bf16()
    return cpu_amp == "bf16"


def cpu_has_native_bf16() -> bool:
    """True where oneDNN runs bf16 in hardware (AVX512-BF16 or AMX); else bf16 would be emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# -- host memory ---------------------------------------------------------------------------------
_HOST_MEMORY_KEPT = False
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4   # glibc <malloc.h>


def keep_freed_host_memory(trim_threshold_mb: int = 128) -> bool:
    """Let glibc keep freed large blocks for reuse instead of returning them to the kernel.

    glibc serves every allocation above 32 MB (a float32 64 x 3 x 224 x 224 batch is 38.5 MB)
    with a fresh ``mmap`` and unmaps it on free, so each new batch or activation of that size
    is page-faulted and zeroed again by the kernel: 13,400 faults and about half of a 23.5 ms
    CIFAR augmentation batch on 2 vCPUs (``benchmarks/pipeline.py``), 11.1 ms with this.
    With mmap off (``M_MMAP_MAX=0``) and up to ``trim_threshold_mb`` of free heap kept
    (``M_TRIM_THRESHOLD``; both are needed: changing one parameter turns off glibc's adaptive
    threshold, which would then return the heap's top every time) a freed block is simply
    handed out again.  Tensors are still fresh allocations; only
    where their memory comes from changes.  This is what the jemalloc/tcmalloc advice for CPU
    PyTorch achieves, without preloading a library.  Process-wide and idempotent; forked
    workers inherit it.  Because it changes the allocator of the whole host process (a notebook
    too), vistrain never calls it on its own: training does only when asked
    (``--host-memory reuse``, config ``train.host_memory``); ``VISTRAIN_HOST_MALLOC=system``
    declines it even then.

    Cost: memory that was freed stays with the process (up to ``trim_threshold_mb`` at the top
    of the heap).  torch allocates 64-byte aligned; glibc 2.36 puts the small piece that
    alignment cuts off into its thread cache, where it keeps the next free from coalescing,
    until that cache is full: the first few blocks of a size are taken fresh (measured:
    +35-40 MB of RSS over 600 augmentation batches, flat after that).  With a model training,
    tensors of many sizes share the heap and its holes do not always fit: a tf_efficientnet_lite0
    fine-tune at 224 px, batch 32, ran its epochs ~9 % faster at +0.85 GB (+21 %) peak RSS
    (docs/benchmarks.md, input pipeline).

    Returns:
        True when the settings are in force (Linux with glibc), False otherwise.
    """
    global _HOST_MEMORY_KEPT
    if _HOST_MEMORY_KEPT:
        return True
    if os.environ.get("VISTRAIN_HOST_MALLOC", "").lower() == "system":
        return False
    import ctypes
    import platform
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold_mb) << 20) == 1
              and libc.mallopt(_M_MMAP_MAX, 0) == 1)
    except (OSError, AttributeError):
        return False
    _HOST_MEMORY_KEPT = ok
    return ok


# -- CPU threads ---------------------------------------------------------------------------------
THREAD_PROBE_STEPS = 3   # timed training steps per thread count (after a warm-up), fastest counts
THREAD_GAIN = 1.1        # more threads must train at least this much faster to be used


def choose_cpu_threads(rt: Runtime) -> dict | None:
    """Set torch's intra-op threads for CPU training by measurement, not by the core count.

    On a shared machine more threads can be much slower than one: each op waits for its slowest
    thread, and a busy core makes every op as slow as it is (2 threads on a 2-vCPU machine with
    other jobs trained a small CNN 2-20x slower than 1).  A few training steps of a small
    convolutional network at 1 thread and at the process's threads, interleaved, decide; more
    threads win only when ``THREAD_GAIN`` times faster.  Nothing is measured on a GPU, under
    ``torchrun`` (one process per core already) or where ``OMP_NUM_THREADS`` sets the count;
    ``VISTRAIN_THREADS=N`` sets N threads without measuring.  The caller restores the process's
    count when the run ends (:func:`cpu_threads_kept`).  Returns the record (``{"threads",
    "tried": {n: images/s}, "reason"}``), or None.

    Example:
        >>> n = torch.get_num_threads()
        >>> rec = choose_cpu_threads(Runtime.create("cpu"))
        >>> rec is None or rec["threads"] in (1, n)
        True
        >>> torch.set_num_threads(n)
    """
    n = torch.get_num_threads()
    if rt.device.type != "cpu" or rt.distributed:
        return None
    fixed = os.environ.get("VISTRAIN_THREADS", "").strip()
    if fixed:
        try:
            _set_threads(max(1, int(fixed)))
        except ValueError:
            raise VistrainError(f"VISTRAIN_THREADS={fixed!r}: give a whole number of threads >= 1, "
                                "or unset it to measure") from None
        return {"threads": torch.get_num_threads(), "tried": {}, "reason": "VISTRAIN_THREADS"}
    if n <= 1 or os.environ.get("OMP_NUM_THREADS"):
        return None
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
                              torch.nn.Conv2d(32, 64, 3, padding=1, stride=2), torch.nn.BatchNorm2d(64),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(64, 10))
    x, y = torch.randn(32, 3, 48, 48), torch.randint(0, 10, (32,))
    best = {1: float("inf"), n: float("inf")}
    with torch.random.fork_rng():
        for step in range(THREAD_PROBE_STEPS + 1):
            for threads in (1, n):
                torch.set_num_threads(threads)
                t = time.perf_counter()
                torch.nn.functional.cross_entropy(net(x), y).backward()
                if step:  # the first round warms up
                    best[threads] = min(best[threads], time.perf_counter() - t)
    chosen = n if best[1] >= THREAD_GAIN * best[n] else 1
    torch.set_num_threads(chosen)
    tried = {str(k): round(32 / v, 1) for k, v in best.items()}
    reason = (f"{n} threads train {best[1] / best[n]:.2f}x as fast as 1" if chosen == n else
              f"1 thread trains as fast as {n} or faster here ({tried['1']} vs {tried[str(n)]} images/s "
              "on a small CNN): the other cores are busy")
    return {"threads": chosen, "tried": tried, "reason": reason}


@contextlib.contextmanager
def cpu_threads_kept():
    """Restore torch's intra-op thread count on exit (a run's choice does not outlive it)."""
    n = torch.get_num_threads()
    try:
        yield
    finally:
        _set_threads(n)


def _set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` only when the count changes: in a process forked from one
    whose OpenMP pool already ran, setting the count (even to the same value) can deadlock."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
