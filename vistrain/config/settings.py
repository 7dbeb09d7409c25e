"""The one table of settings behind both entry points: command-line flags and API keywords.

Each :class:`Setting` names an API keyword (``batch_size``), its flag (``--batch-size``) and the
config key it sets (``data.batch_size``); its type, choices and default come from the config's
own field (:mod:`vistrain.config`), so the table cannot drift from what
:meth:`TrainConfig.validate` accepts.  ``vistrain.cli.common`` builds the flags of ``train``,
``cv``, ``compare``, ``check`` and ``lr-find`` from :data:`SETTINGS`; the Python API
(``vistrain.workflows.common.make_config``) applies its keywords with :func:`apply_settings`,
so both resolve identical configs.  Anything else goes through ``--set SECTION.KEY=VALUE`` on
the command line and whole sections as dicts in Python (``optim={"name": "sgd"}``).

Example:
    >>> from vistrain.config import TrainConfig
    >>> from vistrain.config.settings import apply_settings, setting
    >>> setting("cpu_amp").option, setting("cpu_amp").choices
    ('--cpu-amp', ('off', 'auto', 'bf16'))
    >>> apply_settings(TrainConfig(), {"model": "vistrain/resnet20"}).check().strategy.name
    'finetune'
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from vistrain.config import RANGES, SECTIONS, TrainConfig, choices, parse_value, type_hint, update_section
from vistrain.errors import VistrainError


@dataclass(frozen=True)
class Setting:
    """One entry of :data:`SETTINGS`: the API keyword ``name`` and the flag :attr:`option` set the
    config key ``key``.  Type, choices and default come from the config's own field, so the table
    cannot drift from what :meth:`TrainConfig.validate` accepts.

    ``help`` may name ``{default}`` (this field's default) or ``{cfg}`` (a default config).
    ``const`` makes a switch: the flag takes no value and sets ``const`` (``--no-pretrained``);
    the keyword takes any value of the field (``pretrained=False``).

    Example:
        >>> s = setting("batch_size")
        >>> s.option, s.key, s.type.__name__, s.default, s.choices
        ('--batch-size', 'data.batch_size', 'int', 32, ())
        >>> setting("strategy").choices
        ('feature-extraction', 'finetune', 'gradual', 'auto')
    """
    name: str
    key: str
    help: str
    flag: str = ""           # default: --<name, with - for _>
    const: Any = None
    parse: str = ""          # "minutes": a number, or "none" for None (no limit)

    @property
    def option(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values (of each item, for a list setting such as ``track``)."""
        item = self._item() if self.repeat else None
        return choices(self.key) or (typing.get_args(item) if typing.get_origin(item) is Literal else ())

    @property
    def repeat(self) -> bool:
        """A list setting: the flag is repeatable (``--track mlflow --track tensorboard``)."""
        return typing.get_origin(self._base()) is list

    def _base(self):
        hint = type_hint(self.key)
        if type(None) in typing.get_args(hint):  # X | None
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        return hint

    def _item(self):
        return typing.get_args(self._base())[0]

    @property
    def type(self):
        """The command line's parser of a value: the field's type without ``None``, str for a
        choice (or a list's item), :func:`minutes_arg` for ``parse="minutes"``."""
        if self.parse == "minutes":
            return minutes_arg
        hint = self._item() if self.repeat else self._base()
        return str if typing.get_origin(hint) is Literal else hint

    @property
    def default(self):
        section, _, name = self.key.partition(".")
        return getattr(getattr(TrainConfig(), section), name)

    def describe(self) -> str:
        """The help text with the defaults filled in, and the setting's range rule in words
        (``RANGES``: the rule validation applies)."""
        text = self.help.format(default=self.default, cfg=TrainConfig())
        rule = RANGES.get(self.key)
        return text + (f" [allowed: {rule.text}]" if rule is not None else "")

    def apply(self, cfg: "TrainConfig", value) -> None:
        section, _, name = self.key.partition(".")
        if self.repeat and isinstance(value, str):  # track="mlflow" for track=["mlflow"]
            value = [value]
        if self.parse == "minutes":
            value = minutes_or_none(value)
        setattr(getattr(cfg, section), name, NO_LIMIT_VALUE if value is NO_LIMIT else value)


class _NoLimit:
    """``--budget none`` (``budget="none"``): no limit, distinct from None ("not given")."""

    def __repr__(self) -> str:
        return "'none'"


NO_LIMIT, NO_LIMIT_VALUE = _NoLimit(), None


def minutes_or_none(value):
    """``"none"`` -> :data:`NO_LIMIT`; a number (or its text) -> float minutes.

    Example:
        >>> minutes_or_none("2.5"), minutes_or_none("none"), minutes_or_none(15)
        (2.5, 'none', 15.0)
    """
    if value is NO_LIMIT or (isinstance(value, str) and value.strip().lower() in ("none", "null", "off")):
        return NO_LIMIT
    try:
        return float(value)
    except (TypeError, ValueError):
        raise VistrainError(f"budget={value!r}: give minutes (a number > 0) or none") from None


def minutes_arg(text: str):
    """:func:`minutes_or_none` for argparse: a bad value is argparse's one-line usage error."""
    try:
        return minutes_or_none(text)
    except VistrainError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# Order: as ``--help`` lists them.  A new entry is a new flag and a new keyword at once.
SETTINGS: tuple[Setting, ...] = (
    Setting("model", "model.name", "timm model name or vistrain/<name> (default {default})"),
    Setting("epochs", "train.epochs", "number of epochs (default {default})"),
    Setting("strategy", "strategy.name",
            "default: auto (measure, then pick feature extraction, gradual unfreezing, fine-tuning or "
            "a from-scratch network, and the input size, within --budget); finetune for vistrain/<name> models"),
    Setting("budget", "train.budget", "wall-clock minutes the run must fit: the epochs are cut to "
            "the estimate and training stops at the budget, for every strategy; none for no limit "
            "(default {default})", parse="minutes"),
    Setting("lr", "optim.lr", "base learning rate (default: chosen by strategy)"),
    Setting("batch_size", "data.batch_size", "images per batch (default {default})"),
    Setting("seed", "train.seed", "seed of initialisation and shuffling (default {default}; the "
            "split has its own, data.split_seed, default {cfg.data.split_seed})"),
    Setting("augment", "augment.preset", "augmentation preset (default {default})"),
    Setting("mixup", "augment.mixup", "mixup Beta(alpha, alpha) (default {default})"),
    Setting("cutmix", "augment.cutmix", "cutmix Beta(alpha, alpha) (default {default})"),
    Setting("jitter", "augment.jitter", "colour jitter: one colour matrix per image (default, fast) "
            "or the exact sequential steps with HSV hue (as torchvision)"),
    Setting("pretrained", "model.pretrained", "random initialisation", flag="--no-pretrained",
            const=False),
    Setting("weights", "model.weights", "pretrained weights file (.safetensors or state dict)"),
    Setting("normalize", "preprocess.normalize", "normalization (default {default}: the model's "
            "own statistics when pretrained, the training split's otherwise)"),
    # from-scratch vistrain/<name> models; names as in vistrain.models.{norms,layers}
    Setting("norm", "model.norm", "normalization layer of a vistrain/<name> model (default {default})"),
    Setting("act", "model.act", "activation of a vistrain/<name> model (default {default})"),
    Setting("init", "model.init", "weight initialisation of a vistrain/<name> model (default {default})"),
    Setting("on_bad_image", "data.on_bad_image",
            "unreadable files: skip and list them, or stop (default {default})"),
    Setting("max_image_pixels", "data.max_image_pixels",
            "refuse larger images as decompression bombs (default {default})"),
    Setting("cache", "data.cache", "decoded pixels: auto (cached on disk; past the cache budget or the "
            "free disk, in memory or streamed), require (on disk or stop), stream (decoded per batch, "
            "no cache), off (in memory) (default {default})"),
    Setting("groups", "data.groups", "CSV file (columns file,group): images of one group (patient, "
            "object, session) stay in one part of every split"),
    Setting("group_regex", "data.group_regex", "the group of each image from its path relative to the data "
            "folder: the pattern's first capture group, e.g. '(patient\\d+)_'"),
    Setting("calibration", "train.calibration", "temperature: fit softmax(logits / T) on the validation "
            "split (ECE and NLL before/after in metrics.json and the report); none: the raw softmax "
            "(default {default})"),
    Setting("device", "train.device", "where to train (default {default})"),
    Setting("cpu_amp", "train.cpu_amp", "bfloat16 autocast + channels_last on the CPU (default "
            "{default}; auto = only where the CPU does bf16 natively, e.g. AMX: ~2-5x faster)"),
    Setting("host_memory", "train.host_memory", "reuse: let glibc keep freed memory for the next "
            "batch (~9 % faster CPU epochs, ~20 % more peak memory; default {default})"),
    Setting("keep_checkpoints", "train.keep_checkpoints", "keep checkpoints/last.pt and prev.pt "
            "once the run has finished (deleted by default)", const=True),
    Setting("track", "logging.track", "send the run to an experiment tracker (repeatable): "
            "tensorboard (event files in RUN_DIR/tensorboard) or mlflow (params, per-epoch and "
            "test metrics, report and model; to $MLFLOW_TRACKING_URI, default ./mlruns)"),
)


def setting(name: str) -> Setting:
    """The :data:`SETTINGS` entry of keyword ``name``."""
    return next(s for s in SETTINGS if s.name == name)


def entry_of(key: str) -> Setting | None:
    """The :data:`SETTINGS` entry that a keyword (``lr``) or a config key (``optim.lr``) names;
    None for a config key without one (``optim.name``)."""
    return next((s for s in SETTINGS if key in (s.name, s.key)), None)


def set_value(cfg: TrainConfig, key: str, value) -> TrainConfig:
    """Set one value on ``cfg`` (in place; returns it): the one way every entry point sets a
    setting: the API's keywords (:func:`apply_settings`), ``--set`` and compare's ``--vary``.
    ``key``: a keyword of :data:`SETTINGS` or a config key ``SECTION.FIELD``; where the table
    has an entry for it, the entry's rules apply (``budget``'s ``none``, a list setting given one
    item), so ``--set train.budget=none`` means what ``--budget none`` means.  Not validated: call :meth:`~vistrain.config.TrainConfig.check`.

    Example:
        >>> cfg = set_value(TrainConfig(), "train.budget", "none")
        >>> cfg.train.budget is None, set_value(cfg, "lr", 0.01).optim.lr
        (True, 0.01)
    """
    entry = entry_of(key)
    if entry is not None:
        entry.apply(cfg, value)
        return cfg
    section, dot, name = key.partition(".")
    if not dot or section not in SECTIONS:
        raise VistrainError(f"unknown setting {key!r}: give a setting's name (e.g. lr, batch_size) or "
                            f"SECTION.KEY with a section of {', '.join(SECTIONS)}")
    update_section(getattr(cfg, section), {name: value}, section)
    return cfg


def set_text(cfg: TrainConfig, key: str, raw: str) -> TrainConfig:
    """:func:`set_value` of a value given as text (``--set KEY=RAW``, ``--vary KEY=A,B``), typed
    as the key's field reads it (:func:`~vistrain.config.parse_value`: YAML, except that a text
    setting keeps the text)."""
    entry = entry_of(key)
    return set_value(cfg, key, parse_value(entry.key if entry else key, raw))


def apply_settings(cfg: TrainConfig, settings: dict[str, Any]) -> TrainConfig:
    """Set keyword ``settings`` on ``cfg`` (in place; returns it): the :data:`SETTINGS` first,
    then whole sections given as dicts (``optim={"name": "sgd"}``; ``model`` and ``augment`` are
    both a keyword and a section: a dict means the section), as the command line applies its
    flags before ``--set``.  ``None`` means "not given".  Not validated: call :meth:`check`.

    Example:
        >>> cfg = apply_settings(TrainConfig(), {"epochs": 3, "optim": {"name": "sgd"}})
        >>> cfg.train.epochs, cfg.optim.name
        (3, 'sgd')
    """
    table = {s.name: s for s in SETTINGS}
    for key in settings:
        if key not in table and key not in SECTIONS:
            raise VistrainError(f"unknown setting {key!r}; valid: {', '.join(table)}, or a whole "
                                f"section as a dict ({', '.join(SECTIONS)}), e.g. optim={{'name': 'sgd'}}")
    as_section = {k: v for k, v in settings.items() if isinstance(v, dict) or k not in table}
    for key, value in settings.items():
        if value is not None and key not in as_section:
            set_value(cfg, key, value)
    for key, value in as_section.items():
        if value is None:
            continue
        if not isinstance(value, dict):
            raise VistrainError(f"{key}={value!r}: a whole section is a dict of its settings, "
                                f"e.g. {key}={{'{dataclasses.fields(getattr(cfg, key))[0].name}': ...}}")
        update_section(getattr(cfg, key), value, key)
    return cfg
