"""``compare``: the same network trained once per setting (``vistrain compare``).

Example:
    >>> import vistrain
    >>> s = vistrain.compare("data", {"norm": ["batch", "group"]}, out="runs/norms")  # doctest: +SKIP
    >>> [r["name"] for r in s["runs"]]                                              # doctest: +SKIP
    ['norm-batch', 'norm-group']
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from vistrain import fsutil
from vistrain.data.scan import scan_folder
from vistrain.evaluation.compare import (apply_setting, collect_run, parse_vary, setting_name,
                                         settings_product)
from vistrain.report.compare_report import render_compare_report
from vistrain.rundir import RunFolder, write_run_file
from vistrain.training.run import check_output_ready
from vistrain.workflows.common import default_out_dir, make_config
from vistrain.workflows.logs import show_log_lines
from vistrain.workflows.train import train_run

log = logging.getLogger("vistrain")

DEFAULT_MODEL = "vistrain/resnet-tiny"


def compare(data: str | Path | None = None, /, vary: dict[str, list] | list[str] | None = None, *,
            out: str | Path | None = None, overwrite: bool = False, config=None,
            progress: bool = True, **settings: Any) -> dict:
    """One run per setting of the cartesian product of ``vary``, same split and seed, into
    ``out/<setting>/``; writes ``out/compare.json`` and ``out/compare.html``.

    ``vary`` is ``{"norm": ["batch", "group"], "optim.lr": [0.1, 0.01]}`` or the command line's
    ``["norm=batch,group", "optim.lr=0.1,0.01"]``; keys are norm, act, init, model or
    SECTION.KEY.  Without ``model`` (and ``config``) the network is ``vistrain/resnet-tiny``
    trained from scratch.  Returns compare.json's content plus ``out_dir``.

    Example:
        >>> import vistrain
        >>> s = vistrain.compare("data", ["act=relu,gelu"], epochs=5)  # doctest: +SKIP
        >>> s["same_split"], len(s["runs"])                           # doctest: +SKIP
        (True, 2)
    """
    show_log_lines()
    if isinstance(vary, dict):
        vary = [f"{key}={','.join(str(v) for v in values)}" for key, values in vary.items()]
    parsed = parse_vary(list(vary or []))  # a bad key fails before anything is trained
    if config is None and settings.get("model") is None:
        settings = {**settings, "model": DEFAULT_MODEL}
    cfg = make_config(data, config, settings)  # vistrain/<name>: from scratch, every layer trains
    out = Path(out) if out else default_out_dir(cfg.data.root, "-compare")
    summary = run_compare(cfg, out, parsed, overwrite=overwrite, progress=progress)
    return {**summary, "out_dir": str(out)}


def _split_signature(run_dir: Path) -> dict:
    parts = RunFolder(run_dir, "train").splits.parts
    return {name: sorted(p.files) for name, p in parts.items()}


def run_compare(cfg, out_dir, vary: dict[str, list[str]], *, overwrite: bool = False,
                progress: bool = True) -> dict:
    """Train one run per setting into ``out_dir/<setting>/``; write compare.json/compare.html."""
    out = Path(out_dir)
    settings = settings_product(vary)
    cfgs = [apply_setting(cfg, s) for s in settings]  # fail on a bad key before any training
    check_output_ready(out, overwrite=overwrite, resume=False, data_folder=cfg.data.root, kind="compare")
    index = scan_folder(cfg.data.root)  # scanned once: every run sees the same files
    # only a vistrain compare folder is replaced, moved aside until the first run is trained
    fsutil.prepare_output_dir(out, kind="compare", overwrite=overwrite, data_folder=cfg.data.root)
    runs = []
    for k, (setting, run_cfg) in enumerate(zip(settings, cfgs), 1):
        name = setting_name(setting)
        log.info("compare %d/%d: %s", k, len(settings), name)
        try:
            result = train_run(run_cfg, out / name, overwrite=True, progress=progress, index=index)
        except BaseException:
            if not runs:
                fsutil.restore_replaced(out)
            raise
        fsutil.discard_replaced(out)
        runs.append(collect_run(result.run_dir, name, setting))
    signatures = [_split_signature(out / r["name"]) for r in runs]
    same_split = all(sig == signatures[0] for sig in signatures[1:])
    if not same_split:  # would make the comparison meaningless: say so loudly
        log.warning("the runs did not get the same split; compare their splits.json")
    summary = {"data_root": str(cfg.data.root), "model": cfg.model.name, "vary": vary,
               "seed": cfg.train.seed, "split_seed": cfg.data.split_seed,
               "epochs": cfg.train.epochs, "same_split": same_split, "runs": runs}
    write_run_file(out / "compare.json", summary)
    fsutil.atomic_write_text(out / "compare.html", render_compare_report(summary))
    return summary
