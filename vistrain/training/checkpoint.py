"""Checkpoints for exact resume: written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors and plain Python containers (model/optimizer/scheduler state
dicts, the epoch, the history, the best score and weights, the torch RNG state), so it loads with
``torch.load(weights_only=True)`` and never unpickles code.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


def save_checkpoint(path: str | Path, state: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a kill during the write leaves the previous checkpoint intact


def load_checkpoint(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
