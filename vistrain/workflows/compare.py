"""``compare``: the same network trained once per setting (``vistrain compare``).

Example:
    >>> import vistrain
    >>> s = vistrain.compare("data", {"norm": ["batch", "group"]}, out="runs/norms")  # doctest: +SKIP
    >>> [r["name"] for r in s["runs"]]                                              # doctest: +SKIP
    ['norm-batch', 'norm-group']
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vistrain.data.scan import scan_folder
from vistrain.evaluation.compare import apply_setting, parse_vary, run_compare, settings_product
from vistrain.workflows.common import default_out_dir, make_config, show_log_lines

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
    # refuse a bad setting or data folder before run_compare creates (or replaces) the folder
    for setting in settings_product(parsed):
        apply_setting(cfg, setting).check()
    scan_folder(cfg.data.root)
    summary = run_compare(cfg, out, parsed, overwrite=overwrite, progress=progress)
    return {**summary, "out_dir": str(out)}
