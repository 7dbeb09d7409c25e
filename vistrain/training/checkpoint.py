"""Checkpoints for exact resume: checksummed, written atomically, read with ``weights_only=True``.

A checkpoint holds only tensors and plain Python containers (model/optimizer/scheduler state
dicts, the epoch, the history, the best score and weights, the torch RNG state), so it loads with
``torch.load(weights_only=True)`` and never unpickles code.

File format: the bytes of ``torch.save(state)`` followed by a fixed-length trailer
``\\n#vistrain-sha256:<64 hex digits>\\n`` holding the sha256 of those bytes, so a truncated,
overwritten or bit-flipped file is detected before it is unpickled.  Files without the trailer
(written by older versions) still load, unchecked.

A checkpoint carries its run's id (``run_id``: the run folder's marker holds it, see
:func:`run_identity`), so a checkpoint copied in from another run is refused on resume;
checkpoints of older versions, without an id, still load with a warning.

Each save first keeps the current ``last.pt`` as ``prev.pt`` (a hard link, else a copy), then
replaces ``last.pt`` atomically; :func:`load_resume_checkpoint` falls back to ``prev.pt`` (one epoch
earlier) with a warning when ``last.pt`` is damaged.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import uuid
from pathlib import Path

import torch

from vistrain import fsutil
from vistrain.config.spelling import option
from vistrain.errors import RunDirError
from vistrain.fsutil import atomic_write_bytes

log = logging.getLogger("vistrain")

TRAILER_TAG = b"\n#vistrain-sha256:"
TRAILER_LEN = len(TRAILER_TAG) + 64 + 1
PREVIOUS = "prev.pt"


class CheckpointError(RunDirError):
    """A checkpoint file is damaged (truncated, overwritten) or not a checkpoint at all."""


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` (checksummed, atomic, fsynced), keeping the old file as prev.pt."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_id = run_identity(path.parent.parent)   # RUN/checkpoints/last.pt
    if run_id is not None:
        state = dict(state, run_id=run_id)
    buf = io.BytesIO()
    torch.save(state, buf)
    body = buf.getvalue()
    digest = hashlib.sha256(body).hexdigest().encode("ascii")
    if path.is_file():
        _keep_previous(path)
    # a kill during the write leaves last.pt (and prev.pt) intact: the new bytes land under a
    # temporary name and replace last.pt in one rename
    atomic_write_bytes(path, body + TRAILER_TAG + digest + b"\n", fsync=True)


def _keep_previous(path: Path) -> None:
    prev, tmp = path.with_name(PREVIOUS), path.with_name(f".{PREVIOUS}.{os.getpid()}.tmp")
    if prev.exists() and os.path.samefile(prev, path):
        return  # a run killed right after this step: prev.pt already is last.pt
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(path, tmp)  # no copy: last.pt is about to be replaced, not modified in place
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, prev)


def load_checkpoint(path: str | Path) -> dict | None:
    """The state saved at ``path``; None when there is no such file.

    Raises :class:`CheckpointError` (one line naming the file) when it is damaged.
    """
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    body, trailer = data[:-TRAILER_LEN], data[-TRAILER_LEN:]
    if len(data) >= TRAILER_LEN and trailer.startswith(TRAILER_TAG) and trailer.endswith(b"\n"):
        want = trailer[len(TRAILER_TAG):-1].decode("ascii", "replace")
        if hashlib.sha256(body).hexdigest() != want:
            raise CheckpointError(f"{path}: damaged checkpoint (sha256 mismatch: the file was "
                                  "changed or partly overwritten)")
    else:
        body = data  # an older checkpoint without checksum, or a truncated one: torch decides
    try:
        state = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as err:  # zip/pickle errors of a truncated or foreign file
        reason = " ".join(str(err).split())[:120]
        raise CheckpointError(f"{path}: damaged or not a vistrain checkpoint ({type(err).__name__}: "
                              f"{reason})") from None
    if not isinstance(state, dict) or not {"model", "epoch"} <= set(state):
        raise CheckpointError(f"{path}: not a vistrain checkpoint (no model state and epoch in it)")
    return state


def run_identity(run_dir: str | Path) -> str | None:
    """The id of the run in ``run_dir``: ``run_id`` of its marker (set by :func:`assign_run_id`;
    the marker's own ``id`` where there is one), or None for a folder without either."""
    marker = fsutil.read_marker(run_dir) or {}
    found = marker.get("run_id") or marker.get("id")
    return str(found) if found else None


def assign_run_id(run_dir: str | Path) -> str:
    """Give the run in ``run_dir`` an id once (kept by later calls): the marker's ``id`` when it
    has one, else a new random one; returns it.  Every checkpoint saved there carries it."""
    marker = fsutil.read_marker(run_dir) or {}
    if marker.get("run_id"):
        return str(marker["run_id"])
    run_id = str(marker.get("id") or uuid.uuid4().hex)
    fsutil.update_marker(run_dir, run_id=run_id)
    return run_id


def check_run_id(state: dict, path: Path) -> dict:
    """``state`` when it was saved by the run that owns ``path``'s folder; a checkpoint of
    another run is a one-line :class:`CheckpointError`, one without an id (older) a warning."""
    run_dir = path.parent.parent
    want, got = run_identity(run_dir), state.get("run_id")
    if got is None or want is None:
        log.warning("%s records no run id (an older checkpoint or run); cannot check that it "
                    "belongs to %s", path, run_dir)
    elif got != want:
        raise CheckpointError(f"{path}: a checkpoint of another run (run id {got}, this run is "
                              f"{want}); resume the run it came from, or start again with --overwrite")
    return state


def load_resume_checkpoint(folder: str | Path) -> dict | None:
    """The newest usable checkpoint in ``folder`` (``last.pt``, else ``prev.pt``) of the run that
    owns ``folder`` (see :func:`check_run_id`); None if none.

    A damaged ``last.pt`` with a usable ``prev.pt`` gives a warning and ``prev.pt``'s state (one
    epoch earlier); with no usable previous one, a one-line :class:`CheckpointError`.
    """
    state = _newest_checkpoint(Path(folder))
    return None if state is None else check_run_id(state, Path(folder) / "last.pt")


def _newest_checkpoint(folder: Path) -> dict | None:
    folder = Path(folder)
    last, prev = folder / "last.pt", folder / PREVIOUS
    try:
        state = load_checkpoint(last)
    except CheckpointError as err:
        try:
            state = load_checkpoint(prev)
        except CheckpointError:
            state = None
        if state is None:
            raise CheckpointError(f"{err}; no usable previous checkpoint ({prev.name}) either: "
                                  f"start the run again with {option('overwrite')}") from None
        log.warning("%s; resuming from the previous checkpoint %s (epoch %d)", err, prev,
                    state["epoch"] + 1)
        return state
    if state is None and prev.is_file():  # killed between keeping prev.pt and writing last.pt
        return load_checkpoint(prev)
    return state


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether ``run_dir/checkpoints`` holds a checkpoint to resume from (``last.pt`` or ``prev.pt``)."""
    folder = Path(run_dir) / "checkpoints"
    return (folder / "last.pt").is_file() or (folder / PREVIOUS).is_file()


def cpu_state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
