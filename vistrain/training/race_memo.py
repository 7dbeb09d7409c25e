"""A finished recipe race, kept in the cache: the same command on the same data, on the same machine,
takes its outcome instead of racing again.

Why: a race spends most of ``--budget`` by design (it trains every candidate), and its outcome is a
few settings (the recipe, its learning rate and epochs).  Running a command again -- ``make demo``
twice, a notebook cell re-run, an evaluation repeated after an edit elsewhere -- would race again and
may, on a noisy machine, pick another recipe for the same data.  The memo makes a rerun fast and the
choice stable.  Its key holds everything the outcome depends on: the files (path, size, mtime and
sampled bytes, as every cache key), the split, the whole requested config (budget, seed, model,
every setting but those of ``NOT_IN_KEY``, which act after the race), the candidates, the machine (host, CPUs, device) and vistrain's version.  Anything
else differs: a new race.  ``data.cache=off`` always races; ``vistrain cache --clear`` forgets.

The memo holds what the race adds to strategy auto's reasoning (``race``, ``chosen``, ``settings``,
``decision`` and its plain line); a reused one says so in that line, run.json and the report.

Example:
    >>> from vistrain.training.race_memo import memo_spec
    >>> sorted(memo_spec({"seed": 0}, {"candidates": [{"recipe": "scratch", "size": 28}]}, None, "cpu"))
    ['candidates', 'config', 'host', 'parts', 'version', 'what']
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
from pathlib import Path

import torch.distributed as dist

from vistrain import __version__, fsutil
from vistrain.config import TrainConfig
from vistrain.data.cache.budget import default_cache_dir, mark_used, record_entry
from vistrain.data.cache.fingerprint import cache_key
from vistrain.data.scan import ImageIndex
from vistrain.data.stream import shards_digest
from vistrain.device import Runtime
from vistrain.training.auto import apply_choice
from vistrain.training.race import RaceOutcome, race_recipe

log = logging.getLogger("vistrain")

MEMO_VERSION = 1
# settings that act after the race or beside training, never on what the race measures: a run
# that only adds a tracker, keeps its checkpoints or skips calibration takes the same outcome
NOT_IN_KEY = ("logging", "train.keep_checkpoints", "train.checks", "train.calibration", "data.doctor")
KEYS = ("race", "chosen", "settings", "decision")  # what the race adds to strategy auto's reasoning


def memo_spec(config: dict, auto: dict, parts, device: str) -> dict:
    """The key's content besides the files: the requested config, the candidates (which recipe,
    model, size and channels: what the data decides, not the measured timings, which differ from
    run to run), the split when it is given, the machine and the version."""
    candidates = [[c.get("recipe"), c.get("model"), c.get("size"), c.get("grey")]
                  for c in auto.get("candidates", [])]
    given = None if parts is None or callable(parts) else {k: [int(i) for i in v] for k, v in parts.items()}
    return {"what": "race", "version": [MEMO_VERSION, __version__], "config": config,
            "candidates": candidates, "parts": given,
            "host": [platform.node(), os.cpu_count(), device]}


def memo_path(requested: TrainConfig, index: ImageIndex, parts, auto: dict, rt: Runtime) -> Path | None:
    """Where the race of this command on this data is kept; None with ``data.cache=off`` or a
    split chosen by a function (its key cannot be written down)."""
    if requested.data.cache == "off" or callable(parts):
        return None
    config = dataclasses.asdict(requested)
    config["data"].pop("root", None)  # the files are in the key; a moved folder is new data anyway
    for key in NOT_IN_KEY:
        section, _, name = key.partition(".")
        config.pop(section) if not name else config[section].pop(name)
    spec = memo_spec(config, auto, parts, str(rt.device))
    if index.shards is not None:
        key = cache_key([], {**spec, "shards": shards_digest(index.shards)})
    else:
        key = cache_key(index.paths, spec)
    return default_cache_dir() / "race" / f"race-{key}.json"


def kept_outcome(requested: TrainConfig, index: ImageIndex, parts, auto: dict,
                 rt: Runtime) -> tuple[Path | None, dict | None]:
    """``(where the race is kept, the kept outcome or None)``, as rank 0 reads them, on every
    process of a distributed run."""
    box = [(None, None)]
    if rt.is_main:
        path = memo_path(requested, index, parts, auto, rt)
        box = [(path, read_memo(path))]
    if rt.distributed:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def read_memo(path: Path | None) -> dict | None:
    """The kept outcome at ``path``, or None (absent, damaged or from another format)."""
    if path is None or not path.is_file():
        return None
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(memo, dict) or not all(k in memo for k in (*KEYS, "plain")):
        return None
    mark_used(path)
    return memo


def write_memo(path: Path | None, auto: dict) -> None:
    """Keep the race's outcome (``auto`` after the race) at ``path``; a read-only or full cache
    only costs the next run its race."""
    if path is None or "race" not in auto:
        return
    memo = {k: auto[k] for k in KEYS} | {"plain": auto["plain"][-1]}
    winner = next((c for c in auto.get("entrants", []) if c["name"] == auto["race"].get("winner")), None)
    if winner is not None and winner["recipe"] == "feature-extraction":
        # the head's schedule as the race ran it (the run's config says the epochs it trained, up
        # to its early stop): from its start with the same seed it stops at the same best epoch
        memo["settings"] = {**memo["settings"], "train.epochs": winner["epochs"]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        record_entry(path)
        fsutil.atomic_write_json(path, memo)
    except OSError as err:
        log.warning("race: outcome not kept in the cache (%s); a rerun races again", err)


def reuse_memo(requested: TrainConfig, auto: dict, memo: dict, path: Path) -> TrainConfig:
    """The kept race's winner as a config (``requested`` with its settings), and ``auto`` (updated
    in place) as the race left it, its last plain line saying that it was reused."""
    record = dict(memo["race"], reused=str(path))
    auto.update({k: memo[k] for k in KEYS}, race=record)
    line = (f"race (kept from an earlier run of the same command on the same data and machine: "
            f"{path.name}; --set data.cache=off races again): " + memo["plain"].removeprefix("race: "))
    auto["plain"] = [*auto["plain"], line]
    log.info("auto: %s", line)
    return apply_choice(requested, auto["settings"])


def race_or_kept(requested: TrainConfig, index: ImageIndex, rt: Runtime, parts, auto: dict, folder: Path,
                 *, started: float, progress: bool) -> tuple[TrainConfig, RaceOutcome | None]:
    """The recipe race of ``auto``'s entrants in ``folder`` (:func:`~vistrain.training.race.race_recipe`),
    its outcome kept; or, where the same command on the same data and machine raced before, that
    outcome taken (:func:`reuse_memo`; None for the outcome: nothing was trained).  Returns the
    winner's config and the outcome."""
    kept_at, kept = kept_outcome(requested, index, parts, auto, rt)
    if kept is not None:
        return reuse_memo(requested, auto, kept, kept_at), None
    cfg, outcome = race_recipe(requested, index, rt, parts, auto, folder, started=started, progress=progress)
    if rt.is_main:
        write_memo(kept_at, auto)
    return cfg, outcome
